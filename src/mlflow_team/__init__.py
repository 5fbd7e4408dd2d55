"""mlflow-team: team conventions for stock MLflow 3, loaded as MLflow plugins.

Importing this package is cheap and imports nothing from MLflow: MLflow itself imports the entry
points during ``import mlflow``.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "autolog"]


def autolog(disable: bool = False, exclusive: bool = False, silent: bool = False, **kwargs) -> None:
    """``mlflow.autolog()`` (every framework MLflow knows) and hyperopt autologging, together.

    Keyword arguments other than these three go to ``mlflow.autolog`` (``log_models=False``, ...).
    """
    import mlflow

    from mlflow_team import hyperopt

    mlflow.autolog(disable=disable, exclusive=exclusive, silent=silent, **kwargs)
    hyperopt.autolog(disable=disable, exclusive=exclusive, silent=silent)
