"""The ``team+<SQLAlchemy URL>`` tracking and model-registry stores.

``tracking`` and ``registry`` are MLflow's SQLAlchemy stores plus the team policy; ``db`` holds
engines, sessions, transactions and retries; ``lean`` the plain-SQL accelerators; ``links`` the
queries behind protected deletions; ``uri`` the URL handling; ``compat`` names every MLflow
internal the package relies on and probes it at start-up. Nothing is imported here: MLflow loads
the entry points while ``import mlflow`` runs.
"""
