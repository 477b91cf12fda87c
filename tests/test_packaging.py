"""The namespace mapping of pyproject.toml covers every package folder."""

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapping = setuptools["package-dir"]
    folders = {
        p.parent.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("__init__.py")
        if not any(part.startswith(".") or part in {"build", "tests"} for part in p.parts)
    }
    mapped_folders = {v: k for k, v in mapping.items()}
    missing = sorted(f for f in folders if f not in mapped_folders)
    assert not missing, f"package folders missing from [tool.setuptools.package-dir]: {missing}"
    assert set(mapping) == listed, "package-dir and packages disagree"
    assert all(name.startswith("taskonomy.") for name in listed)


def test_tests_folder_has_no_init() -> None:
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_installed_modules_come_from_the_repo() -> None:
    import taskonomy.tasks.specs as specs

    assert Path(specs.__file__).resolve() == ROOT / "tasks" / "specs.py"


def test_console_script_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "taskonomy.experiments.cli", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "tasks" in out
