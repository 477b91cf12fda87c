"""Convert the authors' released 2018 affinities and win rates into shipped affinity tables.

The Taskonomy authors released (StanfordVL/taskonomy, MIT licence, © 2017 Stanford Vision and
Learning Group) three regimes of results as Python-2 pickles, each ``dict[str, float]`` keyed
``"src1__src2__...__target"`` in the authors' task code names, with unsorted source chains:

- ``all_affinities{,_1k,_16k}.pkl``: AHP-normalized affinities (→ ``affinity``);
- ``wins_vs_task{,_1k,_16k}.pkl``: win rates against the target's own network (→ ``quality``);
- ``wins_vs_pixels{,_1k,_16k}.pkl``: win rates against a from-scratch network (→ ``gain``).

:func:`convert_reference` turns them into the :class:`~taskonomy.analysis.affinity_table.
AffinityTable` format under our task names and writes ``paper-2018.csv.gz``,
``paper-2018-1k.csv.gz`` and ``paper-2018-16k.csv.gz``. The candidates ``self`` and ``random`` keep
their baseline names; ``pixels`` rows (present only in the win-rate files) are not candidates of
the affinity tournament and are dropped. Regenerate the package data with::

    python -m taskonomy.analysis.paper_data REFERENCE_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from taskonomy.analysis.affinity_table import (
    BASELINE_CANDIDATES,
    PAPER_DATASETS,
    AffinityTable,
    join_sources,
)
from taskonomy.tasks.specs import CODE_NAMES

#: Data set name → suffix of the authors' pickle files.
PICKLE_SUFFIXES = {"paper-2018": "", "paper-2018-1k": "_1k", "paper-2018-16k": "_16k"}
#: The package folder holding the converted files.
DATA_DIR = Path(__file__).resolve().parent / "data"
_KEY_SEPARATOR = "__"


def read_py2_pickle(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read one of the authors' Python-2 pickles of ``{key: numpy float}`` as plain floats.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not hold a ``dict[str, number]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference pickle {path} does not exist")
    with path.open("rb") as handle:
        # The files were written by Python 2; latin1 maps its byte strings one-to-one.
        data = pickle.load(handle, encoding="latin1")  # noqa: S301 - trusted reference data
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, expected a dict of floats")
    try:
        return {str(key): float(value) for key, value in data.items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} has a non-numeric value: {error}") from error


def our_name(code_name: str) -> str:
    """Our task name for one of the authors' code names (baselines keep their names).

    Raises:
        ValueError: If the code name is unknown (the known ones are listed).
    """
    if code_name in BASELINE_CANDIDATES or code_name == "pixels":
        return code_name
    if code_name not in CODE_NAMES:
        raise ValueError(
            f"unknown task code name {code_name!r}; known: {', '.join(sorted(CODE_NAMES))}"
        )
    return CODE_NAMES[code_name]


def parse_key(key: str) -> tuple[str, str]:
    """Split ``"src1__src2__target"`` into our (``sources`` string, target) names.

    Raises:
        ValueError: On a key with no source part or an unknown code name.
    """
    parts = key.split(_KEY_SEPARATOR)
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"key {key!r} is not of the form 'source1__...__target'")
    target = our_name(parts[-1])
    sources = [our_name(p) for p in parts[:-1]]
    if len(sources) == 1 and sources[0] in BASELINE_CANDIDATES + ("pixels",):
        return sources[0], target
    return join_sources(sources), target


def build_table(affinities: Mapping[str, float], quality: Mapping[str, float],
                gain: Mapping[str, float]) -> AffinityTable:
    """Join the three released dictionaries into one affinity table.

    Every affinity key becomes a row; quality and gain are looked up by the same key (NaN where
    the authors have none). Keys only in the win-rate files (the ``pixels`` baseline, a few
    extra transfers) are not candidates and are left out.
    """
    rows = []
    for key, value in affinities.items():
        sources, target = parse_key(key)
        rows.append(
            {
                "target": target,
                "sources": sources,
                "affinity": value,
                "quality": quality.get(key, float("nan")),
                "gain": gain.get(key, float("nan")),
            }
        )
    return AffinityTable.from_frame(pd.DataFrame(rows))


def convert_dataset(reference_dir: str | os.PathLike[str], name: str) -> AffinityTable:
    """Read one released regime (``paper-2018``, ``paper-2018-1k`` or ``paper-2018-16k``).

    Raises:
        ValueError: If ``name`` is not a known data set, or the affinities file holds keys of
            no transfer (another file in its place); the message names the file.
        FileNotFoundError: If a pickle is missing from ``reference_dir``.
    """
    if name not in PICKLE_SUFFIXES:
        raise ValueError(f"unknown paper data set {name!r}; valid: {', '.join(PICKLE_SUFFIXES)}")
    folder = Path(reference_dir)
    suffix = PICKLE_SUFFIXES[name]
    path = folder / f"all_affinities{suffix}.pkl"
    affinities = read_py2_pickle(path)
    try:
        return build_table(
            affinities,
            read_py2_pickle(folder / f"wins_vs_task{suffix}.pkl"),
            read_py2_pickle(folder / f"wins_vs_pixels{suffix}.pkl"),
        )
    except ValueError as error:
        raise ValueError(f"{path}: {error}; is it the authors' all_affinities file (the "
                         "win-rate files hold 'pixels' keys)?") from error


def convert_reference(reference_dir: str | os.PathLike[str],
                      out_dir: str | os.PathLike[str] = DATA_DIR) -> dict[str, Path]:
    """Convert all three regimes and write them as compressed CSV affinity tables.

    Args:
        reference_dir: Folder with the authors' ``all_affinities*.pkl``, ``wins_vs_task*.pkl``
            and ``wins_vs_pixels*.pkl``.
        out_dir: Where to write ``paper-2018*.csv.gz`` (default: the package data folder).

    Returns:
        Data set name → written path.

    Raises:
        FileNotFoundError: If the reference folder or a pickle is missing.
        ValueError: If the released sums are not AHP-normalized (a corrupt or wrong file).
    """
    folder = Path(reference_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"reference folder {folder} does not exist")
    written = {}
    for name in PICKLE_SUFFIXES:
        table = convert_dataset(folder, name)
        worst = float(table.normalization_error().max())
        if worst > 1e-6:
            raise ValueError(
                f"{name}: affinities of a target sum to 1 ± {worst:.3g}, expected AHP-normalized "
                "values; check that the pickles are the authors' all_affinities files"
            )
        written[name] = table.to_csv(Path(out_dir) / PAPER_DATASETS[name])
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m taskonomy.analysis.paper_data REFERENCE_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m taskonomy.analysis.paper_data",
        description="Convert the authors' 2018 result pickles into shipped affinity tables.",
    )
    parser.add_argument("reference_dir", help="folder with all_affinities*.pkl and wins_*.pkl")
    parser.add_argument("--out", default=str(DATA_DIR), help="output folder (default: package)")
    args = parser.parse_args(argv)
    try:
        written = convert_reference(args.reference_dir, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, path in written.items():
        table = AffinityTable.read_csv(path)
        print(
            f"{name}: {len(table)} rows, {len(table.targets())} targets, "
            f"max order {table.max_order()}, {path.stat().st_size / 1024:.0f} KiB → {path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
