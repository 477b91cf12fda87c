"""The demo's one-page HTML report: every figure with its numbers, taxonomies, sanity, runs.

The page lives at ``OUT/report.html`` and refers to the figures under ``OUT/analysis`` by
relative paths, so the output folder can be zipped and opened anywhere. It is built only from
files on disk (``demo.json``, the analysis tables, figures and taxonomy JSON), so it can be
rebuilt at any time with :func:`write_report`.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from taskonomy.datamodules.domains import atomic_write_bytes

REPORT_NAME = "report.html"

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1250px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
       margin-top: 2em; } h3 { margin-bottom: 0.3em; }
.lead { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #c62828; font-weight: bold; }
.fig { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; margin-bottom: 1em; }
.fig img { max-width: 640px; border: 1px solid #eee; }
.small img { max-width: 420px; }
.note { color: #555; font-size: 14px; max-width: 900px; }
code { background: #f5f5f5; padding: 0 3px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def _table(frame: pd.DataFrame, *, index: bool = False, digits: int = 3,
           left: Iterable[str] = ()) -> str:
    """A small HTML table with numbers rounded to ``digits``."""
    left = set(left)
    frame = frame.reset_index() if index else frame
    head = "".join(f'<th class="{"l" if c in left else ""}">{_e(c)}</th>' for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, value in row.items():
            if isinstance(value, float):
                text = "" if pd.isna(value) else f"{value:.{digits}f}"
            else:
                text = str(value)
            cells.append(f'<td class="{"l" if column in left else ""}">{_e(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _img(out: Path, path: Path, alt: str) -> str:
    rel = os.path.relpath(path, out)
    return f'<a href="{_e(rel)}"><img src="{_e(rel)}" alt="{_e(alt)}"></a>'


def _figure(out: Path, png: Path, alt: str, numbers: str = "", caption: str = "",
            small: bool = False) -> str:
    if not png.is_file():
        return f'<p class="note">({_e(png.name)} was not produced)</p>'
    klass = "fig small" if small else "fig"
    text = f'<p class="note">{caption}</p>' if caption else ""
    return f'{text}<div class="{klass}">{_img(out, png, alt)}<div>{numbers}</div></div>'


def _matrix(path: Path, digits: int = 3) -> str:
    frame = _read_csv(path)
    if frame is None:
        return ""
    first = frame.columns[0]
    if str(first).startswith("Unnamed"):  # a matrix saved with an unnamed index
        frame = frame.rename(columns={first: ""})
        first = ""
    return _table(frame, digits=digits, left=[first])


def _settings_section(state: dict[str, Any]) -> str:
    settings = state.get("settings", {})
    stages = state.get("stages", {})
    rows = [{"setting": k, "value": ", ".join(v) if isinstance(v, list) else v}
            for k, v in settings.items()]
    stage_rows = [{"stage": name, "seconds (all invocations)": info.get("seconds"),
                   "last invocation": info.get("last"),
                   "last seconds": info.get("last_seconds")}
                  for name, info in stages.items()]
    total = state.get("total_seconds")
    parts = ["<h2>Settings and times</h2>", '<div class="fig">',
             _table(pd.DataFrame(rows), left=["setting", "value"]) if rows else "",
             _table(pd.DataFrame(stage_rows), digits=1, left=["stage", "last invocation"])
             if stage_rows else "", "</div>"]
    if total is not None:
        parts.append(f'<p class="note">Work time over all invocations: <b>{total / 60:.1f} '
                     f'min</b> ({total:.0f} s). A rerun skips every finished stage and run.</p>')
    return "".join(parts)


def _sanity_section(state: dict[str, Any]) -> str:
    checks = state.get("sanity") or []
    if not checks:
        return "<h2>Sanity of the science</h2><p>No sanity checks ran.</p>"
    rows = []
    for check in checks:
        mark = ('<span class="pass">PASS</span>' if check["passed"]
                else '<span class="fail">FAIL</span>')
        rows.append(f'<tr><td class="l">{mark}</td><td class="l">{_e(check["name"])}</td>'
                    f'<td class="l">{_e(check["detail"])}</td></tr>')
    return ("<h2>Sanity of the science</h2>"
            '<p class="note">Facts of the authors\' results that any sensible training should '
            "reproduce, checked where the task set holds their tasks: each task network beats "
            "the best constant prediction of its task; the two depth tasks rank each other "
            "among their top 2 sources, as do normals and shading; every target's best source "
            "beats a random encoder. Rankings use the first-order AHP affinities; "
            "&ldquo;beats&rdquo; means significantly, by a sign test over the test buildings."
            "</p>"
            '<table><tr><th class="l">verdict</th><th class="l">check</th>'
            f'<th class="l">evidence</th></tr>{"".join(rows)}</table>')


def _runs_section(out: Path, state: dict[str, Any]) -> str:
    records = _read_csv(out / "analysis" / "records.csv")
    parts = ["<h2>Runs</h2>"]
    counts = state.get("runs") or {}
    if counts:
        rows = [{"sweep": name, **c} for name, c in counts.items()]
        parts.append('<p class="note">Per sweep file of this invocation (under '
                     '<code>sweeps/</code>; each point is one process; finished points of '
                     "earlier invocations count as skipped):</p>")
        parts.append(_table(pd.DataFrame(rows).fillna(0), digits=0, left=["sweep"]))
    if records is not None and "role" in records:
        by_role = records.groupby("role").size().rename("finished records").reset_index()
        parts.append(_table(by_role, left=["role"]))
    return "".join(parts)


def _best_section(out: Path) -> str:
    candidates = _read_csv(out / "analysis" / "candidates.csv")
    if candidates is None or candidates.empty:
        return ""
    rows = []
    for target, group in candidates.groupby("target", sort=False):
        transfers = group[~group["candidate"].isin(["self", "random", "pixels"])]
        ranked = transfers.sort_values("affinity", ascending=False)
        random = group[group["candidate"] == "random"]
        rows.append({
            "target": target,
            "best sources (any order)": ranked.iloc[0]["candidate"] if len(ranked) else "",
            "affinity": ranked.iloc[0]["affinity"] if len(ranked) else float("nan"),
            "quality (vs self)": ranked.iloc[0]["quality"] if len(ranked) else float("nan"),
            "gain (vs pixels)": ranked.iloc[0]["gain"] if len(ranked) else float("nan"),
            "2nd": ranked.iloc[1]["candidate"] if len(ranked) > 1 else "",
            "3rd": ranked.iloc[2]["candidate"] if len(ranked) > 2 else "",
            "random's affinity": random.iloc[0]["affinity"] if len(random) else float("nan"),
            "test images": int(group["n_images"].iloc[0]) if "n_images" in group else "",
        })
    return ("<h2>Best sources per target</h2>"
            '<p class="note">Candidates of a target are ranked by their AHP affinity in its '
            "tournament (every transfer, <code>random</code> and <code>self</code> compared "
            "image by image on the test set). Quality is the win rate against the target's own "
            "network, gain the win rate against the <code>pixels</code> network trained on the "
            "same little data.</p>"
            + _table(pd.DataFrame(rows), left=["target", "best sources (any order)", "2nd", "3rd"]))


def _taxonomy_section(out: Path) -> str:
    folder = out / "analysis" / "taxonomies"
    files = sorted(folder.glob("budget_*.json"), key=lambda p: float(p.stem.split("_")[1]))
    if not files:
        return ""
    parts = ["<h2>Taxonomies</h2>",
             '<p class="note">The binary integer program picks which tasks to supervise '
             "(budget = number of task networks, each task costing 1) and one source set per "
             "target, maximizing the summed affinity. Drawn for a few budgets that choose "
             "different tasks to supervise (a larger budget is not always spent); the JSON of "
             "every budget is under <code>analysis/taxonomies/</code>.</p>"]
    sweep = _read_csv(folder / "sweep.csv")
    curve = out / "analysis" / "figures" / "budget_curve.png"
    if sweep is not None:
        keep = [c for c in ("budget", "status", "objective", "mean_affinity", "mean_quality",
                            "mean_gain", "supervised") if c in sweep.columns]
        parts.append(_figure(out, curve, "collective performance vs budget",
                             _table(sweep[keep], left=["status", "supervised"]),
                             "Collective performance of the chosen edges against the budget."))
    for path in files:
        png = path.with_suffix(".png")
        if not png.is_file():
            continue
        record = json.loads(path.read_text())
        edges = pd.DataFrame([{"target": e["target"], "from": e["label"],
                               "order": e.get("order"), "affinity": e.get("affinity"),
                               "quality": e.get("quality"), "gain": e.get("gain")}
                              for e in record.get("edges", [])])
        supervised = ", ".join(record.get("supervised", []))
        numbers = (f"<p>budget <b>{record.get('budget')}</b>, status {_e(record.get('status'))}, "
                   f"objective {record.get('objective', float('nan')):.3f}<br>supervised: "
                   f"<b>{_e(supervised)}</b></p>"
                   + (_table(edges, left=["target", "from"]) if not edges.empty else ""))
        parts.append(f"<h3>Budget {record.get('budget')}</h3>")
        parts.append(_figure(out, png, f"taxonomy at budget {record.get('budget')}", numbers))
        quality_gain = folder / f"{path.stem}_quality_gain.png"
        if quality_gain.is_file():
            parts.append(_figure(out, quality_gain,
                                 f"quality and gain at budget {record.get('budget')}",
                                 caption="Quality and gain of the edges this taxonomy chose.",
                                 small=True))
    return "".join(parts)


def _figures_section(out: Path) -> str:
    figures = out / "analysis" / "figures"
    parts = ["<h2>Affinities</h2>"]
    parts.append(_figure(
        out, figures / "affinity_after_ahp.png", "affinity after AHP",
        _matrix(figures / "affinity_after_ahp.csv"),
        "Affinities after AHP normalization (rows: sources, columns: targets; each target's "
        "candidates, baselines included, sum to 1)."))
    parts.append(_figure(
        out, figures / "affinity_before_ahp.png", "affinity before AHP",
        _matrix(figures / "affinity_before_ahp.csv"),
        "Before AHP: the raw win rate of each transfer against the target's own network "
        "(its quality)."))
    parts.append(_figure(
        out, figures / "quality_gain.png", "quality and gain",
        _matrix(figures / "quality_gain.csv"),
        "Quality (win rate vs self) and gain (win rate vs pixels) of each target's best "
        "transfer."))
    tree = figures / "similarity_tree.png"
    if tree.is_file():
        parts.append(_figure(out, tree, "task similarity tree", "",
                             "Agglomerative clustering of the targets' affinity columns: tasks "
                             "that are read out well from the same sources sit together.",
                             small=True))
    else:
        from taskonomy.analysis.figures import MIN_TREE_TARGETS

        parts.append(f"<p>No task similarity tree: it needs at least {MIN_TREE_TARGETS} "
                     "targets.</p>")
    return "".join(parts)


def _winrates_section(out: Path) -> str:
    folder = out / "analysis" / "winrates"
    pngs = sorted(folder.glob("*.png"))
    if not pngs:
        return ""
    parts = ["<h2>Tournaments</h2>",
             '<p class="note">Per target: the share of test images on which the row candidate '
             "has a lower loss than the column candidate.</p>"]
    for png in pngs:
        parts.append(f"<h3>{_e(png.stem)}</h3>")
        parts.append(_figure(out, png, f"win rates into {png.stem}",
                             _matrix(png.with_suffix(".csv"), digits=2), small=True))
    return "".join(parts)


def render_report(out: str | os.PathLike[str]) -> str:
    """The report's HTML for a demo output folder (figures referenced relatively).

    Raises:
        FileNotFoundError: The folder has no ``demo.json`` (not a demo output folder).
    """
    root = Path(out)
    state_path = root / "demo.json"
    if not state_path.is_file():
        raise FileNotFoundError(f"{state_path} not found; run `taskonomy demo --out {root}` "
                                "first")
    state = json.loads(state_path.read_text())
    tasks = state.get("settings", {}).get("tasks", [])
    body = [
        "<h1>Taskonomy demo</h1>",
        f'<p class="lead">{len(tasks)} tasks on synthetic indoor scenes: '
        f"{_e(', '.join(tasks))}. Task networks, every first-order transfer with the "
        "<code>pixels</code>, <code>random</code> and <code>self</code> baselines, an order-2 "
        "beam, win rates, AHP affinities and taxonomies.</p>",
        _sanity_section(state),
        _best_section(root),
        _figures_section(root),
        _taxonomy_section(root),
        _winrates_section(root),
        _runs_section(root, state),
        _settings_section(state),
        '<p class="note">Rebuild this page with <code>taskonomy demo --out FOLDER</code> '
        "(it skips every finished stage). All numbers are also in CSV/JSON beside the figures "
        "under <code>analysis/</code>.</p>",
    ]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Taskonomy demo</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_report(out: str | os.PathLike[str]) -> Path:
    """Write ``OUT/report.html`` atomically and return its path."""
    path = Path(out) / REPORT_NAME
    atomic_write_bytes(path, render_report(out).encode("utf-8"))
    return path
