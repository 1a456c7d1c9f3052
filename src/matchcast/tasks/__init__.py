"""The task protocol: every task and queue name, the Celery app, the messages and the Redis records of a task.

The API, the worker, the CLI and dead-letter replay all speak it through this package: ``names`` (tasks, queues,
lanes), ``celery_app`` (the app factory and the broker topology), ``messages`` (every message, and the one
``enqueue``), ``keys`` (the Redis keys), ``records`` (who writes them), ``status`` (reading results back) and
``heartbeat`` (live workers). It sits below ``service/``, which knows no Celery.
"""
