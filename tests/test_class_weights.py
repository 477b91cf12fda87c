"""``class_weights: auto``: semantic segmentation's class weights counted from the training labels.

The train CLI resolves ``auto`` before fitting from the run's own training split and stores the
list in the model's hyper-parameters, the checkpoint, the saved config and the run record; a
resumed run takes the weights from its checkpoint instead of counting again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import taskonomy.experiments as experiments_package
import taskonomy.experiments.train as train
from taskonomy.analysis.records import read_record, record_path
from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.datamodules.domains import read_domain_file, write_domain_file
from taskonomy.datamodules.packer import PackConfig, pack
from taskonomy.tasks.build import build_task
from taskonomy.tasks.losses import class_balancing_weights

CONFIGS = Path(experiments_package.__file__).parent / "configs"
RES = 32
TINY = {"encoder": "resnet10_tiny", "resolution": RES, "decoder_width": 0.125,
        "head_width": 0.125}
SPLITS = {"train": ("allensville", "beechwood", "coffeen"), "val": ("corozal",),
          "test": ("darden",)}
#: File values: 0 uncertain, 1 background, 2..17 the 16 object classes (background dominates).
LABEL_PROBABILITIES = np.array([0.05, 0.75] + [0.2 / 16] * 16)


pytestmark = pytest.mark.usefixtures("offline_one_thread")


@pytest.fixture(scope="module")
def semantic_source(building_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny buildings whose semantic labels are mostly background, as in real scenes."""
    root = tmp_path_factory.mktemp("semantic_buildings")
    rng = np.random.default_rng(5)
    for seed, name in enumerate(b for buildings in SPLITS.values() for b in buildings):
        building = building_factory(root, name, seed=seed, res=RES)
        for path in sorted((building / "segment_semantic").glob("*.png")):
            point, view = path.name.split("_")[1], path.name.split("_")[3]
            labels = rng.choice(18, size=(RES, RES), p=LABEL_PROBABILITIES).astype(np.uint8)
            write_domain_file(building, "segment_semantic", point, view, labels)
    return root


@pytest.fixture(scope="module")
def semantic_shards(semantic_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``semantic_source`` packed with 3 views per shard (9 training shards)."""
    root = tmp_path_factory.mktemp("semantic_shards")
    for split, buildings in SPLITS.items():
        pack(PackConfig(source=semantic_source, out=root, split=split, buildings=list(buildings),
                        domains=["rgb", "segment_semantic"], shard_size=3), progress=False)
    return root


def file_counts(source: Path, buildings: tuple[str, ...]) -> np.ndarray:
    """Certain-pixel counts of the 17 classes (label − 1) read straight from the PNG files."""
    counts = np.zeros(17)
    for building in buildings:
        for path in sorted((source / building / "segment_semantic").glob("*.png")):
            labels = read_domain_file(path, "segment_semantic").astype(np.int64)
            counts += np.bincount(labels[labels > 0] - 1, minlength=17)
    return counts


def datamodule(root: Path, **options: Any) -> TaskonomyDataModule:
    return TaskonomyDataModule(root, tasks=["segment_semantic"], resolution=RES, batch_size=4,
                               num_workers=0, **options)


# ---------------------------------------------------------------------------- the module option
def test_auto_on_a_task_without_a_class_weighted_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="no class-weighted loss.*drop class_weights"):
        build_task("normal", **TINY, class_weights="auto")
    with pytest.raises(ValueError, match="'auto'"):
        build_task("segment_semantic", **TINY, class_weights="balanced")  # type: ignore[arg-type]


def test_unresolved_auto_reaching_the_loss_names_the_fix() -> None:
    module = build_task("segment_semantic", **TINY, class_weights="auto")
    assert module.class_weights_pending
    batch = {"target": torch.zeros(2, RES, RES, dtype=torch.long),
             "mask": torch.ones(2, RES, RES)}
    with pytest.raises(ValueError, match="still 'auto'.*set_class_weights"):
        module.compute_loss(torch.zeros(2, 17, RES, RES), batch)


def test_set_class_weights_checks_and_stores_the_list() -> None:
    module = build_task("segment_semantic", **TINY, class_weights="auto")
    with pytest.raises(ValueError, match="17 classes"):
        module.set_class_weights([1.0, 2.0])
    with pytest.raises(ValueError, match="finite and non-negative"):
        module.set_class_weights([math.nan] + [1.0] * 16)
    weights = module.set_class_weights([0.5] + [2.0] * 16)
    assert module.hparams["class_weights"] == weights and not module.class_weights_pending
    assert module.hparams_initial["class_weights"] == weights
    # The weights change the loss: a wrong background pixel costs less than a wrong object one.
    logits = torch.zeros(1, 17, RES, RES)
    logits[:, 5] = 1.0
    background = {"target": torch.zeros(1, RES, RES, dtype=torch.long),
                  "mask": torch.ones(1, RES, RES)}
    unweighted = build_task("segment_semantic", **TINY)
    assert module.compute_loss(logits, background) == pytest.approx(
        0.5 * float(unweighted.compute_loss(logits, background)), rel=1e-5)
    with pytest.raises(ValueError, match="no class-weighted loss"):
        build_task("normal", **TINY).set_class_weights([1.0])


# ---------------------------------------------------------------------------- counting
def test_counts_equal_the_label_files_of_the_train_split(semantic_shards: Path,
                                                         semantic_source: Path) -> None:
    counts, samples = train.count_class_labels(datamodule(semantic_shards), "segment_semantic")
    assert samples == 27  # 3 buildings × 3 points × 3 views: all of them, under the bound
    assert counts.tolist() == file_counts(semantic_source, SPLITS["train"]).tolist()


def test_count_is_bounded_and_spread_over_the_split(semantic_shards: Path) -> None:
    data = datamodule(semantic_shards)
    data.setup("fit")
    chosen = train.count_keys(data, max_samples=4)
    assert sum(len(keys) for keys in chosen.values()) == 4
    shards = [s["index"] for s in data.manifests["train"]["shards"]]
    # Whole shards from both ends of the split's first half and beyond, not only the first two.
    assert len(chosen) == 2 and max(chosen) - min(chosen) >= len(shards) // 3
    assert train.count_keys(data, max_samples=4) == chosen  # deterministic
    counts, samples = train.count_class_labels(data, "segment_semantic", max_samples=4)
    assert samples == 4 and counts.sum() <= 4 * RES * RES
    # A regime subset (`limit`) is counted within that subset.
    subset = datamodule(semantic_shards, limit=5)
    keys = {k for shard in train.count_keys(subset, max_samples=100).values() for k in shard}
    assert keys == set(subset.role_keys("train")) and len(keys) == 5
    with pytest.raises(ValueError, match="max_samples"):
        train.count_keys(data, max_samples=0)


def test_resolve_without_the_datamodule_of_the_suite_is_refused() -> None:
    module = build_task("segment_semantic", **TINY, class_weights="auto")
    with pytest.raises(ValueError, match="pass class_weights as a list"):
        train.resolve_class_weights(module, datamodule=object())


# ---------------------------------------------------------------------------- configs
class _Parsed(Exception):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__("parsed")
        self.config = config


class _Probe(train.TrainCLI):
    def before_instantiate_classes(self) -> None:
        super().before_instantiate_classes()
        raise _Parsed(self.subcommand_config())


def _parsed_model(*args: str) -> dict[str, Any]:
    with pytest.raises(_Parsed) as caught:
        _Probe(train.task_model, TaskonomyDataModule, args=["fit", *args])
    return caught.value.config["model"]


def test_cpu_and_paper_settings_ask_for_auto_weights_for_semantic_segmentation() -> None:
    for name in ("cpu.yaml", "paper.yaml"):
        config = CONFIGS / name
        assert _parsed_model("--config", str(config), "--model.task=segment_semantic",
                             "--data.root=shards")["class_weights"] == "auto", name
    for name in ("cpu_exceptions.yaml", "paper_exceptions.yaml"):
        overrides = train.load_task_overrides(CONFIGS / "tasks" / name)
        assert overrides["segment_semantic"]["model"]["class_weights"] == "auto"
        assert overrides["colorization"]["model"]["class_weights"] == "auto"
        assert all("class_weights" not in sections.get("model", {}) for task, sections in
                   overrides.items() if task not in ("segment_semantic", "colorization"))


# ---------------------------------------------------------------------------- the train CLI
def _command(shards: Path, runs: Path, steps: int, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONFIGS / "cpu.yaml"), "--model.task=segment_semantic",
            f"--model.resolution={RES}", "--model.encoder=resnet10_tiny",
            f"--data.root={shards}", "--data.batch_size=4", "--data.num_workers=0",
            "--data.epoch_size=8", "--data.shuffle_buffer=8", f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=1", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--runs_dir={runs}", "--run_id=semantic", *extra]


def test_train_cli_resolves_auto_into_the_record_checkpoint_and_config(
        semantic_shards: Path, semantic_source: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert train.main(_command(semantic_shards, runs, 2)) == 0
    printed = capsys.readouterr().out
    assert "class weights of segment_semantic (counted on 27 training samples)" in printed

    expected = class_balancing_weights(
        torch.as_tensor(file_counts(semantic_source, SPLITS["train"]))).tolist()
    record = read_record(record_path(runs, "semantic"))
    assert record.status == "finished"
    weights = record.config["model"]["class_weights"]
    assert weights == pytest.approx(expected, rel=1e-6)
    assert all(math.isfinite(w) and w > 0 for w in weights)
    assert weights[0] == min(weights) and weights[0] < 1 < max(weights)  # background lowest
    assert record.checkpoint is not None
    saved = torch.load(record.checkpoint, map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"]["class_weights"] == weights
    saved_config = yaml.safe_load((runs / "semantic" / "config.yaml").read_text())
    assert saved_config["model"]["class_weights"] == weights
    # A module rebuilt from the checkpoint (a `self` baseline) computes the same loss.
    assert train.checkpoint_class_weights(record.checkpoint) == weights

    # Training the run on (one step more) takes the checkpoint's weights: no recount, even if
    # the data changed in between.
    def no_recount(*_: Any, **__: Any) -> Any:
        raise AssertionError("a resumed run must not count the labels again")

    monkeypatch.setattr(train, "count_class_labels", no_recount)
    assert train.main(_command(semantic_shards, runs, 3)) == 0
    printed = capsys.readouterr().out
    assert "from checkpoint" in printed and "already finished" not in printed
    # The same command again finds the run finished with the same (resolved) config.
    assert train.main(_command(semantic_shards, runs, 3)) == 0
    assert "already finished" in capsys.readouterr().out
    resumed = read_record(record_path(runs, "semantic"))
    assert resumed.status == "finished" and resumed.config["ckpt_path"]
    assert resumed.config["model"]["class_weights"] == weights


def test_train_cli_reports_auto_on_a_task_without_class_weights(
        semantic_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _command(semantic_shards, tmp_path / "runs", 1)
    argv[argv.index("--model.task=segment_semantic")] = "--model.task=normal"
    assert train.main([*argv, "--model.class_weights=auto"]) == 2
    assert "no class-weighted loss" in capsys.readouterr().err


def test_labels_outside_the_classes_fail_the_run_before_training(
        building_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, shards = tmp_path / "buildings", tmp_path / "shards"
    for seed, name in enumerate(("allensville", "corozal", "darden")):
        building = building_factory(source, name, points=1, views=3, seed=seed, res=RES)
        if name == "allensville":
            write_domain_file(building, "segment_semantic", 0, 1,
                              np.full((RES, RES), 40, dtype=np.uint8))
    for split, name in (("train", "allensville"), ("val", "corozal"), ("test", "darden")):
        pack(PackConfig(source=source, out=shards, split=split, buildings=[name],
                        domains=["rgb", "segment_semantic"], shard_size=3), progress=False)
    assert train.main(_command(shards, tmp_path / "runs", 1)) == 2
    assert "labels outside 0–16" in capsys.readouterr().err
    record = read_record(record_path(tmp_path / "runs", "semantic"))
    assert record.status == "failed" and "labels outside" in (record.error or "")
    assert not (tmp_path / "runs" / "semantic" / "checkpoints").exists()


# ---------------------------------------------------------------------------- colorization
def test_colorization_prior_boost_weights_each_pixel_by_its_arg_max_bin() -> None:
    module = build_task("colorization", **TINY, class_weights="auto")
    assert module.class_weights_pending
    weights = [1.0] * 313
    weights[7] = 3.0
    module.set_class_weights(weights)
    plain = build_task("colorization", **TINY)
    side = RES // 4
    target = torch.zeros(2, 313, side, side)
    target[:, 7] = 0.6  # arg-max bin 7 (boosted) with some mass on bin 8
    target[:, 8] = 0.4
    target[1, :, : side // 2] = 0.0
    target[1, 20, : side // 2] = 1.0  # half of image 1 in an unboosted bin
    logits = torch.randn(2, 313, side, side)
    boosted = module.compute_loss(logits, {"target": target}, "none")
    ce = plain.compute_loss(logits, {"target": target}, "none")
    assert boosted[0] == pytest.approx(3.0 * float(ce[0]), rel=1e-5)
    ce_top = plain.compute_loss(logits[1:, :, : side // 2], {"target": target[1:, :, : side // 2]})
    ce_bottom = plain.compute_loss(logits[1:, :, side // 2:],
                                   {"target": target[1:, :, side // 2:]})
    assert boosted[1] == pytest.approx((float(ce_top) + 3.0 * float(ce_bottom)) / 2, rel=1e-4)


def test_colorization_counts_the_arg_max_bins_of_the_training_images(
        semantic_shards: Path) -> None:
    counts, samples = train.count_class_labels(datamodule(semantic_shards), "colorization")
    side = RES // 4
    assert samples == 27 and counts.sum() == samples * side * side
    assert (counts > 0).sum() >= 2  # several ab bins occur


def test_colorization_weights_come_from_the_smoothed_ab_distribution(
        semantic_shards: Path) -> None:
    from taskonomy.datamodules.selfsupervised import ab_bins, smooth_ab_distribution

    centres = ab_bins()
    one = np.zeros(313)
    one[100] = 1.0
    smoothed = smooth_ab_distribution(one)
    gaps = np.linalg.norm(centres - centres[100], axis=1)
    neighbour = int(np.argmin(np.where(gaps > 0, gaps, np.inf)))
    assert smoothed.sum() == pytest.approx(1.0)
    ratio = smoothed[neighbour] / smoothed[100]
    assert ratio == pytest.approx(math.exp(-gaps[neighbour] ** 2 / 50))
    with pytest.raises(ValueError, match="313 non-negative"):
        smooth_ab_distribution(np.zeros(313))

    module = build_task("colorization", **TINY, class_weights="auto")
    dm = datamodule(semantic_shards)
    weights, origin = train.resolve_class_weights(module, dm)
    counts, _ = train.count_class_labels(dm, "colorization")
    expected = class_balancing_weights(torch.from_numpy(smooth_ab_distribution(counts.numpy())),
                                       train.CLASS_BALANCE_MIX)
    assert weights == pytest.approx(expected.tolist(), rel=1e-5) and "counted" in origin
    # Smoothing moves mass to the neighbours of common colours, so the boost is milder.
    assert max(weights) < float(class_balancing_weights(counts, train.CLASS_BALANCE_MIX).max())


def test_class_weights_load_from_a_file_like_the_authors_prior(tmp_path: Path) -> None:
    prior = np.asarray([0.54] + [8.0] * 16, dtype=np.float32)  # semseg_prior_factor's shape
    np.save(tmp_path / "semseg_prior_factor.npy", prior)
    module = build_task("segment_semantic", **TINY,
                        class_weights=str(tmp_path / "semseg_prior_factor.npy"))
    # The weights themselves are kept (checkpoints and `self` baselines need no file).
    assert module.hparams["class_weights"] == pytest.approx(prior.tolist())
    assert module.hparams_initial["class_weights"] == pytest.approx(prior.tolist())
    assert not module.class_weights_pending
    (tmp_path / "weights.txt").write_text(" ".join(["1"] * 17))
    assert build_task("segment_semantic", **TINY, class_weights=str(tmp_path / "weights.txt")
                      ).hparams["class_weights"] == [1.0] * 17
    np.save(tmp_path / "short.npy", prior[:5])
    with pytest.raises(ValueError, match="5 values; task 'segment_semantic' has 17 classes"):
        build_task("segment_semantic", **TINY, class_weights=str(tmp_path / "short.npy"))
    with pytest.raises(ValueError, match="missing.npy' is no such file"):
        build_task("segment_semantic", **TINY, class_weights=str(tmp_path / "missing.npy"))
