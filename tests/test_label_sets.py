"""The authors' label sets: colorization's ab bins and jigsaw's permutations from files.

A run given ``--data.ab_bins=pts_in_hull.npy`` or ``--data.jigsaw_permutations=...`` makes its
labels over those sets, so that a bin or permutation index means what it meant to the authors
(and their ``prior_factor_in_door.npy`` fits). The files here are the shipped sets reordered:
every label must move with the order.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import taskonomy.experiments as experiments_package
import taskonomy.experiments.train as train
from taskonomy.analysis.records import read_record, record_path
from taskonomy.datamodules import selfsupervised as ss
from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.tasks.build import build_task
from taskonomy.tasks.losses import class_balancing_weights

CONFIGS = Path(experiments_package.__file__).parent / "configs"
RES = 32
#: A fixed reordering of the 313 bins (bin j of the file is shipped bin ORDER[j]).
ORDER = np.random.default_rng(3).permutation(ss.AB_BIN_COUNT)


pytestmark = pytest.mark.usefixtures("offline_one_thread")


@pytest.fixture()
def reordered_bins(tmp_path: Path) -> Path:
    path = tmp_path / "pts_in_hull.npy"
    np.save(path, ss.ab_bins().astype(np.float64)[ORDER])  # the authors' file is float64
    return path


def test_ab_bins_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--data.ab_bins=.*missing.npy: no such file"):
        ss.load_ab_bins(tmp_path / "missing.npy")
    (tmp_path / "page.npy").write_text("<html>not found</html>")
    with pytest.raises(ValueError, match="not a .npy array file") as raised:
        ss.load_ab_bins(tmp_path / "page.npy")
    assert "allow_pickle" not in str(raised.value)  # numpy's advice to load it unsafely
    np.save(tmp_path / "short.npy", ss.ab_bins()[:300])
    with pytest.raises(ValueError, match=r"short.npy: need 313×2 numbers.*\(300, 2\)"):
        ss.load_ab_bins(tmp_path / "short.npy")
    with pytest.raises(ValueError, match=r"transposed: save its .T"):
        ss.load_ab_bins(ss.ab_bins().T)
    twice = ss.ab_bins().copy()
    twice[1] = twice[0]
    with pytest.raises(ValueError, match="distinct"):
        ss.load_ab_bins(twice)
    assert np.array_equal(ss.load_ab_bins(ss.ab_bins().tolist()), ss.ab_bins())


def test_jigsaw_permutation_files_are_checked(tmp_path: Path) -> None:
    shipped = ss.jigsaw_permutations()
    with pytest.raises(ValueError, match="numbered 1..9: subtract 1"):
        ss.load_jigsaw_permutations(shipped + 1)
    broken = shipped.copy()
    broken[5, 0] = broken[5, 1]
    with pytest.raises(ValueError, match="permutation of the cells 0..8$"):
        ss.load_jigsaw_permutations(broken)
    with pytest.raises(ValueError, match="share one permutation"):
        ss.load_jigsaw_permutations(np.concatenate([shipped[:99], shipped[:1]]))
    np.save(tmp_path / "thousand.npy", np.tile(shipped, (10, 1)))
    with pytest.raises(ValueError, match=r"100×9.*\(1000, 9\)"):
        ss.load_jigsaw_permutations(tmp_path / "thousand.npy")


def test_colorization_targets_index_the_given_bins() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    _, shipped = ss.colorization_sample(rgb, 32)
    _, reordered = ss.colorization_sample(rgb, 32, ss.ab_bins()[ORDER])
    assert np.allclose(reordered, shipped[ORDER], atol=1e-6)


def test_jigsaw_tiles_follow_the_given_permutations() -> None:
    image = np.zeros((3, 30, 30), np.float32)
    for cell in range(9):
        top, left = (cell // 3) * 10, (cell % 3) * 10
        image[:, top:top + 10, left:left + 10] = cell
    reversed_set = ss.jigsaw_permutations()[::-1].copy()
    tiles, k = ss.jigsaw_sample(image, np.random.default_rng(1), 6, reversed_set)
    assert [int(round(t.mean())) for t in tiles] == list(reversed_set[k])
    assert list(reversed_set[k]) != list(ss.jigsaw_permutations()[k])


def test_datamodule_reads_the_sets_before_any_run(tiny_shards: Path, reordered_bins: Path,
                                                  tmp_path: Path) -> None:
    def first_batch(**options: Any) -> dict[str, Any]:
        dm = TaskonomyDataModule(tiny_shards, tasks=["colorization"], resolution=RES,
                                 batch_size=2, num_workers=0, **options)
        dm.setup("test")
        return next(iter(dm.test_dataloader()))

    shipped = first_batch()["colorization"]["target"]
    reordered = first_batch(ab_bins=str(reordered_bins))["colorization"]["target"]
    assert torch.allclose(reordered, shipped[:, torch.from_numpy(ORDER)], atol=1e-6)
    with pytest.raises(ValueError, match="--data.jigsaw_permutations=.*no such file"):
        TaskonomyDataModule(tiny_shards, tasks=["jigsaw"],
                            jigsaw_permutations=str(tmp_path / "jigsaw_max_hamming_set.npy"))


def test_colorization_module_draws_and_judges_colours_with_the_data_bins(
        reordered_bins: Path, tiny_shards: Path) -> None:
    module = build_task("colorization", encoder="resnet10_tiny", resolution=RES,
                        decoder_width=0.125, gan=True)
    dm = TaskonomyDataModule(tiny_shards, tasks=["colorization"], ab_bins=str(reordered_bins))
    module._trainer = SimpleNamespace(datamodule=dm, strategy=None)  # what fit attaches
    module.setup("fit")
    target = torch.zeros(1, 313, 2, 2)
    target[:, 7] = 1.0  # every pixel certain of the file's bin 7
    real, _ = module.discriminator_images(torch.zeros(1, 313, 2, 2),
                                          {"target": target, "input": torch.zeros(1, 1, 4, 4)})
    expected = torch.from_numpy(ss.ab_bins()[ORDER[7]])
    assert torch.allclose(real[0, :, 0, 0], expected)


def test_train_cli_counts_the_prior_over_the_given_bins(tiny_shards: Path, reordered_bins: Path,
                                                        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    argv = ["fit", "--config", str(CONFIGS / "cpu.yaml"), "--model.task=colorization",
            f"--model.resolution={RES}", "--model.encoder=resnet10_tiny",
            "--model.decoder_width=0.125", f"--data.root={tiny_shards}",
            f"--data.ab_bins={reordered_bins}", "--data.batch_size=2", "--data.num_workers=0",
            "--data.epoch_size=2", "--data.shuffle_buffer=2", "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--runs_dir={runs}", "--run_id=colour"]
    assert train.main(argv) == 0
    record = read_record(record_path(runs, "colour"))
    assert record.status == "finished"
    assert record.config["data"]["ab_bins"] == str(reordered_bins)

    def prior(**options: Any) -> np.ndarray:
        dm = TaskonomyDataModule(tiny_shards, tasks=["colorization"], resolution=RES,
                                 batch_size=2, num_workers=0, **options)
        counts, _ = train.count_class_labels(dm, "colorization", train.CLASS_COUNT_SAMPLES)
        smoothed = ss.smooth_ab_distribution(counts.numpy(), bins=dm.label_sets.ab_bins)
        return class_balancing_weights(torch.from_numpy(smoothed), train.CLASS_BALANCE_MIX).numpy()

    weights = np.asarray(record.config["model"]["class_weights"])
    assert np.allclose(weights, prior(ab_bins=str(reordered_bins)), rtol=1e-5)
    # Bin j's weight is the shipped bin ORDER[j]'s, up to pixels between two bins (the arg-max
    # of a tie takes the first in the file's order).
    shipped = prior()
    assert np.corrcoef(weights, shipped[ORDER])[0, 1] > 0.99
    assert np.corrcoef(weights, shipped)[0, 1] < 0.5


def test_a_label_set_file_counts_by_its_contents_in_run_ids(tmp_path: Path) -> None:
    from taskonomy.experiments.lightning_cli import _with_label_set_digests, config_hash

    path = tmp_path / "bins.npy"
    np.save(path, ss.ab_bins())
    config = {"data": {"ab_bins": str(path), "root": str(tmp_path)}, "model": {"lr": 1.0}}
    first = config_hash(_with_label_set_digests(config))
    np.save(path, ss.ab_bins()[ORDER])  # edited under the same name
    assert config_hash(_with_label_set_digests(config)) != first
    plain = {"data": {"ab_bins": None}, "model": {"lr": 1.0}}
    assert _with_label_set_digests(plain) == plain  # runs without label files keep their ids


def test_run_id_hashes_ignore_key_order_and_where_a_run_resumes_from() -> None:
    from taskonomy.experiments.lightning_cli import config_hash

    config = {"model": {"lr": 1, "task": "normal"}, "data": {"x": 1}}
    assert config_hash(config) == config_hash({"data": {"x": 1},
                                               "model": {"task": "normal", "lr": 1}})
    assert config_hash({**config, "ckpt_path": "/x/last.ckpt"}) == config_hash(config)
    assert config_hash({**config, "task_overrides_keep": ["model.lr"]}) == config_hash(config)
    assert config_hash({**config, "model": {"lr": 2, "task": "normal"}}) != config_hash(config)
