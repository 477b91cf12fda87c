"""``synthesize``: a folder of synthetic buildings in the released layout, plus a split file.

Output folder::

    OUT/synth_manifest.json          settings and building list (marks the folder as ours)
    OUT/train_val_test_synth.csv     released split format: id,train,val,test (0/1 flags)
    OUT/{building}/{domain}/point_{P}_view_{V}_domain_{domain}.{png,npy,json}

Resumable: each building is written into ``OUT/.partial-{building}`` and renamed into place when
complete, so a building folder under its final name is always whole; a rerun skips complete
buildings and restarts partial ones. A folder holding anything else is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from taskonomy.datamodules.domains import atomic_write_bytes
from taskonomy.datamodules.worker_pool import worker_pool

MANIFEST = "synth_manifest.json"
SPLIT_FILE = "train_val_test_synth.csv"
SPLITS = ("train", "val", "test")
_PARTIAL = ".partial-"
_FORMAT = 1


def default_building_names(count: int) -> list[str]:
    """``synth000``, ``synth001``, ...: names of generated buildings."""
    return [f"synth{index:03d}" for index in range(count)]


def assign_splits(names: Sequence[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
                  ) -> dict[str, str]:
    """Building → split, disjoint, in name order; every split gets one when there are ≥ 3."""
    count = len(names)
    val = max(1, round(count * fractions[1])) if count >= 3 else 0
    test = max(1, round(count * fractions[2])) if count >= 3 else 0
    if count == 2:
        test = 1
    train = count - val - test
    split_of = {}
    for index, name in enumerate(names):
        split_of[name] = "train" if index < train else "val" if index < train + val else "test"
    return split_of


def split_csv(split_of: Mapping[str, str]) -> str:
    """The released split CSV (``id,train,val,test`` with 0/1 flags) for an assignment."""
    lines = ["id,train,val,test"]
    for name, split in split_of.items():
        lines.append(",".join([name, *("1" if split == s else "0" for s in SPLITS)]))
    return "\n".join(lines) + "\n"


def read_split_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a released-format split CSV into building → split (old Mac line ends accepted)."""
    text = Path(path).read_text().replace("\r\n", "\n").replace("\r", "\n")
    rows = [line.split(",") for line in text.strip().split("\n")]
    if not rows or [c.strip() for c in rows[0]] != ["id", *SPLITS]:
        raise ValueError(f"{path}: not a split file (expected the header id,train,val,test)")
    result = {}
    for row in rows[1:]:
        flags = [int(v) for v in row[1:4]]
        if sum(flags) != 1:
            raise ValueError(f"{path}: building {row[0]!r} must be in exactly one split")
        result[row[0].strip()] = SPLITS[flags.index(1)]
    return result


def _validate(buildings: int | Sequence[str], resolution: int, points: int, views: int,
              workers: int, split_names: Mapping[str, str] | None) -> tuple[list[str], dict]:
    if isinstance(buildings, int):
        if buildings < 1:
            raise ValueError(f"--buildings must be at least 1, got {buildings}")
        names = default_building_names(buildings)
    else:
        names = [str(b) for b in buildings]
        if not names:
            raise ValueError("give at least one building name")
        bad = [n for n in names if not n or "/" in n or n.startswith(".") or n != n.strip()
               or n in (MANIFEST, SPLIT_FILE)]
        if bad or len(set(names)) != len(names):
            raise ValueError(
                f"building names must be unique plain folder names, got {bad or names}"
            )
    if resolution < 16 or resolution > 2048:
        raise ValueError(f"--resolution must be between 16 and 2048 pixels, got {resolution}")
    if points < 1 or views < 1:
        raise ValueError(f"--points and --views must be at least 1, got {points} and {views}")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if split_names is None:
        split_of = assign_splits(names)
    else:
        missing = [n for n in names if n not in split_names]
        unknown = sorted({s for s in split_names.values() if s not in SPLITS})
        if missing or unknown:
            raise ValueError(
                f"split_names must give each building one of {', '.join(SPLITS)}; "
                f"missing: {missing}, unknown splits: {unknown}"
            )
        split_of = {n: split_names[n] for n in names}
    return names, split_of


def _prepare_output(out: Path, manifest: dict[str, Any]) -> None:
    """Create ``out`` or check it holds only our buildings made with the same settings."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    manifest_path = out / MANIFEST
    if entries and not manifest_path.exists():
        raise FileExistsError(
            f"{out} already holds files that are not synthetic buildings ({', '.join(entries[:5])}"
            f"{', ...' if len(entries) > 5 else ''}); give an empty or new folder"
        )
    if manifest_path.exists():
        try:
            existing = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{manifest_path} is unreadable ({error}); remove the folder"
            ) from None
        differing = [k for k in manifest if existing.get(k) != manifest[k]]
        if differing:
            raise ValueError(
                f"{out} was made with other settings ({', '.join(differing)} differ); "
                "rerun with the same settings to resume, or give a new folder"
            )
        allowed = {MANIFEST, SPLIT_FILE, *manifest["buildings"]}
        foreign = [e for e in entries if e not in allowed and not e.startswith(_PARTIAL)
                   and not e.startswith(f".{MANIFEST}")]
        if foreign:
            raise FileExistsError(
                f"{out} holds entries that are not its buildings: {', '.join(foreign[:5])}; "
                "remove them or give a new folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())


def _build_one(out: str, name: str, seed: int, resolution: int, points: int, views: int,
               on_view: Callable[[], None] | None = None) -> int:
    """Write one building through a partial folder and rename it into place."""
    from taskonomy.datamodules.synth.building import write_building

    final = Path(out) / name
    partial = Path(out) / f"{_PARTIAL}{name}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    count = write_building(partial, name, seed, resolution, points, views, on_view)
    os.replace(partial, final)
    return count


def synthesize(out: str | os.PathLike[str], buildings: int | Sequence[str] = 3,
               resolution: int = 256, seed: int = 0, workers: int = 1, points: int = 4,
               views: int = 3, split_names: Mapping[str, str] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Write synthetic buildings in the released Taskonomy layout.

    Args:
        out: Output folder (created; must be empty, new, or an earlier run of the same settings).
        buildings: Number of buildings (named ``synth000``...), or explicit building names.
        resolution: Image side in pixels.
        seed: Master seed; the same seed and settings give the same bytes.
        workers: Worker processes (buildings are independent; the output does not depend on it).
        points: Fixated points per building.
        views: Views per fixated point.
        split_names: Building → ``train``/``val``/``test``; by default 70/15/15 in name order.
        progress: Show a progress bar.

    Returns:
        The manifest: settings, building names and splits.

    Raises:
        ValueError: bad settings, or the folder was made with other settings.
        FileExistsError: the folder holds something other than our buildings.
    """
    names, split_of = _validate(buildings, resolution, points, views, workers, split_names)
    out = Path(out)
    manifest = {
        "generator": "taskonomy.datamodules.synth", "format": _FORMAT, "seed": int(seed),
        "resolution": int(resolution), "points": int(points), "views": int(views),
        "buildings": names, "splits": split_of,
    }
    _prepare_output(out, manifest)
    atomic_write_bytes(out / SPLIT_FILE, split_csv(split_of).encode())
    todo = [n for n in names if not (out / n).is_dir()]
    from rich.progress import Progress

    per_building = points * views
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task("views", total=len(names) * per_building,
                            completed=(len(names) - len(todo)) * per_building)
        if workers == 1 or len(todo) <= 1:
            for name in todo:
                _build_one(str(out), name, seed, resolution, points, views,
                           lambda: bar.advance(task))
        else:  # workers report whole buildings
            with worker_pool(min(workers, len(todo)), get_context("spawn")) as pool:
                futures = [pool.submit(_build_one, str(out), n, seed, resolution, points, views)
                           for n in todo]
                for future in as_completed(futures):
                    future.result()
                    bar.advance(task, per_building)
    return manifest
