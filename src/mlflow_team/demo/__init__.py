"""``mlflow-team demo``: the course's NYC taxi workflow on the embedded default (or a server)."""
