"""Source layouts of per-view Taskonomy files: detect them and enumerate their views.

Two layouts are read:

- ``released``: ``{root}/{building}/{domain}/point_{P}_view_{V}_domain_{d}.{ext}`` (the released
  dataset, the authors' sample building and the synthetic buildings of this suite);
- ``omnidata``: ``{root}/{domain}/taskonomy/{building}/point_...`` (the Omnidata download tool).

A view is identified by ``(building, point, view)``; its sample key in shards is
``{building}__{point}__{view}`` (no dots: webdataset splits member names at the first dot).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from taskonomy.datamodules.domains import DOMAINS, get_domain, parse_file_name

#: Layout names accepted by :func:`detect_layout`.
LAYOUTS = ("released", "omnidata")

#: Released buildings known to be corrupt (missing or broken RGB, wrong viewpoints): the set
#: Omnidata's downloader leaves out (its ``forbidden_buildings``; woodbine's files were lost).
#: Packing skips them unless asked not to.
KNOWN_CORRUPT_BUILDINGS = frozenset(
    {"mosquito", "tansboro", "tomkins", "darnestown", "brinnon", "rough", "woodbine"}
)

_KEY_SEP = "__"


@dataclass(frozen=True, order=True)
class ViewRef:
    """One camera view: a building, a fixated point and a view of that point."""

    building: str
    point: str
    view: str

    @property
    def key(self) -> str:
        """The sample key of this view in shards."""
        return make_key(self.building, self.point, self.view)

    @property
    def point_key(self) -> str:
        """Key of the fixated point (shared by all views of the point)."""
        return f"{self.building}{_KEY_SEP}{self.point}"


def make_key(building: str, point: str | int, view: str | int) -> str:
    """The shard sample key of a view.

    Raises:
        ValueError: a part contains ``.`` or the separator ``__``.
    """
    parts = (str(building), str(point), str(view))
    for part in parts:
        if "." in part or _KEY_SEP in part or "/" in part or not part:
            raise ValueError(
                f"cannot make a sample key from {parts}: building, point and view must be "
                f"non-empty and contain no '.', '/' or {_KEY_SEP!r}"
            )
    return _KEY_SEP.join(parts)


def parse_key(key: str) -> ViewRef:
    """Split a sample key back into its view.

    Raises:
        ValueError: ``key`` is not ``building__point__view``.
    """
    parts = key.rsplit(_KEY_SEP, 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{key!r} is not a sample key of the form building__point__view")
    return ViewRef(*parts)


def _sort_token(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


def view_sort_key(ref: ViewRef) -> tuple:
    """Order views by building, then numerically by point and view."""
    return (ref.building, _sort_token(ref.point), _sort_token(ref.view))


@dataclass(frozen=True)
class SourceLayout:
    """A detected source folder.

    Attributes:
        root: The folder.
        kind: One of :data:`LAYOUTS`.
    """

    root: Path
    kind: str

    def domain_dir(self, building: str, domain: str) -> Path:
        """Folder holding one domain of one building."""
        name = get_domain(domain).name
        if self.kind == "released":
            return self.root / building / name
        return self.root / name / "taskonomy" / building

    def file_path(self, ref: ViewRef, domain: str) -> Path:
        """Path of one view's file of ``domain`` (which may not exist)."""
        return self.domain_dir(ref.building, domain) / get_domain(domain).file_name(
            ref.point, ref.view
        )

    def buildings(self) -> list[str]:
        """Buildings present in the source, sorted."""
        if self.kind == "released":
            # Hidden folders are unfinished writes (e.g. a renderer's ``.partial-*``).
            return sorted(
                p.name for p in self.root.iterdir()
                if p.is_dir() and not p.name.startswith(".")
                and any((p / d).is_dir() for d in DOMAINS)
            )
        found: set[str] = set()
        for domain in DOMAINS:
            base = self.root / domain / "taskonomy"
            if base.is_dir():
                found.update(p.name for p in base.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
        return sorted(found)

    def split_files(self) -> list[Path]:
        """Split CSVs inside the source (``train_val_test_*.csv``, which the renderer writes)."""
        return sorted(self.root.glob("train_val_test_*.csv"))

    def domains(self, building: str) -> list[str]:
        """Domains present for a building, in :data:`DOMAINS` order."""
        return [d for d in DOMAINS if self.domain_dir(building, d).is_dir()]

    def views(self, building: str, anchor: str = "rgb") -> list[ViewRef]:
        """Views of a building, enumerated from the files of the ``anchor`` domain, sorted.

        Files that do not follow the released naming are ignored (``.DS_Store``, temp files).
        """
        folder = self.domain_dir(building, anchor)
        if not folder.is_dir():
            return []
        file_domain = get_domain(anchor).file_domain
        refs = []
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    point, view, domain, _ = parse_file_name(entry.name)
                except ValueError:
                    continue
                if domain == file_domain:
                    refs.append(ViewRef(building, point, view))
        return sorted(refs, key=view_sort_key)


def _looks_released(root: Path) -> bool:
    for building in root.iterdir():
        if building.name.startswith("."):
            continue
        if building.is_dir() and any((building / d).is_dir() for d in DOMAINS):
            return True
    return False


def _looks_omnidata(root: Path) -> bool:
    return any((root / d / "taskonomy").is_dir() for d in DOMAINS)


def detect_layout(root: str | os.PathLike[str]) -> SourceLayout:
    """Detect the layout of a source folder.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: the folder is not a recognised layout; the message names the accepted ones.
    """
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"source folder {path} does not exist")
    if _looks_omnidata(path):
        return SourceLayout(path, "omnidata")
    if _looks_released(path):
        return SourceLayout(path, "released")
    raise ValueError(
        f"{path} is not a recognised Taskonomy layout. Accepted layouts: 'released' "
        "({building}/{domain}/point_P_view_V_domain_D.ext, also the synthetic buildings) and "
        "'omnidata' ({domain}/taskonomy/{building}/point_P_view_V_domain_D.ext); domain folders "
        f"must have released names ({', '.join(DOMAINS)})"
    )
