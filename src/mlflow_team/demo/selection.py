"""Model selection as the course teaches it: the lowest validation RMSE among the runs that fit
a training-time and a model-size budget, with the reason each candidate was or was not picked."""

from __future__ import annotations

import math
from dataclasses import dataclass

RMSE = "rmse"
TRAINING_TIME = "training_time_s"
MODEL_SIZE = "model_size_mb"


@dataclass(frozen=True)
class Candidate:
    run_id: str
    name: str
    rmse: float
    training_time_s: float
    model_size_mb: float
    picked: bool = False
    reason: str = ""


def select(runs, max_training_time_s: float, max_model_size_mb: float) -> list[Candidate]:
    """Every run with the three metrics, best RMSE first; exactly one is picked if any fits."""
    candidates = []
    for run in runs:
        metrics = run.data.metrics
        if not {RMSE, TRAINING_TIME, MODEL_SIZE} <= set(metrics) or math.isnan(metrics[RMSE]):
            continue
        candidates.append(
            Candidate(
                run_id=run.info.run_id,
                name=run.info.run_name or run.info.run_id[:8],
                rmse=metrics[RMSE],
                training_time_s=metrics[TRAINING_TIME],
                model_size_mb=metrics[MODEL_SIZE],
            )
        )
    candidates.sort(key=lambda c: (c.rmse, c.training_time_s, c.model_size_mb))
    chosen = None
    judged = []
    for candidate in candidates:
        over = []
        if candidate.training_time_s > max_training_time_s:
            over.append(f"trains in {candidate.training_time_s:.2f} s > {max_training_time_s:g} s budget")
        if candidate.model_size_mb > max_model_size_mb:
            over.append(f"{candidate.model_size_mb:.2f} MB > {max_model_size_mb:g} MB budget")
        if over:
            reason, picked = "; ".join(over), False
        elif chosen is None:
            chosen = candidate
            reason, picked = "lowest RMSE within both budgets", True
        else:
            reason, picked = f"RMSE {candidate.rmse - chosen.rmse:+.4f} against the pick", False
        judged.append(Candidate(**{**candidate.__dict__, "picked": picked, "reason": reason}))
    return judged


def table(candidates: list[Candidate], limit: int = 12) -> str:
    """The candidates as a text table (the pick marked), at most ``limit`` rows plus the pick."""
    shown = candidates[:limit]
    pick = next((c for c in candidates if c.picked), None)
    if pick is not None and pick not in shown:
        shown.append(pick)
    header = ("", "run", "RMSE", "train s", "size MB", "why")
    rows = [
        ("*" if c.picked else "", c.name, f"{c.rmse:.4f}", f"{c.training_time_s:.2f}", f"{c.model_size_mb:.3f}", c.reason)
        for c in shown
    ]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    if len(candidates) > len(shown):
        lines.append(f"... and {len(candidates) - len(shown)} more")
    return "\n".join(lines)
