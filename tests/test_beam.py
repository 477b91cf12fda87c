"""Beam search over higher-order transfers: ranking, combinations, the sweep file, the command."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml

from taskonomy.analysis.affinities import MissingTransferWarning
from taskonomy.analysis.records import CONFIG_FILES_KEY, RunRecord, write_record
from taskonomy.experiments.beam import (
    BeamWarning,
    beam_combinations,
    beam_description,
    beam_sweep,
    rank_sources,
    recorded_configs,
    transfer_value,
)
from taskonomy.experiments.cli import main
from taskonomy.experiments.sweep_files import load_sweep_file
from taskonomy.tasks.transfer_identity import resolve_identity

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["autoencoding", "depth_zbuffer", "edge_texture", "keypoints2d", "normal", "reshading",
           "segment_unsup2d", "principal_curvature"]
KEYS = [f"img{i:03d}" for i in range(60)]


def first_order_records(target: str, strengths: dict[str, float], seed: int = 0
                        ) -> list[RunRecord]:
    """Records whose per-image losses make stronger sources win more often."""
    rng = np.random.default_rng(seed)
    records = []
    for name, strength in strengths.items():
        losses = {k: float(rng.normal(1.0 - strength, 0.05)) for k in KEYS}
        if name in ("random", "self"):
            record = RunRecord(run_id=f"{target}-{name}", role="baseline", target=target,
                               sources=(name,), regime="1k")
        else:
            record = RunRecord(run_id=f"{target}-{name}", role="transfer", target=target,
                               sources=(name,), regime="1k")
        records.append(record.finished(metrics={}, per_image_losses=losses))
    return records


def strengths_for(target: str) -> dict[str, float]:
    # Strength decreases along SOURCES; the target itself is the strongest (and excluded).
    values = {s: 0.9 - 0.08 * i for i, s in enumerate(SOURCES)}
    values[target] = 0.99
    values["random"] = 0.01
    values["self"] = 0.95
    return values


def test_combinations_follow_the_papers_counts() -> None:
    ranked = [f"s{i}" for i in range(10)]
    sets = beam_combinations(ranked, max_order=4)
    by_order = {k: [s for s in sets if len(s) == k] for k in (2, 3, 4)}
    assert [len(by_order[k]) for k in (2, 3, 4)] == [10, 10, 15]
    assert set(by_order[2]) == set(combinations(ranked[:5], 2))
    assert set(by_order[3]) == set(combinations(ranked[:5], 3))
    assert set(by_order[4]) == set(combinations(ranked[:6], 4))
    # Orders >= 5: beam width 1 (prefixes of the ranking).
    longer = beam_combinations(ranked, max_order=6)
    assert tuple(sorted(ranked[:5])) in longer and tuple(sorted(ranked[:6])) in longer
    assert len(longer) == 35 + 2
    # Few sources: what exists is combined.
    assert beam_combinations(["a", "b", "c"], 4) == [("a", "b"), ("a", "c"), ("b", "c"),
                                                     ("a", "b", "c")]
    with pytest.raises(ValueError, match="at least 2"):
        beam_combinations(ranked, max_order=1)
    assert ("a", "b", "c", "d", "e") in beam_combinations(list("abcde"), max_order=5)


def test_ranking_uses_first_order_affinities() -> None:
    records = first_order_records("normal", strengths_for("normal"))
    # A strong higher-order record must not influence the first-order ranking.
    records.append(RunRecord(run_id="normal-hi", role="transfer", target="normal",
                             sources=("edge_texture", "keypoints2d"), regime="1k").finished(
        metrics={}, per_image_losses={k: -5.0 for k in KEYS}))
    ranking = rank_sources(records)["normal"]
    assert "normal" not in ranking and "random" not in ranking and "self" not in ranking
    expected = [s for s in SOURCES if s != "normal"]
    assert ranking == expected
    assert rank_sources(records, include_target=True)["normal"][0] == "normal"


def test_beam_sweep_file_is_valid_and_parsable(tmp_path: Path) -> None:
    records = first_order_records("normal", strengths_for("normal"))
    records += first_order_records("reshading", strengths_for("reshading"), seed=1)
    transfers = {t: beam_combinations(r, 4) for t, r in rank_sources(records).items()}
    assert {t: len(v) for t, v in transfers.items()} == {"normal": 35, "reshading": 35}
    sweep = beam_sweep(transfers, name="hi")
    assert "orders 2-3 from the top-5 sources, order 4 from the top-6" in sweep["description"]
    assert beam_description(2) == "order 2 from the top-5 sources"
    assert beam_description(6).endswith("orders 5-6: the top-k sources")
    path = tmp_path / "hi.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    loaded = load_sweep_file(path)
    assert loaded.method == "grid" and "${args}" in loaded.command
    values = loaded.parameters["model.transfer"]
    assert len(loaded.points()) == 70 == len(values)
    top5 = [s for s in SOURCES if s != "normal"][:5]
    assert transfer_value("normal", top5[:2]) in values
    for value in values:
        identity = resolve_identity(None, None, transfer=value)
        assert identity.role == "transfer" and 2 <= len(identity.sources) <= 4


def test_sweep_beam_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for record in first_order_records("normal", strengths_for("normal")):
        write_record(record, runs)
    out = tmp_path / "sweeps" / "higher_order.yaml"
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "3",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# First-order ranking per target")
    sweep = load_sweep_file(out)
    assert sweep.name == "higher_order" and len(sweep.points()) == 20
    assert "20 higher-order transfers" in capsys.readouterr().out
    # The first-order sweep's overrides carry over to every point.
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "3", "--out", str(out),
                 "--set", "model.resolution=32", "--set", "data.limit=256"]) == 0
    argv = load_sweep_file(out).argv(sweep.points()[0].params)
    assert argv[-3:-1] == ["--model.resolution=32", "--data.limit=256"]
    assert argv[-1].startswith("--model.transfer=normal:")
    assert main(["sweep", "beam", "--runs", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "1",
                 "--out", str(out)]) == 2
    capsys.readouterr()
    # A command the transfer CLI rejects writes nothing; a file of the user's is not replaced.
    before = out.read_text()
    for bad in (["--set", "model.lr=fast"], ["--config", str(tmp_path / "nope.yaml")]):
        assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "3", "--out",
                     str(out), *bad]) == 2
        assert "would not run" in capsys.readouterr().err and out.read_text() == before
    mine = tmp_path / "mine.yaml"
    mine.write_text("method: grid\n")
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "3",
                 "--out", str(mine)]) == 2
    assert "was not written by sweep beam" in " ".join(capsys.readouterr().err.split())
    assert mine.read_text() == "method: grid\n"


def test_sweep_beam_carries_the_first_order_settings_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    setting = {"model": {"resolution": 32, "encoder": "resnet10_tiny"},
               "data": {"limit": 32, "root": "/data/shards"}, "trainer": {"max_epochs": 2}}
    for record in first_order_records("normal", strengths_for("normal")):
        record = RunRecord.from_dict({**record.to_dict(), "config": setting})
        write_record(record, runs)
    out = tmp_path / "higher_order.yaml"
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "2", "--out", str(out),
                 "--set", "trainer.max_epochs=3"]) == 0
    assert "carried over" in capsys.readouterr().out
    sweep = load_sweep_file(out)
    argv = sweep.argv(sweep.points()[0].params)
    # transfer_cpu.yaml says 64 px, 256 images; the user's --set wins over the first order's.
    for argument in ("--model.resolution=32", "--data.limit=32", "--data.root=/data/shards",
                     "--trainer.max_epochs=3"):
        assert argument in argv
    assert "--trainer.max_epochs=2" not in argv
    assert not any(a.startswith("--model.encoder") for a in argv)  # the config's already


def test_sweep_beam_carries_the_settings_of_the_regime_it_ranks(tmp_path: Path) -> None:
    # With 1k and 16k first-order transfers in one folder, the 16k higher orders ran as 1k.
    runs = tmp_path / "runs"
    for regime, limit in (("1k", 32), ("16k", 64)):
        setting = {"data": {"limit": limit}, "model": {"resolution": 32}}
        for record in first_order_records("normal", strengths_for("normal")):
            record = RunRecord.from_dict({**record.to_dict(), "run_id": f"{record.run_id}-{regime}",
                                         "regime": regime, "config": setting})
            write_record(record, runs)
    out = tmp_path / "higher_order.yaml"
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "2", "--out", str(out),
                 "--regime", "16k"]) == 0
    sweep = load_sweep_file(out)
    argv = sweep.argv(sweep.points()[0].params)
    assert "--data.limit=64" in argv and "--model.resolution=32" in argv
    # A setting the ranked transfers disagree on is not carried over.
    mixed = tmp_path / "mixed"
    for k, record in enumerate(first_order_records("normal", strengths_for("normal"))):
        write_record(RunRecord.from_dict({**record.to_dict(), "config": {
            "data": {"limit": 32 + k}, "model": {"resolution": 32}}}), mixed)
    assert main(["sweep", "beam", "--runs", str(mixed), "--max-order", "2", "--out",
                 str(out)]) == 0
    argv = load_sweep_file(out).argv(load_sweep_file(out).points()[0].params)
    assert "--model.resolution=32" in argv
    assert not any(a.startswith("--data.limit=3") for a in argv)


def test_sweep_beam_runs_the_higher_orders_with_the_first_orders_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Paper-setting results turned into CPU-config higher orders: other splits, schedule, device.
    monkeypatch.chdir(ROOT)  # sweeps name configs relative to the project folder
    runs = tmp_path / "runs"
    paper = str(ROOT / "experiments" / "configs" / "transfer_paper.yaml")
    for record in first_order_records("normal", strengths_for("normal")):
        write_record(RunRecord.from_dict({**record.to_dict(),
                                          "config": {CONFIG_FILES_KEY: [paper]}}), runs)
    out = tmp_path / "higher_order.yaml"
    assert main(["sweep", "beam", "--runs", str(runs), "--max-order", "2", "--out",
                 str(out)]) == 0
    command = load_sweep_file(out).command
    assert command[3:5] == ["--config", "experiments/configs/transfer_paper.yaml"]
    # Records from another machine name a config this one lacks: named, with the fix.
    moved = tmp_path / "moved"
    for record in first_order_records("normal", strengths_for("normal")):
        write_record(RunRecord.from_dict({**record.to_dict(),
                                          "config": {CONFIG_FILES_KEY: ["/elsewhere/t.yaml"]}}),
                     moved)
    capsys.readouterr()
    assert main(["sweep", "beam", "--runs", str(moved), "--max-order", "2", "--out",
                 str(out)]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "/elsewhere/t.yaml, not found" in said and "--config" in said
    assert recorded_configs([]) is None
    mixed = first_order_records("normal", strengths_for("normal"))
    mixed[0] = RunRecord.from_dict({**mixed[0].to_dict(), "config": {CONFIG_FILES_KEY: ["a.yaml"]}})
    mixed[1] = RunRecord.from_dict({**mixed[1].to_dict(), "config": {CONFIG_FILES_KEY: ["b.yaml"]}})
    with pytest.raises(ValueError, match=r"different configs \(a.yaml; b.yaml\).*--config"):
        recorded_configs(mixed)
    # A failed transfer's configs do not count; nor do those of another regime than asked.
    failed = [*mixed[:1], RunRecord.from_dict({**mixed[1].to_dict(), "status": "failed"}),
              *mixed[2:]]
    assert recorded_configs(failed) == ["a.yaml"]
    other = [*mixed[:1], RunRecord.from_dict({**mixed[1].to_dict(), "regime": "16k"}),
             *mixed[2:]]
    assert recorded_configs(other, "1k") == ["a.yaml"]


def test_beam_ranks_each_target_on_its_own(tmp_path: Path) -> None:
    records = first_order_records("normal", strengths_for("normal"))
    # A target with a single transfer and no baselines cannot be ranked: left out, not fatal.
    lonely = first_order_records("reshading", {"normal": 0.5})
    with pytest.warns(BeamWarning, match="'reshading' is left out"):
        ranking = rank_sources(records + lonely)
    assert list(ranking) == ["normal"]
    with pytest.raises(ValueError, match="at least two candidates"):
        rank_sources(records + lonely, targets=["reshading"])
    # A first-order transfer missing (here: failed) while others read the source is named.
    dropped = [r for r in records if r.sources != ("depth_zbuffer",)]
    other = first_order_records("reshading", strengths_for("reshading"), seed=1)
    with pytest.warns(MissingTransferWarning, match="depth_zbuffer → normal"):
        assert "depth_zbuffer" not in rank_sources(dropped + other)["normal"]
    # Equal per-image losses tie exactly: by name, not by floating-point noise.
    same = {k: 0.5 for k in KEYS}
    tied = [RunRecord(run_id=f"t-{s}", role="transfer", target="normal", sources=(s,),
                      regime="1k").finished(metrics={}, per_image_losses=same)
            for s in reversed(SOURCES) if s != "normal"]
    assert rank_sources(tied)["normal"] == sorted(s for s in SOURCES if s != "normal")


def test_ranking_warns_once_of_transfers_on_since_retrained_sources() -> None:
    import dataclasses
    import warnings

    from taskonomy.analysis.affinities import StaleSourceWarning

    def reading_old_normal(record: RunRecord) -> RunRecord:
        if record.sources != ("normal",):
            return record
        return dataclasses.replace(record, config={"source_runs": {
            "normal": {"run_id": "normal-old", "fingerprint": "abc"}}})

    tasks = [RunRecord(run_id=run_id, role="task", target="normal", sources=(), regime="full",
                       finished_at=when) for run_id, when in
             (("normal-old", "2026-01-01T00:00:00"), ("normal-new", "2026-02-01T00:00:00"))]
    records = [reading_old_normal(r) for target in ("depth_zbuffer", "reshading")
               for r in first_order_records(target, strengths_for(target))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank_sources([*records, *(dataclasses.replace(t, status="finished") for t in tasks)])
    stale = [str(w.message) for w in caught if issubclass(w.category, StaleSourceWarning)]
    assert len(stale) == 1
    assert "depth_zbuffer-normal" in stale[0] and "reshading-normal" in stale[0]
