"""What a finished search shows: the trials as a table (``trials.csv``), the best trial, plots."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime

from mlflow_team.hyperopt import space, trial

#: At most this many "loss against a parameter" plots per search.
MAX_PARAM_PLOTS = 12
_STATE_NAMES = {0: "new", 1: "running", 2: "done", 3: "error", 4: "cancel"}


def algo_name(algo) -> str:
    """``tpe.suggest`` for ``hyperopt.tpe.suggest`` (and for a ``functools.partial`` of it)."""
    function = getattr(algo, "func", algo)
    module = (getattr(function, "__module__", "") or "").rsplit(".", 1)[-1]
    name = getattr(function, "__name__", type(function).__name__)
    return f"{module}.{name}" if module else name


def callable_name(function) -> str | None:
    if function is None:
        return None
    function = getattr(function, "func", function)
    return getattr(function, "__qualname__", None) or repr(function)


def seed_of(rstate) -> int | None:
    """The seed of ``np.random.default_rng(seed)`` (what ``fmin(rstate=...)`` takes)."""
    try:
        entropy = rstate.bit_generator.seed_seq.entropy
    except AttributeError:
        return None
    return entropy if isinstance(entropy, int) else None


def space_json(expr) -> str:
    return json.dumps(space.describe(expr), indent=2, sort_keys=True)


class TrialTable:
    """Every trial of a ``Trials`` object (errors included), with its point resolved."""

    def __init__(self, expr, trials, known=lambda tid: None, run_of=lambda tid: None) -> None:
        """``known(tid)``: the ``(params, numeric params)`` a trial already resolved, or None;
        ``run_of(tid)``: its run id where ``trials`` keeps no attachments."""
        self.rows: list[dict] = []
        for doc in trials._dynamic_trials:
            result = doc.get("result") or {}
            state = _STATE_NAMES.get(doc.get("state"), str(doc.get("state")))
            status = "error" if state == "error" else result.get("status") or state
            loss = result.get("loss")
            try:
                params, numeric = known(doc["tid"]) or (None, None)
                if params is None:
                    params, numeric = space.params_of(space.resolve(expr, space.assignment_of(doc)))
            except Exception:  # a point the space cannot rebuild (changed space on resume)
                params, numeric = {}, {}
            self.rows.append(
                {
                    "tid": doc["tid"],
                    "status": status,
                    "loss": float(loss) if isinstance(loss, (int, float)) else None,
                    "duration_s": _duration(doc),
                    "run_id": _run_id(trials, doc) or run_of(doc["tid"]),
                    "params": params,
                    "numeric": numeric,
                }
            )

    def counts(self) -> dict[str, int]:
        counts = {"total": len(self.rows), "ok": 0, "fail": 0, "error": 0}
        for row in self.rows:
            if row["status"] in counts:
                counts[row["status"]] += 1
        return counts

    def best(self) -> dict | None:
        done = [r for r in self.rows if r["status"] == "ok" and r["loss"] is not None and not math.isnan(r["loss"])]
        return min(done, key=lambda r: r["loss"]) if done else None

    def csv(self) -> str:
        names = sorted({name for row in self.rows for name in row["params"]})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["tid", "status", "loss", "duration_s", "run_id", *names])
        for row in self.rows:
            writer.writerow(
                [
                    row["tid"], row["status"], "" if row["loss"] is None else repr(row["loss"]),
                    "" if row["duration_s"] is None else f"{row['duration_s']:.3f}", row["run_id"] or "",
                    *(row["params"].get(name, "") for name in names),
                ]
            )
        return out.getvalue()


def plots(table: TrialTable):
    """``(name, matplotlib Figure)`` pairs: loss by trial with the best so far, then loss against
    each numeric parameter. Figures are built without pyplot (no global state, no display)."""
    from matplotlib.figure import Figure

    scored = [r for r in table.rows if r["loss"] is not None and math.isfinite(r["loss"])]
    if not scored:
        return
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    tids = [r["tid"] for r in scored]
    losses = [r["loss"] for r in scored]
    best, best_so_far = math.inf, []
    for loss in losses:
        best = min(best, loss)
        best_so_far.append(best)
    axes.scatter(tids, losses, s=14, alpha=0.7, label="trial loss")
    axes.step(tids, best_so_far, where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial (tid)")
    axes.set_ylabel("loss")
    axes.set_title("Loss by trial")
    axes.legend()
    yield "loss_by_trial", figure

    names = sorted({name for r in scored for name in r["numeric"]})
    names = [n for n in names if len({r["numeric"].get(n) for r in scored} - {None}) > 1]
    for name in names[:MAX_PARAM_PLOTS]:
        points = [(r["numeric"][name], r["loss"]) for r in scored if name in r["numeric"]]
        figure = Figure(figsize=(5, 3.5), layout="constrained")
        axes = figure.add_subplot()
        axes.scatter([p[0] for p in points], [p[1] for p in points], s=14, alpha=0.7)
        axes.set_xlabel(name)
        axes.set_ylabel("loss")
        axes.set_title(f"Loss against {name}")
        yield f"loss_vs_{_file_safe(name)}", figure


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _duration(doc: dict) -> float | None:
    booked, refreshed = doc.get("book_time"), doc.get("refresh_time")
    if isinstance(booked, datetime) and isinstance(refreshed, datetime):
        return max(0.0, (refreshed - booked).total_seconds())
    return None


def _run_id(trials, doc: dict) -> str | None:
    try:
        attachments = trials.trial_attachments(doc)
        if trial.RUN_ID_ATTACHMENT in attachments:
            value = attachments[trial.RUN_ID_ATTACHMENT]
            return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:
        return None
    return None
