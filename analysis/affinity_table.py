"""The affinity table: one row per (target, candidate) with its AHP affinity, quality and gain.

This is the exchange format between the analysis (win rates → AHP, written by
``taskonomy analyze`` as ``affinities.csv``), the shipped paper data and the taxonomy solver.
A candidate of a target is a set of source tasks (a transfer of order ``len(sources)``) or one of
the baselines ``self`` (the target's own fully supervised network) and ``random`` (a readout on a
random encoder), both of order 0. A source set may contain the target itself: ``t → t`` is a
readout trained on the transfer data on top of t's frozen encoder, a candidate distinct from
``self`` (the authors' data has one per target). The random encoder may also be one member of a
higher-order source set (the authors' beam search included it): it is not a task, needs no
labels, and :meth:`AffinityTable.sources` does not list it.

Columns:

- ``target`` (str): the target task.
- ``sources`` (str): sorted source names joined by ``"+"``, or ``"self"`` / ``"random"``.
- ``order`` (int): number of sources; 0 for the baselines.
- ``affinity`` (float): AHP-normalized affinity; per target it sums to 1 over all candidates.
- ``quality`` (float or NaN): win rate against ``self``.
- ``gain`` (float or NaN): win rate against ``pixels``.
- optional ``affinity_low`` / ``affinity_high`` (float): a confidence interval of the affinity.

Task names are free strings (novel tasks are allowed); :meth:`AffinityTable.unknown_tasks`
lets a loader check them against the registry.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from taskonomy.datamodules.domains import atomic_write_bytes

#: Separator of source names in the ``sources`` column.
SOURCE_SEPARATOR = "+"
#: Candidates of the tournament that are not transfers (order 0).
BASELINE_CANDIDATES = ("self", "random")
#: The label-free random encoder, allowed as one member of a higher-order source set.
RANDOM_SOURCE = "random"
#: Required columns, in file order.
REQUIRED_COLUMNS = ("target", "sources", "order", "affinity", "quality", "gain")
#: Optional columns (a confidence interval of the affinity).
OPTIONAL_COLUMNS = ("affinity_low", "affinity_high")
#: Shipped data sets of the 2018 paper → file name in the package's ``analysis/data`` folder.
PAPER_DATASETS = {
    "paper-2018": "paper-2018.csv.gz",
    "paper-2018-1k": "paper-2018-1k.csv.gz",
    "paper-2018-16k": "paper-2018-16k.csv.gz",
}
#: File name of the affinity table inside a results folder written by ``taskonomy analyze``.
RESULTS_FILE_NAME = "affinities.csv"
_FLOAT_COLUMNS = ("affinity", "quality", "gain", *OPTIONAL_COLUMNS)


def join_sources(sources: Iterable[str]) -> str:
    """The canonical ``sources`` string of a source set: sorted names joined by ``"+"``.

    ``random`` (the random encoder) may be one member of a set of two or more sources.

    Raises:
        ValueError: If the set is empty, repeats a name or a name is not usable.
    """
    names = list(sources)
    if not names:
        raise ValueError("a transfer needs at least one source task")
    for name in names:
        if name == RANDOM_SOURCE and len(names) > 1:
            continue
        _check_task_name(name, "source")
    if len(set(names)) != len(names):
        raise ValueError(f"source set {names} repeats a task; list each source once")
    return SOURCE_SEPARATOR.join(sorted(names))


def split_sources(sources: str) -> tuple[str, ...]:
    """The source tuple of a ``sources`` string; ``()`` for the baselines ``self``/``random``."""
    if sources in BASELINE_CANDIDATES:
        return ()
    return tuple(sources.split(SOURCE_SEPARATOR))


def _check_task_name(name: object, role: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{role} task name {name!r} is empty or not a string")
    if SOURCE_SEPARATOR in name or name != name.strip():
        raise ValueError(
            f"{role} task name {name!r} contains {SOURCE_SEPARATOR!r} or surrounding spaces; "
            "task names must be plain identifiers such as 'depth_zbuffer'"
        )
    if name in BASELINE_CANDIDATES or name == "pixels":
        raise ValueError(f"{name!r} is a baseline, not a task; it cannot be a {role}")


class AffinityTable:
    """A validated, immutable-by-convention table of affinities (see the module docstring).

    Build one with :meth:`from_frame` or :meth:`read_csv`; :attr:`frame` returns a copy of the
    underlying DataFrame.
    """

    def __init__(self, frame: pd.DataFrame, *, _validated: bool = False) -> None:
        if not _validated:
            frame = _validate(frame)
        self._frame = frame

    # ----------------------------------------------------------------------------------- build
    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> AffinityTable:
        """Validate a DataFrame and wrap it.

        ``sources`` strings are canonicalized (names sorted); ``quality``/``gain`` may be missing
        (filled with NaN); ``order`` may be missing or NaN (computed from ``sources``).

        Raises:
            ValueError: On missing columns, wrong types, bad names, an ``order`` that disagrees
                with ``sources``, or duplicate (target, sources) rows.
        """
        return cls(frame)

    @classmethod
    def read_csv(cls, path: str | os.PathLike[str]) -> AffinityTable:
        """Read a table written by :meth:`to_csv` (plain or ``.gz`` compressed).

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If its content is not a valid affinity table.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"affinity table {path} does not exist")
        try:
            frame = pd.read_csv(
                path,
                dtype={"target": str, "sources": str},
                keep_default_na=False,
                na_values={c: ["", "nan", "NaN"] for c in _FLOAT_COLUMNS},
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a readable CSV affinity table: {error}") from error
        try:
            return cls.from_frame(frame)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the table atomically; a ``.gz`` suffix compresses it. Returns the path."""
        path = Path(path)
        text = self._frame.to_csv(index=False, float_format="%.10g")
        data = text.encode()
        if path.suffix == ".gz":
            import gzip

            # mtime=0 keeps the bytes reproducible, so regenerated package data diffs cleanly.
            buffer = io.BytesIO()
            with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
                handle.write(data)
            data = buffer.getvalue()
        atomic_write_bytes(path, data)
        # The temporary file behind the atomic write is private (0600); a table is shared data.
        path.chmod(0o644)
        return path

    # ----------------------------------------------------------------------------------- views
    @property
    def frame(self) -> pd.DataFrame:
        """A copy of the table as a DataFrame."""
        return self._frame.copy()

    def __len__(self) -> int:
        return len(self._frame)

    def __repr__(self) -> str:
        return (
            f"AffinityTable({len(self._frame)} rows, {len(self.targets())} targets, "
            f"max order {self.max_order()})"
        )

    def targets(self) -> list[str]:
        """The target tasks, sorted."""
        return sorted(self._frame["target"].unique())

    def sources(self) -> list[str]:
        """The tasks appearing in any transfer's source set, sorted (baselines excluded)."""
        names: set[str] = set()
        for sources in self._frame.loc[self._frame["order"] > 0, "sources"].unique():
            names.update(split_sources(sources))
        names.discard(RANDOM_SOURCE)
        return sorted(names)

    def supervisable(self) -> list[str]:
        """Tasks the taxonomy may supervise (the paper's S), sorted.

        Every transfer source, and every target with a ``self`` row: it has a network of its
        own, so it belongs to S even if no transfer of the table reads it (e.g. its only
        outgoing transfer, ``t → t``, failed).
        """
        frame = self._frame
        own = frame.loc[frame["sources"] == BASELINE_CANDIDATES[0], "target"].unique()
        return sorted(set(self.sources()) | {str(t) for t in own})

    def tasks(self) -> list[str]:
        """All tasks of the table (targets and sources), sorted."""
        return sorted(set(self.targets()) | set(self.sources()))

    def max_order(self) -> int:
        """The highest transfer order present (0 for a table of baselines only)."""
        return int(self._frame["order"].max()) if len(self._frame) else 0

    def has_confidence_intervals(self) -> bool:
        """Whether the table carries ``affinity_low``/``affinity_high``."""
        return all(c in self._frame.columns for c in OPTIONAL_COLUMNS)

    def candidates(self, target: str) -> pd.DataFrame:
        """The rows of one target, highest affinity first.

        Raises:
            ValueError: If the target is not in the table (the valid targets are listed).
        """
        self._check_known(target, self.targets(), "target")
        rows = self._frame[self._frame["target"] == target]
        return rows.sort_values("affinity", ascending=False, kind="stable").reset_index(drop=True)

    def affinity(self, target: str, sources: str | Iterable[str]) -> float:
        """The affinity of one candidate (``sources`` as a string, baseline name or name list).

        Raises:
            ValueError: If the (sources, target) row does not exist.
        """
        key = sources if isinstance(sources, str) else join_sources(sources)
        rows = self._frame[(self._frame["target"] == target) & (self._frame["sources"] == key)]
        if rows.empty:
            raise ValueError(f"no affinity for ({key} → {target}) in the table")
        return float(rows["affinity"].iloc[0])

    def first_order_matrix(self, value: str = "affinity", *,
                           include_baselines: bool = False) -> pd.DataFrame:
        """A source × target matrix of first-order transfers (NaN where a transfer is missing).

        Args:
            value: The column to spread: ``affinity``, ``quality``, ``gain`` or a CI column.
            include_baselines: Append rows ``self`` and ``random`` with each target's baselines.

        Raises:
            ValueError: If ``value`` is not a float column of the table.
        """
        if value not in _FLOAT_COLUMNS or value not in self._frame.columns:
            present = [c for c in _FLOAT_COLUMNS if c in self._frame.columns]
            raise ValueError(f"unknown value column {value!r}; valid: {present}")
        rows = self._frame[self._frame["order"] == 1]
        matrix = rows.pivot(index="sources", columns="target", values=value)
        row_names = self.sources()
        if include_baselines:
            base = self._frame[self._frame["order"] == 0]
            base_matrix = base.pivot(index="sources", columns="target", values=value)
            matrix = pd.concat([matrix, base_matrix])
            row_names = row_names + list(BASELINE_CANDIDATES)
        matrix = matrix.reindex(index=row_names, columns=self.targets())
        matrix.index.name = "source"
        matrix.columns.name = "target"
        return matrix.astype(float)

    def normalization_error(self) -> pd.Series:
        """Per target, ``|Σ affinity − 1|`` over its candidates (0 for an AHP-normalized table)."""
        sums = self._frame.groupby("target")["affinity"].sum()
        return (sums - 1.0).abs()

    def unknown_tasks(self, known: Iterable[str]) -> list[str]:
        """Tasks of the table that are not in ``known`` (e.g. the registry's task names)."""
        known_set = set(known)
        return [name for name in self.tasks() if name not in known_set]

    # ------------------------------------------------------------------------------ restrict
    def restrict(self, targets: Iterable[str] | None = None,
                 sources: Iterable[str] | None = None,
                 max_order: int | None = None) -> AffinityTable:
        """Keep some targets, transfers whose sources all lie in a set, and orders ≤ a bound.

        Baseline rows (``self``, ``random``) of kept targets are always kept, and the label-free
        random encoder counts as an allowed source. After a restriction the affinities of a
        target no longer need to sum to 1.

        Raises:
            ValueError: On a name that is not a target (or source) of the table, listing the
                valid ones, or a negative ``max_order``.
        """
        frame = self._frame
        if targets is not None:
            target_list = list(targets)
            for name in target_list:
                self._check_known(name, self.targets(), "target")
            frame = frame[frame["target"].isin(target_list)]
        if sources is not None:
            allowed = set(sources)
            for name in allowed:
                self._check_known(name, self.sources(), "source")
            allowed.add(RANDOM_SOURCE)
            keep = [
                order == 0 or set(split_sources(s)) <= allowed
                for s, order in zip(frame["sources"], frame["order"], strict=True)
            ]
            frame = frame[np.asarray(keep, dtype=bool)]
        if max_order is not None:
            if max_order < 0:
                raise ValueError(f"max order must be ≥ 0, got {max_order}")
            frame = frame[frame["order"] <= max_order]
        return AffinityTable(frame.reset_index(drop=True), _validated=True)

    @staticmethod
    def _check_known(name: str, valid: list[str], role: str) -> None:
        if name not in valid:
            raise ValueError(f"unknown {role} {name!r}; valid {role}s: {', '.join(valid)}")



def _row_name(index: int) -> str:
    """A table row as a user finds it: counted from 1, and its line in a CSV with a header."""
    return f"row {index + 1} (line {index + 2} of a CSV file)"

def _validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Check and canonicalize a DataFrame into the table format (returns a new frame)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"an affinity table is built from a pandas DataFrame, got {type(frame)}")
    missing = [c for c in ("target", "sources", "affinity") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"affinity table lacks column(s) {missing}; required: {list(REQUIRED_COLUMNS)}"
        )
    has_low, has_high = (c in frame.columns for c in OPTIONAL_COLUMNS)
    if has_low != has_high:
        raise ValueError("give both affinity_low and affinity_high, or neither")
    out = pd.DataFrame(index=range(len(frame)))
    for column in ("target", "sources"):
        values = frame[column].tolist()
        bad = [v for v in values if not isinstance(v, str) or not v]
        if bad:
            raise ValueError(f"column {column!r} must hold non-empty strings; found {bad[0]!r}")
        out[column] = pd.Series(values, dtype=object)
    for name in set(out["target"]):
        _check_task_name(name, "target")
    canonical = []
    orders = []
    for sources in out["sources"]:
        if sources in BASELINE_CANDIDATES:
            canonical.append(sources)
            orders.append(0)
            continue
        names = sources.split(SOURCE_SEPARATOR)
        canonical.append(join_sources(names))
        orders.append(len(names))
    out["sources"] = canonical
    if "order" in frame.columns:
        given = pd.to_numeric(frame["order"], errors="coerce").to_numpy(dtype=float)
        # A missing order (e.g. rows concatenated from a frame without the column) is computed.
        wrong = ~np.isnan(given) & (given != np.asarray(orders))
        if wrong.any():
            index = int(np.flatnonzero(wrong)[0])
            raise ValueError(
                f"{_row_name(index)}: order {frame['order'].iloc[index]} does not match sources "
                f"{canonical[index]!r} (expected {orders[index]}; baselines have order 0)"
            )
    out["order"] = np.asarray(orders, dtype=np.int64)
    for column in _FLOAT_COLUMNS:
        if column not in frame.columns:
            if column in REQUIRED_COLUMNS:
                out[column] = np.nan
            continue
        try:
            values = pd.to_numeric(frame[column], errors="raise").astype(float).to_numpy()
        except (ValueError, TypeError) as error:
            raise ValueError(f"column {column!r} must be numeric: {error}") from error
        if column == "affinity" and np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{_row_name(row)}: affinity is missing; every candidate needs one")
        finite = values[~np.isnan(values)]
        if column != "affinity" and ((finite < 0) | (finite > 1)).any():
            raise ValueError(f"column {column!r} holds win rates and must lie in [0, 1]")
        if column == "affinity" and (finite < 0).any():
            raise ValueError("affinities must be non-negative (AHP weights)")
        out[column] = values
    duplicated = out.duplicated(subset=["target", "sources"], keep=False)
    if duplicated.any():
        first = out[duplicated].iloc[0]
        raise ValueError(
            f"duplicate rows for ({first['sources']} → {first['target']}); each candidate of a "
            "target must appear once"
        )
    return out.sort_values(["target", "order", "sources"], kind="stable").reset_index(drop=True)


def resolve_affinities_path(spec: str | os.PathLike[str]) -> Path:
    """The CSV file behind an ``--affinities`` value that is not a paper data set name.

    A folder resolves to its ``affinities.csv`` (written by ``taskonomy analyze``).

    Raises:
        FileNotFoundError: If neither a CSV file nor a results folder with one exists there.
    """
    path = Path(spec)
    if path.is_dir():
        candidate = path / RESULTS_FILE_NAME
        if not candidate.is_file():
            raise FileNotFoundError(
                f"{path} has no {RESULTS_FILE_NAME}; run `taskonomy analyze RUNS --out {path}` "
                "first, or pass the CSV itself"
            )
        return candidate
    if not path.is_file():
        raise FileNotFoundError(
            f"affinities {str(spec)!r} is neither a shipped data set "
            f"({', '.join(PAPER_DATASETS)}) nor an existing results folder or CSV file"
        )
    return path


def paper_dataset_path(name: str) -> Path:
    """Path of a shipped paper data set file.

    Raises:
        ValueError: If ``name`` is not a shipped data set (the valid names are listed).
        FileNotFoundError: If the package data file is missing (a broken install).
    """
    if name not in PAPER_DATASETS:
        raise ValueError(f"unknown paper data set {name!r}; valid: {', '.join(PAPER_DATASETS)}")
    resource = resources.files("taskonomy.analysis") / "data" / PAPER_DATASETS[name]
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"package data {path} is missing; regenerate it with "
            "`python -m taskonomy.analysis.paper_data REFERENCE_DIR` or reinstall the package"
        )
    return path


def load_affinities(spec: str | os.PathLike[str]) -> AffinityTable:
    """Load an affinity table from a shipped data set name, a results folder or a CSV file.

    Args:
        spec: ``paper-2018``, ``paper-2018-1k``, ``paper-2018-16k``, a folder holding
            ``affinities.csv``, or a CSV (optionally ``.gz``) file in the table format.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If the file is not a valid affinity table.
    """
    if isinstance(spec, str) and spec in PAPER_DATASETS:
        return AffinityTable.read_csv(paper_dataset_path(spec))
    return AffinityTable.read_csv(resolve_affinities_path(spec))
