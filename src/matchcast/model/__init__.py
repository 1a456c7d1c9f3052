"""Models: fitting, scoring, the fast predictor and the MLflow registry adapter."""
