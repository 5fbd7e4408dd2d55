"""Model selection as the course teaches it: the lowest validation RMSE among the runs that fit
a training-time and a model-size budget, with the reason each candidate was or was not picked,
as a text table and as a picture (``plot``).

The size is the logged model's, as stored: the sum of its artifact files (``MODEL_SIZE``, in MB
of 10^6 bytes), what a serving container downloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RMSE = "rmse"
TRAINING_TIME = "training_time_s"
MODEL_SIZE = "model_size_mb"
#: What the size column and axis measure.
SIZE_LABEL = "model MB (logged)"


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
    header = ("", "run", "RMSE", "train s", SIZE_LABEL, "why")
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


def plot(candidates: list[Candidate], max_training_time_s: float, max_model_size_mb: float, path) -> str:
    """Save the choice as a PNG at ``path``: validation RMSE against training time (left) and
    against the logged model's size (right), marker area by model size, each budget a dashed line,
    the pick ringed and named. Built without pyplot (Agg canvas, no global state); returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pick = next((c for c in candidates if c.picked), None)
    largest = max((c.model_size_mb for c in candidates), default=1.0) or 1.0

    def area(candidate: Candidate) -> float:
        return 40 + 360 * candidate.model_size_mb / largest

    def fits(candidate: Candidate) -> bool:
        return candidate.training_time_s <= max_training_time_s and candidate.model_size_mb <= max_model_size_mb

    figure = Figure(figsize=(11, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    by_time, by_size = figure.subplots(1, 2, sharey=True)
    panels = (
        (by_time, "training_time_s", max_training_time_s, "training time (s, log scale)", "s"),
        (by_size, "model_size_mb", max_model_size_mb, f"{SIZE_LABEL}, log scale", "MB"),
    )
    for axes, field, budget, label, unit in panels:
        for baseline, marker in ((False, "o"), (True, "s")):
            for within, colour in ((True, "tab:blue"), (False, "tab:gray")):
                group = [c for c in candidates if c.name.startswith("baseline") == baseline and fits(c) == within]
                if group:
                    axes.scatter([getattr(c, field) for c in group], [c.rmse for c in group], s=[area(c) for c in group],
                                 c=colour, marker=marker, alpha=0.6, edgecolors="white", linewidths=0.6)
        axes.axvline(budget, color="tab:red", linestyle="--", linewidth=1.5)
        axes.annotate(f"budget {budget:g} {unit}", (budget, 1), xycoords=("data", "axes fraction"), xytext=(-4, -4),
                      textcoords="offset points", ha="right", va="top", fontsize=9, color="tab:red")
        if pick is not None:
            axes.scatter([getattr(pick, field)], [pick.rmse], s=area(pick) * 2.5, facecolors="none",
                         edgecolors="tab:orange", linewidths=2.5)
            axes.annotate(f"pick: {pick.name}\nRMSE {pick.rmse:.3f}", (getattr(pick, field), pick.rmse),
                          xytext=(36, 56), textcoords="offset points", fontsize=9, color="tab:orange",
                          fontweight="bold", arrowprops={"arrowstyle": "-", "color": "tab:orange"},
                          bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "tab:orange", "alpha": 0.9})
        values = [v for v in [getattr(c, field) for c in candidates] + [budget] if v > 0] or [0.1, 1.0]
        axes.set_xscale("log")
        axes.set_xlim(min(values) / 1.8, max(values) * 1.8)
        axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(label)
        axes.grid(True, which="major", alpha=0.3)
        axes.margins(y=0.12)
    by_time.set_ylabel("validation RMSE (minutes)")

    def key(label, marker="o", colour="tab:blue", **style) -> Line2D:
        return Line2D([], [], marker=marker, color=colour, linestyle="none", markersize=9, label=label, **style)

    handles = [
        key("xgboost trial, within both budgets"), key("baseline, within both budgets", "s"),
        key("over a budget", colour="tab:gray"),
        key("the pick: lowest RMSE within both", markerfacecolor="none", markeredgecolor="tab:orange", markeredgewidth=2.5),
        Line2D([], [], color="tab:red", linestyle="--", label="budget"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    figure.suptitle(
        f"Model selection: the lowest validation RMSE within {max_training_time_s:g} s of training and "
        f"{max_model_size_mb:g} MB of logged model\n{len(candidates)} runs; marker area: the logged model's size"
    )
    figure.savefig(path, dpi=110)
    return str(path)
