"""Model artifacts: the model card (one schema), model ids, given models (path, package, MLflow registry)."""
