"""Artifact repositories: ``team+file://`` (the embedded default) and ``team+s3://``.

Nothing heavy is imported here: MLflow loads the entry points during ``import mlflow``.
"""
