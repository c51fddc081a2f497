"""Celery workers that train queued batches on GPU (or CPU) nodes.

``celery -A worker.app worker --queues gpu,cpu`` (or ``gni worker``) starts one; its settings come
from the same ``GNI_*`` environment as the API's. Importing this package does not import torch:
torch is imported in each worker child after the fork (a prefork parent that has used torch makes
its forked children hang on their first torch call).
"""
