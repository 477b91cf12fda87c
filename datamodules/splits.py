"""The released building-level splits (tiny / medium / full / fullplus).

The authors' CSVs (``id,train,val,test``, one building a row, old Mac CR line endings) ship
unchanged with the package as ``splits_{name}.csv``. Any CSV of the same form can be read too.
"""

from __future__ import annotations

import os
import zipfile
from importlib import resources
from pathlib import Path

#: The released split files, smallest first; each contains the buildings of the previous one.
SPLIT_NAMES = ("tiny", "medium", "full", "fullplus")
#: The parts of a split, in CSV column order.
PARTS = ("train", "val", "test")


def parse_split_csv(text: str, *, source: str = "split CSV") -> dict[str, list[str]]:
    """Parse a split CSV into ``{"train": [...], "val": [...], "test": [...]}``.

    Accepts CR, CRLF and LF line endings. A building marked in no part is ignored.

    Raises:
        ValueError: the header is not ``id,train,val,test``, a row is malformed, or a building
            is listed twice or in more than one part (a train/test leak).
    """
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines or [c.strip() for c in lines[0].split(",")] != ["id", *PARTS]:
        raise ValueError(
            f"{source}: expected the header 'id,train,val,test' (the released split format), "
            f"got {lines[0] if lines else 'an empty file'!r}"
        )
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    rows: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4 or any(c not in ("0", "1") for c in cells[1:]) or not cells[0]:
            raise ValueError(
                f"{source}, row {number}: expected 'building,0|1,0|1,0|1', got {line!r}"
            )
        if cells[0] in rows:
            raise ValueError(f"{source}, row {number}: building {cells[0]!r} is already listed "
                             f"in row {rows[cells[0]]}; keep one row per building")
        rows[cells[0]] = number
        if cells[1:].count("1") > 1:
            raise ValueError(f"{source}, row {number}: building {cells[0]!r} is in more than "
                             f"one part ({line!r}); a building belongs to one of train, val "
                             "and test, or its images leak between them")
        for part, flag in zip(PARTS, cells[1:], strict=True):
            if flag == "1":
                parts[part].append(cells[0])
    return parts


def split_csv_path(name: str) -> Path:
    """Path of a released split CSV shipped with the package.

    Raises:
        ValueError: ``name`` is not a released split; the message lists them.
    """
    if name not in SPLIT_NAMES:
        raise ValueError(f"unknown split {name!r}; released splits: {', '.join(SPLIT_NAMES)}")
    return Path(str(resources.files("taskonomy.datamodules") / f"splits_{name}.csv"))


def load_split(name_or_path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Buildings per part of a released split (``"tiny"``...) or of a split CSV file."""
    text_name = str(name_or_path)
    path = split_csv_path(text_name) if text_name in SPLIT_NAMES else Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} not found; give a released split ({', '.join(SPLIT_NAMES)}) "
            "or the path of an 'id,train,val,test' CSV"
        )
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            inside = [n for n in archive.namelist()  # not macOS's resource-fork copies
                      if n.endswith(".csv") and not Path(n).name.startswith("._")]
        raise ValueError(
            f"split file {path} is a zip archive (of {', '.join(inside) or 'no CSV'}); unzip it "
            "and pass one of its CSVs, or a released split by name "
            f"({', '.join(SPLIT_NAMES)}: the same files, packaged)"
        )
    return parse_split_csv(path.read_text(errors="replace"), source=str(path))


def split_buildings(name_or_path: str | os.PathLike[str], part: str) -> list[str]:
    """Buildings of one part (``train``/``val``/``test``/``all``) of a split, in CSV order."""
    parts = load_split(name_or_path)
    if part == "all":
        return [b for p in PARTS for b in parts[p]]
    if part not in parts:
        raise ValueError(f"unknown split part {part!r}; valid: {', '.join(PARTS)}, all")
    return parts[part]
