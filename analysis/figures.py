"""Figures of an affinity table, each saved as PNG and SVG with its numbers beside it.

- :func:`affinity_matrices` — first-order source × target matrices before AHP (quality: win
  rate of the transfer vs the target's own network) and after AHP (affinity, log colour scale).
- :func:`quality_gain_figure` — quality and gain per target of its best transfer (or of the
  edges a taxonomy chose).
- :func:`budget_curve_figure` — collective performance of taxonomies vs the supervision budget.
- :func:`similarity_tree_figure` — agglomerative clustering of the targets' affinity columns.

Every function returns the written paths: ``NAME.png``, ``NAME.svg`` and ``NAME.csv`` (tables)
or ``NAME.json`` (trees), written atomically. Figures are built on
:class:`matplotlib.figure.Figure` directly, so no GUI backend or global pyplot state is used.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.cluster.hierarchy import dendrogram, fcluster, linkage
from scipy.spatial.distance import pdist

from taskonomy.analysis.affinity_table import AffinityTable
from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.tasks.registry import task_names

#: Smallest affinity shown on the log colour scale.
AFFINITY_FLOOR = 1e-4


def task_order(names: Iterable[str]) -> list[str]:
    """Names in the task table's order (related tasks sit together), unknown names last."""
    names = list(dict.fromkeys(names))
    table = [n for n in task_names() if n in names]
    return table + sorted(n for n in names if n not in table)


def save_figure(fig: Figure, out_dir: str | os.PathLike[str], name: str,
                data: pd.DataFrame | Mapping[str, Any]) -> list[Path]:
    """Write ``NAME.png``, ``NAME.svg`` and the figure's numbers (``.csv`` or ``.json``)."""
    out = Path(out_dir)
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(out / f"{name}.{fmt}")
        atomic_write_bytes(paths[-1], buffer.getvalue())
    if isinstance(data, pd.DataFrame):
        paths.append(out / f"{name}.csv")
        atomic_write_bytes(paths[-1], data.to_csv(float_format="%.6g").encode())
    else:
        paths.append(out / f"{name}.json")
        atomic_write_bytes(paths[-1], json.dumps(data, indent=1).encode())
    return paths


def _heatmap(matrix: pd.DataFrame, title: str, label: str, norm: Normalize, cmap: str,
             annotate: bool, *, number: str = ".2f", extend: str = "neither") -> Figure:
    rows, cols = matrix.shape
    fig = Figure(figsize=(2.8 + 0.34 * cols, 1.6 + 0.3 * rows))
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(matrix.to_numpy(dtype=float))
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), list(matrix.columns), rotation=90, fontsize=8)
    ax.set_yticks(range(rows), list(matrix.index), fontsize=8)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    missing = bool(np.isnan(matrix.to_numpy(dtype=float)).any())
    ax.set_title(title + ("\n(grey: not measured)" if missing else ""), fontsize=10)
    ax.set_facecolor("#dddddd")  # missing transfers show grey
    # extend: an arrow on the colour bar says values past its end are drawn at the end.
    fig.colorbar(image, ax=ax, label=label, fraction=0.04, pad=0.02, extend=extend)
    if annotate:
        for (i, j), v in np.ndenumerate(matrix.to_numpy(dtype=float)):
            if np.isfinite(v):
                red, green, blue, _ = image.cmap(norm(v))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # perceived luminance
                ax.text(j, i, format(v, number), ha="center", va="center", fontsize=6,
                        color="white" if dark else "black")
    return fig


def _ordered_matrix(table: AffinityTable, value: str) -> pd.DataFrame:
    matrix = table.first_order_matrix(value)
    return matrix.reindex(index=task_order(matrix.index), columns=task_order(matrix.columns))


def affinity_matrices(table: AffinityTable, out_dir: str | os.PathLike[str]) -> list[Path]:
    """The first-order matrix before AHP (quality) and after AHP (affinity).

    "Before" is the raw tournament evidence the paper starts from: each transfer's win rate
    against the target's own network (the target's ``self``); "after" is the AHP affinity.
    Writes ``affinity_before_ahp.*`` (when the table has quality values) and
    ``affinity_after_ahp.*``.
    """
    paths: list[Path] = []
    quality = _ordered_matrix(table, "quality")
    annotate = max(quality.shape) <= 12  # numbers in cells stay legible on small matrices
    if quality.notna().any().any():
        # Diverging at 0.5, where a transfer is on par with the target's own network.
        fig = _heatmap(quality, "Before AHP: win rate of s → t against t's own network",
                       "quality (win rate vs self; 0.5 = on par)", Normalize(0, 1), "RdBu",
                       annotate)
        paths += save_figure(fig, out_dir, "affinity_before_ahp", quality)
    affinity = _ordered_matrix(table, "affinity")
    finite = affinity.to_numpy(dtype=float)
    top = float(np.nanmax(finite)) if np.isfinite(finite).any() else 1.0
    # The scale starts just below the smallest affinity shown (never below the floor): the
    # paper's affinities span four decades, a small study's one, and both should use the colours.
    positive = finite[np.isfinite(finite) & (finite > 0)]
    bottom = max(AFFINITY_FLOOR, float(positive.min()) / 2) if positive.size else AFFINITY_FLOOR
    norm = LogNorm(bottom, max(top, bottom * 10), clip=True)
    below = bool((positive < bottom).any()) or bool((finite[np.isfinite(finite)] <= 0).any())
    # Two significant digits: on a log scale 0.0037 and 0.00014 both read 0.00 with two decimals.
    fig = _heatmap(affinity.clip(lower=AFFINITY_FLOOR), "After AHP: affinity of s → t",
                   "AHP affinity (log scale)", norm, "magma", annotate, number=".2g",
                   extend="min" if below else "neither")
    paths += save_figure(fig, out_dir, "affinity_after_ahp", affinity)
    return paths


def win_rate_figure(win_rates: pd.DataFrame, target: str, out_dir: str | os.PathLike[str], *,
                    name: str | None = None) -> list[Path]:
    """One target's tournament: share of test images where the row candidate beats the column.

    Args:
        win_rates: Square frame labelled by candidate (``Tournament.win_rate_frame()``); it is
            drawn strongest first (by mean win rate).
        target: The target task (title).
        out_dir: Output folder.
        name: Base name of the files (default: the target).
    """
    order = win_rates.mean(axis=1).sort_values(ascending=False).index
    matrix = win_rates.loc[order, order]
    labels = [_short(str(c)) for c in matrix.index]
    shown = pd.DataFrame(matrix.to_numpy(), index=labels, columns=labels)
    fig = _heatmap(shown, f"Tournament of {target}: row beats column on this share of images",
                   "win rate", Normalize(0, 1), "RdBu", max(matrix.shape) <= 12)
    axes = fig.axes[0]
    axes.set_xlabel("candidate")
    axes.set_ylabel("candidate")
    return save_figure(fig, out_dir, name or target, matrix)


def best_transfers(table: AffinityTable, chosen: Mapping[str, str] | None = None,
                   max_order: int | None = None) -> pd.DataFrame:
    """Per target, the transfer shown in quality/gain plots.

    Args:
        table: The affinity table.
        chosen: Target → ``sources`` string of the edge a taxonomy chose; targets not in it get
            their highest-affinity transfer from other tasks (baselines and the target's own
            t → t readout excluded).
        max_order: Highest order considered for the highest-affinity transfer (default: all).

    Returns:
        Frame indexed by target with ``sources``, ``order``, ``affinity``, ``quality``, ``gain``.
    """
    rows = []
    for target in task_order(table.targets()):
        candidates = table.candidates(target)
        if chosen and target in chosen:
            pick = candidates[candidates["sources"] == chosen[target]]
            if pick.empty:
                raise ValueError(f"chosen edge {chosen[target]!r} → {target} is not in the table")
        else:
            order = candidates["order"]
            eligible = (order > 0) & (candidates["sources"] != target)
            if max_order is not None:
                eligible &= order <= max_order
            pick = candidates[eligible].head(1)
        if not pick.empty:
            rows.append({"target": target,
                         **pick.iloc[0][["sources", "order", "affinity", "quality", "gain"]]})
    return pd.DataFrame(rows).set_index("target")


def _short(sources: str, keep: int = 3) -> str:
    names = sources.split("+")
    if len(names) <= keep:
        return sources
    return "+".join(names[:keep]) + f" +{len(names) - keep} more"


def quality_gain_figure(table: AffinityTable, out_dir: str | os.PathLike[str], *,
                        chosen: Mapping[str, str] | None = None,
                        name: str = "quality_gain", max_order: int | None = None,
                        title: str | None = None) -> list[Path]:
    """Quality and gain per target (bars), with the transfer's sources as labels."""
    data = best_transfers(table, chosen, max_order)
    n = len(data)
    fig = Figure(figsize=(9, 1.2 + 0.32 * n))
    ax = fig.add_subplot()
    y = np.arange(n)
    for offset, column, label, colour in ((-0.2, "quality", "quality (vs self)", "#1f77b4"),
                                          (0.2, "gain", "gain (vs pixels)", "#ff7f0e")):
        values = data[column].astype(float)
        bars = ax.barh(y + offset, values, height=0.4, label=label, color=colour)
        # The value at each bar's end: a bar of 0.001 is otherwise invisible.
        ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "" for v in values],
                     padding=2, fontsize=6)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    labels = [f"{t}  ←  {_short(s, keep=4)}"
              for t, s in zip(data.index, data["sources"], strict=True)]
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("win rate (0.5 = on par)")
    which = "chosen" if chosen else "highest-affinity"
    limit = f" (order ≤ {max_order})" if max_order is not None and not chosen else ""
    excluded = "" if chosen else ", baselines excluded"
    ax.set_title(title or f"Quality and gain of each target's {which} transfer{limit}{excluded}",
                 fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.5 / max(n, 1)), ncol=2,
              fontsize=8, frameon=False)
    return save_figure(fig, out_dir, name, data)


def budget_curve_figure(sweep: pd.DataFrame, out_dir: str | os.PathLike[str], *,
                        name: str = "budget_curve") -> list[Path]:
    """Collective performance of taxonomies vs budget.

    Args:
        sweep: One row per budget with columns ``budget`` and at least one of ``mean_quality``,
            ``mean_gain``, ``objective``; an optional ``status`` marks infeasible budgets.
        out_dir: Output folder.
        name: Base name of the files.

    Raises:
        ValueError: ``sweep`` lacks the columns.
    """
    measures = [c for c in ("mean_quality", "mean_gain") if c in sweep.columns]
    if "budget" not in sweep.columns or not (measures or "objective" in sweep.columns):
        raise ValueError("a budget sweep needs 'budget' and 'mean_quality'/'mean_gain'/"
                         f"'objective' columns, got {list(sweep.columns)}")
    data = sweep.sort_values("budget").reset_index(drop=True)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    styles = {"mean_quality": ("o-", "quality (vs self)"), "mean_gain": ("s-", "gain (vs pixels)")}
    for column in measures:
        marker, label = styles[column]
        ax.plot(data["budget"], data[column], marker, label=label, markersize=4)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("mean win rate over targets")
    if "objective" in data.columns:
        right = ax.twinx() if measures else ax
        right.plot(data["budget"], data["objective"], "^--", color="grey", markersize=4,
                   label="objective (Σ affinity)")
        right.set_ylabel("BIP objective")
        if measures:
            right.legend(loc="lower right", fontsize=8)
    if "status" in data.columns:
        bad = data[data["status"].astype(str) != "optimal"]
        for budget in bad["budget"]:
            ax.axvspan(budget - 0.5, budget + 0.5, color="#f2dede", zorder=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("supervision budget (tasks trained from scratch)")
    ax.set_title("Collective performance of taxonomies vs budget", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, out_dir, name, data.set_index("budget"))


#: Targets a similarity tree needs to say anything: with three, each column holds two
#: transfers besides its left-out t → t, and every merge happens at the same height.
MIN_TREE_TARGETS = 4


def similarity_tree(table: AffinityTable, method: str = "average",
                    n_clusters: int = 4) -> dict[str, Any]:
    """Agglomerative clustering of the targets by their first-order affinity columns.

    Affinities span orders of magnitude, so columns are compared on a log scale: the distance of
    two targets is 1 − Pearson correlation of their log-affinity columns. A target's own
    readout (t → t) always dominates its column and says nothing about similarity, so it is
    left out (replaced by the column's mean, as are missing transfers). On the 2018 data this
    recovers the paper's 2D / 3D / semantic / low-dimensional geometric groups.

    Returns:
        ``{"targets", "sources", "linkage", "leaves", "clusters", "method", "metric"}``
        (JSON-ready; ``clusters`` maps each target to one of ``n_clusters`` flat clusters).

    Raises:
        ValueError: Fewer than two targets.
    """
    matrix = table.first_order_matrix("affinity")
    matrix = matrix.reindex(index=task_order(matrix.index), columns=task_order(matrix.columns))
    if matrix.shape[1] < 2:
        raise ValueError("a similarity tree needs at least two targets")
    logs = np.log(np.clip(matrix.to_numpy(dtype=float, copy=True), AFFINITY_FLOOR / 10, None))
    for col, target in enumerate(matrix.columns):
        if target in matrix.index:
            logs[list(matrix.index).index(target), col] = np.nan
    logs = np.where(np.isnan(logs), np.nanmean(logs, axis=0, keepdims=True), logs)
    distances = np.nan_to_num(pdist(logs.T, metric="correlation"), nan=1.0)
    tree = linkage(np.clip(distances, 0.0, 2.0), method=method)
    leaves = dendrogram(tree, no_plot=True, labels=list(matrix.columns))["ivl"]
    flat = fcluster(tree, min(n_clusters, matrix.shape[1]), criterion="maxclust")
    return {"targets": list(matrix.columns), "sources": list(matrix.index),
            "linkage": tree.tolist(), "leaves": leaves,
            "clusters": {t: int(c) for t, c in zip(matrix.columns, flat, strict=True)},
            "method": method, "metric": "1 - correlation of log affinity (t → t left out)"}


def similarity_tree_figure(table: AffinityTable, out_dir: str | os.PathLike[str], *,
                           name: str = "similarity_tree") -> list[Path]:
    """The task similarity tree (dendrogram), with the linkage as JSON beside it."""
    tree = similarity_tree(table)
    n = len(tree["targets"])
    fig = Figure(figsize=(7, 1.2 + 0.3 * n))
    ax = fig.add_subplot()
    dendrogram(np.asarray(tree["linkage"]), labels=tree["targets"], orientation="left", ax=ax,
               color_threshold=0.7 * float(np.max(np.asarray(tree["linkage"])[:, 2])),
               leaf_font_size=8)
    ax.set_xlabel("1 − correlation of log-affinity columns")
    ax.set_title("Task similarity tree (agglomerative, average linkage)", fontsize=10)
    return save_figure(fig, out_dir, name, tree)


def all_figures(table: AffinityTable, out_dir: str | os.PathLike[str], *,
                sweep: pd.DataFrame | None = None,
                chosen: Mapping[str, str] | None = None,
                max_order: int | None = None) -> list[Path]:
    """Every figure of an affinity table (the budget curve only with a ``sweep``)."""
    paths = affinity_matrices(table, out_dir)
    paths += quality_gain_figure(table, out_dir, max_order=max_order)
    if chosen:
        paths += quality_gain_figure(table, out_dir, chosen=chosen, name="quality_gain_taxonomy")
    if len(table.targets()) >= MIN_TREE_TARGETS:
        paths += similarity_tree_figure(table, out_dir)
    if sweep is not None and len(sweep):
        paths += budget_curve_figure(sweep, out_dir)
    return paths
