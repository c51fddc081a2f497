"""Executors: how queued runs get trained.

:class:`~gni_service.executor.base.Executor` is the interface the API talks to; the in-process
implementation trains batches on threads of the API process (the embedded mode). Whatever the
executor, a batch is claimed in the database and trained by the same Celery-free
:func:`~gni_service.executor.batch.execute_batch`.
"""
