"""The Celery worker: the app, its signals, and thin tasks that call the service."""
