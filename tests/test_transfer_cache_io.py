"""Cached transfers read no images: the cache is filled once, then only label shards are opened.

On tiny real shards (the session's packed buildings): cached and uncached transfers give the
same per-image test losses (single- and multi-view targets), a cached transfer never opens an
``rgb`` shard once the cache holds its samples (shards are watched and then renamed away), and
the prediction panels still show the input images.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

import taskonomy.datamodules.datamodule as datamodule_module
from taskonomy.datamodules.datamodule import TaskonomyDataModule, labels_need_rgb
from taskonomy.experiments.transfer import TransferPanels
from taskonomy.tasks.build import build_task
from taskonomy.tasks.source_runs import register_task_run
from taskonomy.tasks.transfer import TransferTask

RES = 32
#: The tolerance of the cache's equivalence tests (tests/test_representation_cache.py).
RTOL, ATOL = 1e-4, 1e-6
#: Denoising's encoder reads a noisy copy of each image: the cache must give it the same one.
SOURCES = ["reshading", "denoising"]


@pytest.fixture(scope="module")
def source_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    for task in SOURCES:
        register_task_run(build_task(task, encoder="resnet10_tiny", resolution=RES,
                                     decoder_width=0.25), runs)
    return runs


@pytest.fixture()
def shards(tiny_shards: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny shards (a test renames some of them)."""
    return Path(shutil.copytree(tiny_shards, tmp_path / "shards"))


@pytest.fixture()
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Domains of every shard the datamodule opens (in this process: no loader workers)."""
    seen: list[str] = []
    original = datamodule_module.iter_aligned_shard

    def watched(locations: dict[str, str]) -> Iterator[dict[str, Any]]:
        seen.extend(locations)
        return original(locations)

    monkeypatch.setattr(datamodule_module, "iter_aligned_shard", watched)
    return seen


def run(runs: Path, shards: Path, target: str, cache: Path | None, *, limit: int | None = 8,
        callbacks: list[L.Callback] | None = None, root_dir: Path | None = None
        ) -> tuple[TransferTask, dict[str, float]]:
    """Fit a transfer for a few steps (one validation batch per epoch), then test it."""
    L.seed_everything(0)
    model = TransferTask(target=target, sources=SOURCES, task_runs=str(runs),
                         cache_dir=str(cache) if cache else None, encoder="resnet10_tiny",
                         resolution=RES, decoder_width=0.25, head_width=0.25, lr=1e-3,
                         lr_milestone=None)
    data = TaskonomyDataModule(shards, tasks=[target], resolution=RES, batch_size=4,
                               num_workers=0, limit=limit, seed=0, shuffle_buffer=8)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
                        callbacks=callbacks or [], default_root_dir=root_dir)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    assert not data.cached_inputs  # teardown gives the datamodule its images back
    return model, dict(model.test_per_image_losses)


def assert_same_losses(cached: dict[str, float], uncached: dict[str, float]) -> None:
    assert cached.keys() == uncached.keys() and len(cached) > 0
    for key, value in uncached.items():
        assert cached[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key


def test_cached_transfers_read_no_images_once_filled(source_runs: Path, shards: Path,
                                                     tmp_path: Path, opened: list[str]) -> None:
    _, uncached = run(source_runs, shards, "normal", None)
    assert opened.count("rgb") > 0 and "normal" in opened
    opened.clear()

    cache = tmp_path / "cache"
    model, cached = run(source_runs, shards, "normal", cache, callbacks=[TransferPanels()],
                        root_dir=tmp_path / "run")
    assert_same_losses(cached, uncached)
    # The first target pays: one image-only pass per split (train subset, val, test), every
    # image encoded once per source; training, validation and test opened only label shards.
    assert model.cache is not None
    assert model.cache.misses == 2 * (8 + 18 + 18)
    label_only = [d for d in opened if d != "rgb"]
    assert set(label_only) == {"normal", "depth_zbuffer"}
    rgb_passes = len(opened) - len(label_only)
    assert rgb_passes <= len(list(shards.glob("*/rgb/*.tar")))
    # The panels still show the validation images (read once for the few samples shown).
    panels = sorted((tmp_path / "run" / "panels").glob("normal_step*.png"))
    assert len(panels) == 2

    # The next target of the same sources needs no image at all: with every rgb shard renamed
    # away it trains and tests, encodes nothing, and opens label shards only.
    for tar in shards.glob("*/rgb/*.tar"):
        tar.rename(tar.with_suffix(".moved"))
    opened.clear()
    other, losses = run(source_runs, shards, "depth_zbuffer", cache)
    assert other.cache is not None and other.cache.misses == 0 and other.cache.hits > 0
    assert "rgb" not in opened and set(opened) == {"depth_zbuffer"}
    assert len(losses) == 18 and all(np.isfinite(v) for v in losses.values())


def test_multi_view_target_uses_per_view_keys(source_runs: Path, shards: Path, tmp_path: Path,
                                              opened: list[str]) -> None:
    _, uncached = run(source_runs, shards, "fixated_pose", None, limit=None)
    opened.clear()
    cache = tmp_path / "cache"
    model, cached = run(source_runs, shards, "fixated_pose", cache, limit=None,
                        callbacks=[TransferPanels()], root_dir=tmp_path / "run")
    assert_same_losses(cached, uncached)
    assert all("+" in key for key in cached)  # units of two views
    assert len(list((tmp_path / "run" / "panels").glob("fixated_pose_step*.png"))) == 2
    # One row per view image, shared with single-view targets: a single-view transfer of the
    # same sources afterwards encodes nothing.
    assert model.cache is not None and model.cache.misses == 2 * (27 + 18 + 18)
    assert sorted(re.sub(r"_[0-9a-f]{10}__", "__", p.name) for p in cache.rglob("*.pt")) == sorted(
        [f"{split}__rgb__r{RES}.pt" for split in ("train", "val", "test")] * 2)
    assert "rgb" in opened  # the filling pass
    normal, _ = run(source_runs, shards, "normal", cache)
    assert normal.cache is not None and normal.cache.misses == 0


def test_targets_made_from_the_image_keep_reading_it(tiny_shards: Path) -> None:
    assert labels_need_rgb("autoencoding") and labels_need_rgb("denoising")
    assert not labels_need_rgb("normal") and not labels_need_rgb("fixated_pose")
    data = TaskonomyDataModule(tiny_shards, tasks=["autoencoding"], resolution=RES,
                               batch_size=4, num_workers=0)
    assert not data.use_cached_inputs({"test": ["x"]}) and not data.cached_inputs


def test_image_free_batches_carry_keys_and_labels(tiny_shards: Path) -> None:
    data = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=RES, batch_size=4,
                               num_workers=0)
    data.setup("test")
    keys = data.role_keys("test")
    assert len(keys) == 18
    reference = next(iter(data.test_dataloader()))
    # A key whose input is not cached is skipped and counted (as an unreadable image is).
    assert data.use_cached_inputs({"test": keys[1:]})
    batch = next(iter(data.test_dataloader()))
    assert set(batch) == {"__key__", "normal"} and "input" not in batch["normal"]
    assert batch["__key__"] == reference["__key__"][1:] + [keys[4]]
    assert torch.equal(batch["normal"]["target"][:3], reference["normal"]["target"][1:])
    assert data.skipped.reset() == 1
    images = next(iter(data.image_dataloader("test", keys[2:4], whole=True)))
    assert images["__key__"] == keys[2:4]
    assert torch.equal(images["rgb"], reference["rgb"][2:4])
    data.use_cached_inputs(None)
    assert "rgb" in next(iter(data.test_dataloader()))


def test_batches_without_images_need_a_filled_cache(source_runs: Path, tmp_path: Path) -> None:
    model = TransferTask(target="normal", sources=SOURCES, task_runs=str(source_runs),
                         cache_dir=str(tmp_path / "cache"), encoder="resnet10_tiny",
                         resolution=RES, decoder_width=0.25, head_width=0.25)
    batch = {"__key__": ["a__0__0"], "normal": {"target": torch.zeros(1, 3, RES, RES)}}
    with pytest.raises(KeyError, match="not cached"):
        model.frozen_representation(batch, "train")


def test_roots_with_the_same_keys_never_share_representations(
        source_runs: Path, tiny_source: Path, tiny_shards: Path, tmp_path: Path) -> None:
    """Regenerated or repacked data reuses sample keys; the cache must not serve old images."""
    import cv2

    from taskonomy.datamodules.packer import PackConfig, pack
    from taskonomy.datamodules.shards import read_manifest

    source = Path(shutil.copytree(tiny_source, tmp_path / "source"))
    for png in source.rglob("rgb/*.png"):
        cv2.imwrite(str(png), 255 - cv2.imread(str(png)))
    buildings = read_manifest(tiny_shards, "test")["buildings"]
    other = tmp_path / "other"
    pack(PackConfig(source=source, out=other, split="test", buildings=list(buildings)),
         progress=False)
    cache = tmp_path / "cache"
    for root in (tiny_shards, other):
        model = TransferTask(target="normal", sources=["reshading"], task_runs=str(source_runs),
                             cache_dir=str(cache), encoder="resnet10_tiny", resolution=RES)
        data = TaskonomyDataModule(root, tasks=["normal"], resolution=RES, batch_size=4,
                                   num_workers=0, train_split=None, val_split=None)
        data.setup("test")
        keys = model.fill_cache(data, "test")
        assert model.cache is not None and model.cache.misses == len(keys) > 0
        batch = next(iter(data.image_dataloader("test", whole=True)))
        frozen = model.sources[0]
        store = model.cache.store(frozen.run_id, data.images_identity("test"), "rgb", RES,
                                  frozen.fingerprint, frozen)
        torch.testing.assert_close(store.take(batch["__key__"]), frozen(batch["rgb"]),
                                   rtol=RTOL, atol=ATOL)
