"""The ``gni`` command line: engine runs, the service, workers and the client commands."""
