"""W&B sweep files: loading, grid expansion and command lines, without a W&B server.

A sweep file is an ordinary W&B sweep configuration (``method: grid``, ``parameters``, and a
``command`` list with the macros ``${env}``, ``${interpreter}``, ``${program}``, ``${args}``,
``${args_no_hyphens}``, ``${args_json}``). ``wandb sweep FILE`` + ``wandb agent`` run it on GPU
boxes; :mod:`taskonomy.experiments.sweep_executor` runs the same file on one machine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The W&B project of runs and of the sweep files (runs of a sweep go to the sweep's project).
WANDB_PROJECT = "taskonomy"

_MACROS = ("${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}",
           "${args_json}")
#: W&B macros the suite's CLI cannot take (it reads ``--key=value`` arguments: not a JSON file,
#: space-separated values or Hydra overrides).
_UNSUPPORTED_MACROS = ("${args_json_file}", "${args_no_boolean_flags}", "${args_no_equals}",
                       "${args_append_hydra}", "${args_override_hydra}")
_DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
#: Arguments naming label-set files (their contents make the labels): the datamodule's
#: ``LABEL_SET_OPTIONS``, spelled out so that reading a sweep file does not import OpenCV.
LABEL_SET_ARGS = ("--data.ab_bins", "--data.jigsaw_permutations")


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep grid.

    Attributes:
        index: Position in the grid (row-major over the parameters in file order).
        params: Parameter name → value, in file order.
        run_id: A readable, deterministic id of the point (same params → same id).
    """

    index: int
    params: dict[str, Any]
    run_id: str


@dataclass
class SweepFile:
    """A parsed W&B sweep file.

    Attributes:
        path: Where it was read from.
        name: The sweep's ``name`` (or the file stem).
        method: ``grid`` (the only method a local executor can enumerate).
        program: The ``program`` entry (may be empty when ``command`` names the executable).
        command: The command template with W&B macros.
        parameters: Name → list of values (``value`` becomes a one-element list).
        raw: The whole file as loaded.
    """

    path: Path
    name: str
    method: str
    program: str
    command: list[str]
    parameters: dict[str, list[Any]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def points(self, extra: Sequence[str] = ()) -> list[SweepPoint]:
        """Every grid point, in order.

        Args:
            extra: Arguments added to every point (the executor's ``--set``); they, the command
                template and the contents of the config and label-set files named (there, in
                the point's parameters or inside those configs) are part of each run id, so the
                same grid under another config, override or edited file never reuses a run.
        """
        names = list(self.parameters)
        context = self.run_context(extra)
        points = []
        for index, values in enumerate(itertools.product(*(self.parameters[n] for n in names))):
            params = dict(zip(names, values, strict=True))
            # A config or label-set file among the parameters counts by its contents too.
            files = {name: config_digest(value) if name == "config" else file_digest(value)
                     for name, value in params.items()
                     if (name == "config" or f"--{name}" in LABEL_SET_ARGS)
                     and isinstance(value, str) and Path(value).is_file()}
            point_context = (context if not files
                             else f"{context}\n{json.dumps(files, sort_keys=True)}")
            points.append(SweepPoint(index, params, point_run_id(params, point_context)))
        return points

    def run_context(self, extra: Sequence[str] = ()) -> str:
        """What, besides a point's parameters, decides what its run computes.

        The command template without the macros (the program, fixed arguments) with the content
        hash of every config file it names, and the extra arguments with the content hash of the
        config and label-set files they name.
        """
        template = [item for item in self.command if item not in _MACROS]
        # Configs and label sets given as extra arguments (``--set config=F``, ``--set
        # data.ab_bins=F``) count by their contents too: the same name edited is another run.
        digests = {path: config_digest(path) for path in config_paths([*template, *extra])
                   if Path(path).is_file()}
        digests |= {path: file_digest(path) for path in label_set_paths([*template, *extra])
                    if Path(path).is_file()}
        # Order-free: `--set a=1 --set b=2` and `--set b=2 --set a=1` are one run (a stable
        # sort keeps a repeated key's order, where the last value wins).
        if not any(argument.startswith("--config=") for argument in extra):
            # (A --config among them applies where it stands, so its order matters.)
            extra = sorted(extra, key=lambda argument: argument.split("=", 1)[0])
        return json.dumps({"command": [self.program, *template], "configs": digests,
                           "extra": extra})

    def argv(self, params: dict[str, Any], extra: list[str] | None = None) -> list[str]:
        """The command line of one point, with the W&B macros expanded as an agent would.

        A leading ``taskonomy`` executable becomes ``python -m taskonomy.experiments.cli`` of the
        current interpreter, so the command works when the console script is not on ``PATH``.
        ``extra`` arguments (e.g. the local executor's run id) go right after ``${args}``.
        """
        args = [f"--{k}={format_value(v)}" for k, v in params.items()]
        out: list[str] = []
        for item in self.command:
            if item == "${env}":
                continue  # `/usr/bin/env` in W&B; the executor passes the environment itself
            elif item == "${interpreter}":
                out.append(sys.executable)
            elif item == "${program}":
                out.append(self.program)
            elif item == "${args}":
                out.extend(args + list(extra or []))
            elif item == "${args_no_hyphens}":
                out.extend([a[2:] for a in args] + list(extra or []))
            elif item == "${args_json}":
                out.append(json.dumps(params))
            else:
                out.append(item)
        if out and out[0] == "taskonomy":
            out = [sys.executable, "-m", "taskonomy.experiments.cli", *out[1:]]
        return out


def config_paths(argv: Sequence[str]) -> list[str]:
    """The config files a command line names (``--config F``, ``-c F``, ``--config=F``...)."""
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")]
    return named + [a.split("=", 1)[1] for a in argv if a.startswith(("--config=", "-c="))]


def label_set_paths(argv: Sequence[str]) -> list[str]:
    """The label-set files a command line names (``--data.ab_bins F`` or ``=F``, and jigsaw's)."""
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in LABEL_SET_ARGS]
    return named + [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] in LABEL_SET_ARGS
                    and "=" in a]


def config_files(path: str | Path) -> list[Path]:
    """A config file and the YAML files it names (group configs, task overrides), recursively.

    Names are resolved against the folder of the file naming them, as the CLI resolves them.
    """
    found: list[Path] = []

    def strings(data: Any) -> list[str]:
        if isinstance(data, str):
            return [data]
        if isinstance(data, dict):
            return [s for v in data.values() for s in strings(v)]
        if isinstance(data, list):
            return [s for v in data for s in strings(v)]
        return []

    def visit(file: Path) -> None:
        if file in found or not file.is_file():
            return
        found.append(file)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return
        for name in strings(data):
            if name.endswith((".yaml", ".yml")):
                visit((file.parent / name).resolve())

    visit(Path(path).resolve())
    return found


def config_label_sets(files: Sequence[Path]) -> list[Path]:
    """The label-set files (``data.ab_bins``, ``data.jigsaw_permutations``) config files name.

    Names are resolved against the working directory, as the CLI reads them.
    """
    keys = {argument.rsplit(".", 1)[1] for argument in LABEL_SET_ARGS}
    found: list[Path] = []

    def visit(data: Any) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                if key in keys and isinstance(value, str) and Path(value).is_file():
                    found.append(Path(value).resolve())
                else:
                    visit(value)
        elif isinstance(data, list):
            for value in data:
                visit(value)

    for file in files:
        try:
            visit(yaml.safe_load(file.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
    return [file for i, file in enumerate(found) if file not in found[:i]]


def file_digest(path: str | Path) -> str:
    """Content hash of one file."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


def config_digest(path: str | Path) -> str:
    """Content hash of a config file and of every file it names, YAML or label set.

    The YAML files are :func:`config_files`, the label sets :func:`config_label_sets`.
    Editing ``configs/model/cpu.yaml`` changes the digest of ``configs/cpu.yaml``, which names it.
    A config naming no other file keeps the plain content hash (the run ids it gave before).
    """
    files = config_files(path)
    files += [file for file in config_label_sets(files) if file not in files]
    if len(files) == 1:
        return file_digest(files[0])
    root, digest = files[0].parent, hashlib.sha1()
    for file in files:
        digest.update(str(file.relative_to(root) if file.is_relative_to(root) else file.name)
                      .encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def format_value(value: Any) -> str:
    """Format a parameter value for the command line: JSON for lists, dicts and booleans.

    A W&B agent writes Python's ``str`` of the value instead (``['normal']``, ``True``); the CLI
    reads both spellings alike.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def point_run_id(params: dict[str, Any], context: str = "") -> str:
    """A readable deterministic run id: the parameter values, then a short hash.

    The hash covers all params and ``context`` (:meth:`SweepFile.run_context`). Only letters,
    digits and ``_.+-`` appear, so the id is a valid run-record id and folder name.
    """
    payload = json.dumps(params, sort_keys=True, default=str) + (f"\n{context}" if context else "")
    digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
    parts = []
    for value in params.values():
        text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(re.sub(r"[^A-Za-z0-9_.+-]+", "_", text))
    # A run id starts with a letter or digit (a leading "." would hide its folder).
    slug = re.sub(r"^[^A-Za-z0-9]+", "", "-".join(parts)[:80]).rstrip("-_") or "run"
    return f"{slug}-{digest}"


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read and check a W&B sweep file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a grid sweep the executor can run; the message says why.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"sweep file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a sweep file is a YAML mapping with method and parameters")
    method = raw.get("method")
    if method != "grid":
        raise ValueError(
            f"{path}: method {method!r} cannot be enumerated locally; use `method: grid` "
            "(random and bayes sweeps need the W&B server: run them with `wandb agent`)"
        )
    parameters: dict[str, list[Any]] = {}
    for name, spec in (raw.get("parameters") or {}).items():
        if not isinstance(spec, dict) or not ({"values", "value"} & set(spec)):
            raise ValueError(
                f"{path}: parameter {name!r} needs `values: [...]` or `value: ...` for a grid sweep"
            )
        values = spec["values"] if "values" in spec else [spec["value"]]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: parameter {name!r} has an empty or non-list `values`")
        parameters[str(name)] = values
    if not parameters:
        raise ValueError(f"{path}: no parameters to sweep")
    command = raw.get("command", _DEFAULT_COMMAND)
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise ValueError(f"{path}: `command` must be a list of strings")
    unsupported = [m for m in _UNSUPPORTED_MACROS if m in command]
    if unsupported:
        raise ValueError(f"{path}: `command` uses {', '.join(unsupported)}, which the taskonomy "
                         "CLI cannot read; use ${args} (`--key=value` arguments)")
    if "${args}" not in command and "${args_no_hyphens}" not in command:
        raise ValueError(f"{path}: `command` must contain ${{args}} so parameters reach the CLI")
    program = str(raw.get("program", ""))
    if "${program}" in command and not program:
        raise ValueError(f"{path}: `command` uses ${{program}} but the file has no `program`")
    return SweepFile(path, str(raw.get("name", path.stem)), method, program, command,
                     parameters, raw)


def shell_line(argv: list[str]) -> str:
    """A copy-pasteable shell line for an argv."""
    return " ".join(shlex.quote(a) for a in argv)
