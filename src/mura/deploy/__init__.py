"""Deployment: the team stack (PostgreSQL, S3, MLflow tracking server) on one machine."""
