"""api: the REST service (FastAPI), versioned under ``/v1``.

``api.app.create_app`` builds the application; run it with ``gni serve`` or
``uvicorn --factory api.app:create_app``. Routes validate, call one function of ``gni_service`` and
map domain errors to HTTP; nothing here trains or stores anything itself.
"""
