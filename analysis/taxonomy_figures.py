"""Figures of taxonomies: the taxonomy graph and collective performance vs budget.

The graph puts the supervised tasks in a left column and the targets served by transfers in a
right column. A first-order transfer is a straight arrow; a higher-order transfer is a
hyperedge: its sources meet in a diamond (labelled with the order) beside its target(s), from
which arrows go to every target using that source set. Targets supervised themselves are drawn
bold in the left column with a "self" tag; a supervised task drawn plain is a source only (its
own output comes from a transfer). Every figure is
written as PNG and SVG through a temporary file (never half-written under its final name).

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so they work
in any backend and in threads.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.solvers import Edge, TaxonomySolution

#: Colours per transfer order (order ≥ 5 uses the last one).
ORDER_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
_SUPERVISED_FACE = "#dbe7f5"
_TARGET_FACE = "#ffffff"
_X_LEFT, _X_RIGHT, _BOX_W, _BOX_H = 0.0, 1.0, 0.42, 0.62


def _order_colour(order: int) -> str:
    return ORDER_COLOURS[min(max(order, 1), len(ORDER_COLOURS)) - 1]


def save_figure(figure: Figure, stem: str | os.PathLike[str],
                formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Write a figure as ``stem.png`` and ``stem.svg`` atomically; returns the paths."""
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        path.chmod(0o644)
        paths.append(path)
    return paths


def _layout(solution: TaxonomySolution) -> tuple[list[str], list[str]]:
    """Left column (supervised tasks) and right column (targets served by transfers)."""
    feeds: dict[str, int] = {name: 0 for name in solution.supervised}
    for edge in solution.edges.values():
        for source in edge.sources:
            feeds[source] = feeds.get(source, 0) + 1
    left = sorted(solution.supervised, key=lambda n: (-feeds[n], n))
    row = {name: i for i, name in enumerate(left)}
    transfer_targets = [t for t, e in solution.edges.items() if not e.is_self]
    # Barycentric order: each target near the mean row of its sources, fewer crossings.
    right = sorted(transfer_targets, key=lambda t: (
        float(np.mean([row[s] for s in solution.edges[t].sources])), t))
    return left, right


def _box(axes: Axes, x: float, y: float, text: str, face: str, *, bold: bool = False) -> None:
    axes.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H,
                                  boxstyle="round,pad=0.02,rounding_size=0.12", facecolor=face,
                                  edgecolor="#333333", linewidth=1.6 if bold else 0.9, zorder=3))
    axes.text(x, y, text, ha="center", va="center", fontsize=9, zorder=4,
              fontweight="bold" if bold else "normal")


def plot_taxonomy(solution: TaxonomySolution, *, title: str | None = None,
                  show_affinity: bool = True) -> Figure:
    """Draw a taxonomy: supervised sources, edges and higher-order hyperedges to targets.

    Args:
        solution: A solved taxonomy.
        title: Figure title (default: budget, objective and status).
        show_affinity: Write each edge's source set and affinity beside its target.
    """
    left, right = _layout(solution)
    rows = max(len(left), len(right), 1)
    height = 1.2 + 0.42 * rows
    figure = Figure(figsize=(11.0, height))
    axes = figure.add_subplot()
    axes.set_axis_off()

    def spread(count: int) -> list[float]:
        # Columns of unequal length are centred on each other.
        offset = (rows - count) / 2
        return [rows - 1 - offset - i for i in range(count)]

    y_left = dict(zip(left, spread(len(left)), strict=True))
    y_right = dict(zip(right, spread(len(right)), strict=True))
    x_out, x_in = _X_LEFT + _BOX_W / 2, _X_RIGHT - _BOX_W / 2
    # One hub per distinct higher-order source set, shared by all targets that use it.
    # The order counts a label-free random source, which has no box: use the edge's order.
    hubs: dict[tuple[tuple[str, ...], int], list[str]] = {}
    for target in right:
        edge = solution.edges[target]
        colour = _order_colour(edge.order)
        end = (x_in, y_right[target])
        if len(edge.sources) == 1:
            start = (x_out, y_left[edge.sources[0]])
            axes.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11,
                                           color=colour, linewidth=1.3, alpha=0.85, zorder=2))
        else:
            hubs.setdefault((edge.sources, edge.order), []).append(target)
    for (sources, order), targets, hub in zip(hubs, hubs.values(), _hub_places(hubs, y_right),
                                               strict=True):
        colour = _order_colour(order)
        ys = [y_left[s] for s in sources]
        for y in ys:
            axes.plot([x_out, hub[0]], [y, hub[1]], color=colour, linewidth=1.1, alpha=0.7,
                      zorder=1)
        for target in targets:
            axes.add_patch(FancyArrowPatch(hub, (x_in, y_right[target]), arrowstyle="-|>",
                                           mutation_scale=11, color=colour, linewidth=1.5,
                                           zorder=2))
        axes.scatter([hub[0]], [hub[1]], marker="D", s=90, color=colour, zorder=3,
                     edgecolors="white", linewidths=0.6)
        axes.text(hub[0], hub[1], str(order), ha="center", va="center", fontsize=6.5,
                  color="white", zorder=4, fontweight="bold")
    for target in right:
        edge = solution.edges[target]
        _box(axes, _X_RIGHT, y_right[target], target, _TARGET_FACE)
        if show_affinity:
            axes.text(_X_RIGHT + _BOX_W / 2 + 0.03, y_right[target],
                      f"{_edge_caption(edge)}  ({edge.affinity:.3f})", ha="left", va="center",
                      fontsize=7.5, color="#444444")
    for name in left:
        edge = solution.edges.get(name)
        is_self = edge is not None and edge.is_self
        _box(axes, _X_LEFT, y_left[name], name, _SUPERVISED_FACE, bold=is_self)
        if is_self and edge is not None:
            tag = f"self ({edge.affinity:.3f})" if show_affinity else "self"
            axes.text(_X_LEFT - _BOX_W / 2 - 0.03, y_left[name], tag, ha="right", va="center",
                      fontsize=7.5, color="#444444")
    axes.text(_X_LEFT, rows - 0.2, "supervised", ha="center", va="bottom", fontsize=10,
              fontweight="bold")
    axes.text(_X_RIGHT, rows - 0.2, "targets by transfer", ha="center", va="bottom",
              fontsize=10, fontweight="bold")
    # Orders past the palette share its last colour and one legend entry.
    top = len(ORDER_COLOURS)
    orders = sorted({min(e.order, top) for e in solution.edges.values() if not e.is_self})
    handles: list[Artist] = [Line2D([0], [0], color=_order_colour(o), linewidth=2,
                                    label=f"order {o}" if o < top else f"order ≥ {top}")
                             for o in orders]
    served = [n for n in left if (e := solution.edges.get(n)) is not None and e.is_self]
    if served:
        handles.append(Patch(facecolor=_SUPERVISED_FACE, edgecolor="#333333", linewidth=1.6,
                             label="supervised, serves itself (self)"))
    if len(served) < len(left):
        handles.append(Patch(facecolor=_SUPERVISED_FACE, edgecolor="#333333", linewidth=0.9,
                             label="supervised as a source only"))
    if show_affinity:
        handles.append(Line2D([], [], linestyle="none", label="(0.123): the edge's affinity"))
    axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                ncol=min(len(handles), 5), frameon=False, fontsize=8)
    axes.set_xlim(-0.65, 2.0)
    axes.set_ylim(-0.8, rows + 0.4)
    budget = "∞" if math.isinf(solution.budget) else f"{solution.budget:g}"
    selves = f" ({len(served)} serve themselves)" if len(served) < len(left) else ""
    axes.set_title(title or (f"taxonomy: budget {budget}, {len(solution.supervised)} supervised"
                             f"{selves}, objective {solution.objective:.3f} ({solution.status}, "
                             f"{solution.solver})"), fontsize=11)
    return figure


def _hub_places(hubs: dict[tuple[tuple[str, ...], int], list[str]],
                y_right: dict[str, float]) -> list[tuple[float, float]]:
    """Where each hyperedge's diamond sits: beside its targets, apart from the others.

    A diamond on the row of its target shows which target its sources feed; one feeding
    several targets sits further left, so that its arrows fan out; diamonds closer than a row
    step aside to the left.
    """
    places: list[tuple[float, float]] = []
    for targets in hubs.values():
        y = float(np.mean([y_right[t] for t in targets]))
        x = 0.72 if len(targets) == 1 else 0.5
        while any(abs(x - px) < 0.05 and abs(y - py) < 0.7 for px, py in places):
            x -= 0.1
        places.append((x, y))
    return places


def _edge_caption(edge: Edge) -> str:
    """The source set as written beside a target (shortened for long chains)."""
    names = edge.label.split("+")
    if len(names) > 4:
        return f"{'+'.join(names[:3])}+… ({len(names)})"
    return edge.label


def write_taxonomy_figure(solution: TaxonomySolution, out_dir: str | os.PathLike[str],
                          stem: str = "taxonomy", title: str | None = None) -> list[Path]:
    """Draw :func:`plot_taxonomy` into ``out_dir/stem.png`` and ``.svg``."""
    return save_figure(plot_taxonomy(solution, title=title), Path(out_dir) / stem)


def plot_budget_curve(sweep: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Collective performance vs budget from :func:`taskonomy.analysis.taxonomy.sweep_frame`.

    Plots the mean affinity, mean quality (win rate vs ``self``) and mean gain (win rate vs
    ``pixels``) of the chosen edges over the targets; infeasible budgets are marked on the axis.
    """
    figure = Figure(figsize=(7.5, 4.2))
    axes = figure.add_subplot()
    feasible = sweep[sweep["status"] != "infeasible"]
    for column, label, style in (("mean_quality", "quality (win rate vs self)", "o-"),
                                 ("mean_gain", "gain (win rate vs pixels)", "s-")):
        values = pd.to_numeric(feasible[column], errors="coerce")
        if values.notna().any():
            axes.plot(feasible["budget"], values, style, markersize=4, label=label)
    infeasible = sweep[sweep["status"] == "infeasible"]
    if not infeasible.empty:
        axes.scatter(infeasible["budget"], np.zeros(len(infeasible)), marker="x", color="black",
                     label="infeasible", zorder=3, clip_on=False)
    # AHP affinities sum to 1 over a target's many candidates: small values, own axis.
    right = axes.twinx()
    right.plot(feasible["budget"], pd.to_numeric(feasible["mean_affinity"], errors="coerce"),
               "^--", color="#8172b3", markersize=4, label="affinity (AHP, right axis)")
    right.set_ylabel("mean AHP affinity of the chosen edges", color="#8172b3")
    right.set_ylim(bottom=0)
    lines, labels = axes.get_legend_handles_labels()
    more_lines, more_labels = right.get_legend_handles_labels()
    axes.set_xlabel("supervision budget (label cost)")
    axes.set_ylabel("mean over targets")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(lines + more_lines, labels + more_labels, fontsize=8, loc="lower right")
    axes.set_title(title or "collective performance vs budget", fontsize=11)
    return figure


def write_budget_curve(sweep: pd.DataFrame, out_dir: str | os.PathLike[str],
                       stem: str = "budget_curve", title: str | None = None) -> list[Path]:
    """Write the budget curve as PNG/SVG and its numbers as CSV beside them."""
    paths = save_figure(plot_budget_curve(sweep, title=title), Path(out_dir) / stem)
    csv_path = Path(out_dir) / f"{stem}.csv"
    atomic_write_bytes(csv_path, sweep.to_csv(index=False).encode())
    csv_path.chmod(0o644)
    return [*paths, csv_path]
