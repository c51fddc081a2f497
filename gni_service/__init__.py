"""gni_service: what the API and the workers share.

Settings, the database models and their queries, artifact storage and the executor interface live
here; the API (``api``) and the workers (``worker``) import this package, never each other, and the
engine (``gni_engine``) imports none of them.
"""
