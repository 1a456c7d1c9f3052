"""The FastAPI application: the design note's endpoints."""
