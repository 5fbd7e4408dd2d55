"""mlflow-team: team conventions for stock MLflow 3, loaded as MLflow plugins.

Importing this package is cheap and imports nothing from MLflow: MLflow itself imports the entry
points during ``import mlflow``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
