"""Multi-view samples (pose, egomotion, point matching) from sequential shards.

Shards are read front to back, so multi-view samples cannot fetch arbitrary views. The packer
groups views by building and point (points that see each other close together, see
:mod:`~taskonomy.datamodules.point_order`) and never splits a point across shards; the stream
therefore delivers all views of one fixated point consecutively, and:

- **fixated pose** uses two views of one point, **egomotion** three (a *group* of views);
- **point matching** pairs the first view with another view of the same point (label 1) or,
  half of the time, with a view of another point (label 0): one of the recently seen points
  (in visibility order, mostly points nearby) or of a uniform sample of the views read before
  them (:data:`NEGATIVE_RESERVOIR` views, across buildings), as the authors' negatives came
  from the same or another building;
- **non-fixated pose** pairs the first view with a view of a nearby *other* point of the same
  building (among the recently seen groups and as many read ahead) such that the two images
  see a common point: one shows the other's fixated point, or both show a third one
  (``nonfixated_points_in_view`` / ``nonfixated_matches``; :func:`overlapping`); the first
  view is the first one of the group (in its random order) that has such a partner, and
  groups where no view has one are passed over.

A *unit* is one training sample: its views (decoded domain dicts), and per multi-view task the
indices of the views that task uses. Single-view tasks use view 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from taskonomy.datamodules.layouts import parse_key

#: Views per sample of the built-in multi-view tasks.
MULTIVIEW_TASKS: dict[str, int] = {
    "fixated_pose": 2,
    "nonfixated_pose": 2,
    "egomotion": 3,
    "point_matching": 2,
}


#: Points read before (and, for non-fixated pose, after) a point that its unit can draw
#: negatives and non-fixated partners from (``build_units``' buffer).
PARTNER_WINDOW = 16

#: Earlier views kept (a uniform reservoir sample of the stream) for point-matching negatives
#: beyond the recent points.
NEGATIVE_RESERVOIR = 32

#: Points an evaluation context block holds at least: the recent groups a unit draws negatives
#: and non-fixated partners from, and as many read ahead (``build_units``' buffer, twice).
CONTEXT_POINTS = 2 * PARTNER_WINDOW


def context_blocks(shards: Sequence[dict[str, Any]], keep: Collection[str] | None = None,
                   min_points: int = CONTEXT_POINTS) -> list[list[int]]:
    """Group a split's shards into evaluation context blocks.

    Multi-view units take negatives and partners from the points around them in the stream, so
    evaluation builds units block by block and hands whole blocks to ranks and workers: the
    units of a split then depend on its shards alone, not on how many GPUs and loader workers
    read it. A block is a run of consecutive shards holding at least ``min_points`` fixated
    points (the packer never splits a point across shards); a short tail joins the block
    before it.

    Args:
        shards: Manifest shard entries (``{"index": i, "keys": [...]}``) in shard order.
        keep: Keys that count (a regime subset); ``None``: all.
        min_points: Points per block at least.

    Returns:
        Blocks of shard indices, in order.
    """
    blocks: list[list[int]] = []
    block: list[int] = []
    points: set[str] = set()
    for shard in shards:
        block.append(int(shard["index"]))
        points.update(parse_key(k).point_key for k in shard["keys"]
                      if keep is None or k in keep)
        if len(points) >= min_points:
            blocks.append(block)
            block, points = [], set()
    if block:
        if blocks:
            blocks[-1].extend(block)
        else:
            blocks.append(block)
    return blocks


def point_key_of(sample: dict[str, Any]) -> str:
    """``building__point`` of a view sample (from its ``__key__``)."""
    return parse_key(sample["__key__"]).point_key


def group_by_point(samples: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group consecutive view samples of the same fixated point.

    A view seen again starts a new group: resampled training reads can draw the same shard
    twice in a row, and a unit of one view repeated is no multi-view sample.
    """
    group: list[dict[str, Any]] = []
    seen: set[str] = set()
    for sample in samples:
        key = str(sample["__key__"])
        if group and (point_key_of(group[0]) != point_key_of(sample) or key in seen):
            yield group
            group, seen = [], set()
        group.append(sample)
        seen.add(key)
    if group:
        yield group


def _points_in_view(view: dict[str, Any]) -> set[str]:
    info = view.get("point_info")
    if isinstance(info, dict):
        return {str(p) for p in info.get("nonfixated_points_in_view", [])}
    return set()


def _listed_in_matches(sample: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether ``sample``'s point is visible in ``other`` according to nonfixated_matches."""
    matches = sample.get("nonfixated_matches")
    if not isinstance(matches, dict):
        return False
    ref = parse_key(other["__key__"])
    return any(
        str(v.get("point_uuid")) == ref.point and str(v.get("view_id")) == ref.view
        for v in matches.get("views", [])
    )


def overlapping(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two views of different points of one building make a non-fixated pair.

    The authors paired any two images that see a common point (two entries of one point's
    ``nonfixated_matches`` list, which includes the point's own views): here, one image shows
    the other's fixated point, or both show a third point (``nonfixated_points_in_view``).
    """
    ra, rb = parse_key(a["__key__"]), parse_key(b["__key__"])
    if ra.building != rb.building or ra.point == rb.point:
        return False
    # Each image shows its own point (at its centre) and the points it sees.
    shown_a, shown_b = _points_in_view(a) | {ra.point}, _points_in_view(b) | {rb.point}
    return (not shown_a.isdisjoint(shown_b) or _listed_in_matches(a, b)
            or _listed_in_matches(b, a))


def _with_lookahead(groups: Iterable[Sequence[dict[str, Any]]], size: int
                    ) -> Iterator[tuple[Sequence[dict[str, Any]], list[Sequence[dict[str, Any]]]]]:
    """Each group with the (up to) ``size`` groups that follow it."""
    pending: deque[Sequence[dict[str, Any]]] = deque()
    for group in groups:
        pending.append(group)
        if len(pending) > size:
            current = pending.popleft()
            yield current, list(pending)
    while pending:
        current = pending.popleft()
        yield current, list(pending)


class _Reservoir:
    """A uniform sample of the views that have left the recent window (Algorithm R)."""

    def __init__(self, size: int) -> None:
        self.size, self.seen = size, 0
        self.views: list[dict[str, Any]] = []

    def add(self, group: Sequence[dict[str, Any]], rng: np.random.Generator) -> None:
        for view in group:
            self.seen += 1
            if len(self.views) < self.size:
                self.views.append(view)
            else:
                slot = int(rng.integers(self.seen))
                if slot < self.size:
                    self.views[slot] = view


def build_units(groups: Iterable[Sequence[dict[str, Any]]], tasks: Sequence[str],
                rng_for: Callable[[str], np.random.Generator],
                buffer_size: int = PARTNER_WINDOW) -> Iterator[dict[str, Any]]:
    """Turn point groups into multi-view units.

    Args:
        groups: Consecutive views of one fixated point each (:func:`group_by_point`).
        tasks: The configured tasks; multi-view ones decide which views a unit needs.
        rng_for: Random generator for a group, given its first key (seed it from the key for a
            deterministic evaluation order, from the worker for training).
        buffer_size: Recently seen groups kept for negatives and non-fixated partners; with
            non-fixated pose as many following groups are read ahead for partners too.
            Point matching also draws negatives from a sample of the views read earlier.

    Yields:
        ``{"__key__": "k0+k1...", "views": [...], "roles": {task: (view indices...)},
        "point_match": 0|1}``; groups that cannot serve every configured task are passed over.
    """
    need_views = max([MULTIVIEW_TASKS.get(t, 1) for t in tasks if t != "nonfixated_pose"] + [1])
    recent: deque[Sequence[dict[str, Any]]] = deque()
    earlier = _Reservoir(NEGATIVE_RESERVOIR if "point_matching" in tasks else 0)

    def remember(group: Sequence[dict[str, Any]], rng: np.random.Generator) -> None:
        recent.append(group)
        if len(recent) > buffer_size:
            earlier.add(recent.popleft(), rng)

    # Non-fixated partners may also be points that come later in the building.
    lookahead = buffer_size if "nonfixated_pose" in tasks else 0
    for group, upcoming in _with_lookahead(groups, lookahead):
        rng = rng_for(group[0]["__key__"])
        order = rng.permutation(len(group)) if len(group) > 1 else np.zeros(1, int)
        if len(group) < need_views:
            remember(group, rng)
            continue
        partners: list[dict[str, Any]] = []
        if "nonfixated_pose" in tasks:
            # Lead with the first view (in the group's random order) that has a partner: any
            # view of the point serves, and most groups then yield a pair, not only those
            # whose drawn first view happens to overlap a recent point.
            for lead, index in enumerate(order):
                partners = [v for g in (*recent, *upcoming) for v in g
                            if overlapping(group[int(index)], v)]
                if partners:
                    order = np.concatenate([order[lead:lead + 1], np.delete(order, lead)])
                    break
            if not partners:
                remember(group, rng)
                continue
        views = [group[int(i)] for i in order[:need_views]]
        roles: dict[str, tuple[int, ...]] = {}
        unit: dict[str, Any] = {}
        if "fixated_pose" in tasks:
            roles["fixated_pose"] = (0, 1)
        if "egomotion" in tasks:
            roles["egomotion"] = (0, 1, 2)
        if "nonfixated_pose" in tasks:
            views.append(partners[int(rng.integers(len(partners)))])
            roles["nonfixated_pose"] = (0, len(views) - 1)
        if "point_matching" in tasks:
            point = point_key_of(views[0])
            others = [v for g in recent for v in g if point_key_of(v) != point]
            others += [v for v in earlier.views if point_key_of(v) != point]
            positive = len(group) > 1 and (not others or rng.random() < 0.5)
            if not positive and not others:
                remember(group, rng)
                continue
            if positive:
                roles["point_matching"] = (0, 1)
            else:
                views.append(others[int(rng.integers(len(others)))])
                roles["point_matching"] = (0, len(views) - 1)
            unit["point_match"] = int(positive)
        unit.update({"__key__": "+".join(v["__key__"] for v in views), "views": views,
                     "roles": roles})
        remember(group, rng)
        yield unit
