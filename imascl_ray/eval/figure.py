"""A small before/after figure of bitext retrieval accuracy: per language pair, both directions.

Two panels (source -> target, target -> source), one group of bars per language pair: the starting
model (grey) and the trained one (blue), each bar labelled with its accuracy. It is what the quickstart
and ``imascl-ray eval --baseline`` write next to their table (``.png``) and log to their MLflow run
(``MlflowClient.log_figure``), so the run page shows it. Matplotlib's object API on the Agg canvas: no
pyplot state, no display needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

BEFORE_COLOUR = "#9e9e9e"
AFTER_COLOUR = "#1f77b4"


def bitext_directions(results: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{pair: (accuracy src -> tgt, accuracy tgt -> src)}`` of local-suite results (``{pair: {...}}``)
    or of a paper-suite result (its bitext tasks, named ``"<task> <subset>"``)."""
    if "tasks" in results and "summary" in results:
        entries = {
            f"{task} {pair}": entry
            for task, pairs in results["tasks"].items()
            for pair, entry in pairs.items()
            if entry.get("accuracy_src_to_tgt") is not None
        }
    else:
        entries = dict(results)
    return {
        pair: (float(entry["accuracy_src_to_tgt"]), float(entry["accuracy_tgt_to_src"]))
        for pair, entry in entries.items()
    }


def _direction_label(pair: str, reverse: bool) -> str:
    """``en-fr`` -> ``en→fr`` (or ``fr→en``); other names (``Tatoeba fra-eng``) as they are."""
    sides = pair.split("-")
    if len(sides) == 2 and " " not in pair:
        first, second = (sides[1], sides[0]) if reverse else (sides[0], sides[1])
        return f"{first}→{second}"
    return pair


def before_after_figure(
    after: Mapping[str, Any],
    before: Mapping[str, Any] | None = None,
    *,
    title: str = "Bitext retrieval accuracy on held-out pairs",
    labels: tuple[str, str] = ("pretrained", "trained"),
):
    """The figure (a ``matplotlib.figure.Figure``) of ``after`` against ``before`` (optional).

    Both take the results of :func:`imascl_ray.eval.runner.evaluate_model`; only the language pairs
    ``after`` has are drawn, in its order.
    """
    from matplotlib.figure import Figure

    trained = bitext_directions(after)
    start = bitext_directions(before) if before is not None else {}
    pairs = list(trained)
    if not pairs:
        raise ValueError("no bitext results to draw")
    series = [(labels[0], BEFORE_COLOUR, start)] if start else []
    series.append((labels[1], AFTER_COLOUR, trained))
    values = [v for _, _, data in series for pair in pairs if pair in data for v in data[pair]]
    floor = max(0.0, min(values) - 0.1)
    floor = float(int(floor * 10)) / 10  # a round lower edge, so small differences show

    figure = Figure(figsize=(max(6.0, 1.4 * len(pairs) + 2.5), 3.8), dpi=110, layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    width = 0.8 / len(series)
    for direction, (axis, name) in enumerate(zip(axes, ("source → target", "target → source"), strict=True)):
        for index, (label, colour, data) in enumerate(series):
            xs = [p + (index - (len(series) - 1) / 2) * width for p in range(len(pairs))]
            heights = [data[pair][direction] if pair in data else 0.0 for pair in pairs]
            bars = axis.bar(xs, heights, width=width * 0.95, color=colour, label=label)
            axis.bar_label(bars, labels=[f"{h:.3f}" for h in heights], fontsize=6.5, padding=1)
        axis.set_xticks(range(len(pairs)), [_direction_label(p, direction == 1) for p in pairs], fontsize=8)
        axis.set_title(name, fontsize=10)
        axis.set_ylim(floor, 1.04)
        axis.grid(axis="y", alpha=0.3)
        axis.set_axisbelow(True)
    axes[0].set_ylabel("accuracy")
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncols=len(series), fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=11)
    return figure


def write_figure(figure: Any, path: str | Path) -> Path:
    """Save ``figure`` as a PNG at ``path`` (parent folders created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png")
    return target
