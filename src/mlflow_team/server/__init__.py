"""The team server app: ``mlflow server --app-name team`` (entry point group ``mlflow.app``).

MLflow's own server app with what only a server can enforce, installed as Flask hooks by one
module each: :mod:`.requests` (bodies and values a store would take or choke on, error bodies
without SQL or paths), :mod:`.guards` (artifact deletions, search regular expressions),
:mod:`.reaper` (runs whose client stopped sending heartbeats), :mod:`.health`. Stores and
repositories stay plain plugins: a stock ``mlflow server`` on ``team+`` URLs keeps working.
"""
