"""Monitoring: MLflow tracking and registry, drift tests on image statistics, embeddings and labels."""
