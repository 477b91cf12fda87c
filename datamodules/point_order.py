"""Order a building's points so that points that see each other lie close in the stream.

Non-fixated pose pairs a view with a view of another point of the same building when the two
images see a common point (:func:`~taskonomy.datamodules.multiview.overlapping`), and the
stream can only reach the points read just before and after
(:data:`~taskonomy.datamodules.multiview.PARTNER_WINDOW` on each side). Released point numbers
do not follow visibility (the sample record's point 0 sees points 171 to 1418), so packing in
point-number order leaves most real pairs out of reach. The packer therefore orders each
building's points by the reverse Cuthill–McKee permutation of the building's co-visibility
graph (two points are linked when images of theirs see a common point, or one sees the other),
the classic ordering that keeps the edges of a sparse graph near its diagonal.

Sightings come from the per-point ``nonfixated_matches`` files (every image in which a point
is visible) where a building has them, else from the per-view ``point_info`` records'
``nonfixated_points_in_view``. A building with neither keeps point-number order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy.datamodules.layouts import SourceLayout, ViewRef, view_sort_key
from taskonomy.datamodules.multiview import PARTNER_WINDOW


@dataclass(frozen=True)
class BuildingOrder:
    """The packing order of one building's views and what it gains.

    Attributes:
        views: The building's views, grouped by point (views of a point in view order).
        source: Where the visibility graph came from (``nonfixated_matches``, ``point_info``),
            or ``none`` (point-number order kept).
        edges: Co-visibility edges between two of the building's points.
        reachable_before: Edges within the partner window in point-number order.
        reachable: Edges within the partner window in the chosen order.
    """

    views: list[ViewRef]
    source: str
    edges: int
    reachable_before: int
    reachable: int


def visibility_order(points: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Points in reverse Cuthill–McKee order of their co-visibility graph.

    Args:
        points: The points (the same list gives the same order; without edges it is kept).
        edges: Pairs of linked points (:func:`covisibility_edges`); pairs naming other points
            (of another building, or absent from the pack) are ignored.

    Returns:
        ``points`` reordered; connected points come out close together.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    index = {p: i for i, p in enumerate(points)}
    pairs = {(index[a], index[b]) for a, b in edges if a in index and b in index and a != b}
    if not pairs:
        return list(points)
    rows, cols = np.array(sorted(pairs)).T
    n = len(points)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    graph = ((graph + graph.T) > 0).astype(np.int8).tocsr()
    return [points[i] for i in reverse_cuthill_mckee(graph, symmetric_mode=True)]


def reachable_edges(order: Sequence[str], edges: Iterable[tuple[str, str]],
                    window: int = PARTNER_WINDOW) -> tuple[int, int]:
    """How many distinct visibility edges lie within ``window`` positions in ``order``.

    Returns:
        ``(reachable, total)`` over the edges between points of ``order``.
    """
    position = {p: i for i, p in enumerate(order)}
    pairs = {tuple(sorted((a, b))) for a, b in edges
             if a in position and b in position and a != b}
    near = sum(1 for a, b in pairs if abs(position[a] - position[b]) <= window)
    return near, len(pairs)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # a missing or corrupt file only loses its edges; packing reports it
    return value if isinstance(value, dict) else None


def sightings(layout: SourceLayout, building: str, views: Sequence[ViewRef]
              ) -> tuple[str, list[tuple[str, str]]]:
    """Which points' images see which points, and the domain this was read from.

    Returns:
        ``(source, pairs)`` of ``(point whose image sees, point seen)``; ``("none", [])`` when
        the building has neither domain.
    """
    points = list(dict.fromkeys(ref.point for ref in views))
    pairs: list[tuple[str, str]] = []
    if layout.domain_dir(building, "nonfixated_matches").is_dir():
        for point in points:
            record = _read_json(layout.file_path(ViewRef(building, point, "all"),
                                                 "nonfixated_matches"))
            for seen_in in (record or {}).get("views", []):
                if isinstance(seen_in, dict) and "point_uuid" in seen_in:
                    pairs.append((str(seen_in["point_uuid"]), point))
        return "nonfixated_matches", pairs
    if layout.domain_dir(building, "point_info").is_dir():
        for ref in views:
            record = _read_json(layout.file_path(ref, "point_info"))
            for seen in (record or {}).get("nonfixated_points_in_view", []):
                pairs.append((ref.point, str(seen)))
        return "point_info", pairs
    return "none", pairs


def covisibility_edges(seen: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs of points whose images can make a non-fixated pair.

    Args:
        seen: ``(point whose image sees, point seen)`` pairs (:func:`sightings`).

    Returns:
        Each point linked to the points it is seen from, and those points to each other (their
        images share the seen point), once per unordered pair.
    """
    seen_from: dict[str, set[str]] = {}
    for viewer, point in seen:
        seen_from.setdefault(point, set()).add(viewer)
    edges: set[tuple[str, str]] = set()
    for point, viewers in seen_from.items():
        group = sorted(viewers | {point})
        edges.update((a, b) for i, a in enumerate(group) for b in group[i + 1:])
    return sorted(edges)


def order_building(layout: SourceLayout, building: str, views: Sequence[ViewRef],
                   window: int = PARTNER_WINDOW) -> BuildingOrder:
    """Order one building's views for packing (see the module docstring).

    Args:
        layout: The source.
        building: The building.
        views: Its views (any order).
        window: The partner window the gain is measured with.
    """
    by_point: dict[str, list[ViewRef]] = {}
    for ref in sorted(views, key=view_sort_key):
        by_point.setdefault(ref.point, []).append(ref)
    numbered = list(by_point)
    source, seen = sightings(layout, building, views)
    edges = covisibility_edges(seen)
    order = visibility_order(numbered, edges)
    before, total = reachable_edges(numbered, edges, window)
    after, _ = reachable_edges(order, edges, window)
    if after < before:  # the heuristic can lose on an already banded numbering
        order, after = numbered, before
    return BuildingOrder(views=[ref for point in order for ref in by_point[point]],
                         source=source, edges=total, reachable_before=before, reachable=after)
