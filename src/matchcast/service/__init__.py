"""Prediction logic that knows no FastAPI, Celery or MLflow specifics."""
