"""The quality study's picture: bitext accuracy against monolingual structure, the Pareto front marked.

Each point is a model: an arm's mean over its seeds (with its spread as error bars), a tuning trial
(one seed), the pretrained student. A point is on the front when no other point has at least its
structure and at least its bitext accuracy, and more of one of them: what a user who wants both could
choose. Matplotlib's object API on the Agg canvas (no pyplot state), as :mod:`imascl_ray.eval.figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLOURS = {"hard": "#d62728", "soft": "#1f77b4", "mix": "#2ca02c", "other": "#7f7f7f"}
"""Points by family: hard labels, soft labels, the hard/soft mix (``loss.hard_mix``), the rest."""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (both coordinates maximised), in input order.

    ``q`` dominates ``p`` when ``q >= p`` on both and ``q != p``; equal points do not dominate each other.
    """
    front = []
    for index, (x, y) in enumerate(points):
        dominated = any(
            qx >= x and qy >= y and (qx, qy) != (x, y)
            for other, (qx, qy) in enumerate(points)
            if other != index
        )
        if not dominated:
            front.append(index)
    return front


def family(overrides: Sequence[str] | dict[str, Any]) -> str:
    """``hard``, ``soft``, ``mix`` or ``other`` from a model's loss settings (overrides or params)."""
    settings = (
        dict(item.split("=", 1) for item in overrides) if not isinstance(overrides, dict) else overrides
    )
    name = str(settings.get("loss.name", "soft"))
    if name in ("infonce", "hard_negatives"):
        return "hard"
    if name == "soft":
        return "mix" if float(settings.get("loss.hard_mix", 0) or 0) > 0 else "soft"
    return "other"


def pareto_figure(points: Sequence[dict[str, Any]], *, title: str):
    """The figure (``matplotlib.figure.Figure``): ``points`` are dicts with ``label``, ``family``,
    ``kind`` (``arm``, ``trial`` or ``pretrained``), ``structure``, ``bitext`` and, for arms,
    ``structure_std`` and ``bitext_std``. Arms are labelled; the front is a dashed line."""
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("no points to draw")
    figure = Figure(figsize=(7.5, 5.0), dpi=110, layout="constrained")
    axis = figure.subplots()
    seen: set[str] = set()
    for point in points:
        colour = COLOURS.get(point["family"], COLOURS["other"])
        legend = f"{point['family']} {point['kind']}"
        label = legend if legend not in seen else None
        seen.add(legend)
        x, y = point["structure"], point["bitext"]
        if point["kind"] == "trial":
            axis.scatter([x], [y], s=22, color=colour, alpha=0.45, label=label, linewidths=0)
        elif point["kind"] == "pretrained":
            axis.scatter([x], [y], s=90, marker="*", color="black", label="pretrained")
            axis.annotate("pretrained", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
        else:
            axis.errorbar(
                [x],
                [y],
                xerr=[point.get("structure_std", 0.0)],
                yerr=[point.get("bitext_std", 0.0)],
                fmt="D",
                markersize=6,
                color=colour,
                capsize=2,
                label=label,
            )
            axis.annotate(point["label"], (x, y), xytext=(4, -10), textcoords="offset points", fontsize=7)
    front = sorted((points[i]["structure"], points[i]["bitext"]) for i in pareto_front(_xy(points)))
    axis.plot([x for x, _ in front], [y for _, y in front], "--", color="#555555", lw=1, label="Pareto front")
    axis.set_xlabel("monolingual structure kept out of domain (Spearman vs the starting checkpoint)")
    axis.set_ylabel("bitext accuracy out of domain (points, both directions)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    return figure


def _xy(points: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(point["structure"], point["bitext"]) for point in points]


def write_figure(figure, path: Path) -> Path:
    """Save ``figure`` as a PNG at ``path`` (its folder made); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
