"""mlflow-team: team conventions for stock MLflow 3, loaded as MLflow plugins.

Importing this package is cheap and imports nothing from MLflow: MLflow itself imports the entry
points during ``import mlflow``. ``mlflow_team.hyperopt`` is imported (with MLflow) when first
used: ``import mlflow_team; mlflow_team.hyperopt.autolog()`` works.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "autolog", "hyperopt"]

#: Subpackages reachable as attributes, imported on first use (they import MLflow).
_LAZY_SUBMODULES = frozenset({"hyperopt"})


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # also binds it on this module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_SUBMODULES)


def autolog(disable: bool = False, exclusive: bool = False, silent: bool = False, **kwargs) -> None:
    """``mlflow.autolog()`` (every framework MLflow knows) and hyperopt autologging, together.

    Keyword arguments other than these three go to ``mlflow.autolog`` (``log_models=False``, ...).
    """
    from importlib.util import find_spec

    import mlflow

    mlflow.autolog(disable=disable, exclusive=exclusive, silent=silent, **kwargs)
    try:
        installed = find_spec("hyperopt") is not None
    except ValueError:  # in sys.modules as None: imports of it are blocked
        installed = False
    if installed:  # as mlflow.autolog skips what is not installed
        from mlflow_team import hyperopt

        hyperopt.autolog(disable=disable, exclusive=exclusive, silent=silent)
