"""The representation cache: lazy fill, persistence, invalidation, sharing, and equal losses."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch

from taskonomy.datamodules.datamodule import TaskonomyDataModule
from taskonomy.tasks.baselines import random_encoder, random_fingerprint
from taskonomy.tasks.build import build_task
from taskonomy.tasks.representations import (
    RepresentationCache,
    RepresentationStore,
    cache_file,
    weights_fingerprint,
)
from taskonomy.tasks.source_runs import register_task_run
from taskonomy.tasks.transfer import TransferTask

RES = 32
#: Cached and uncached transfers must agree on every per-image test loss within this tolerance
#: (the cache stores the encoder's float32 output; only conv algorithm choices per batch size
#: can differ, at the 1e-7 level, and a few training steps do not amplify that beyond 1e-4).
RTOL, ATOL = 1e-4, 1e-6


class CountingEncoder(torch.nn.Module):
    """A deterministic 'encoder' that counts how many images it encoded."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]
        return x[:, :2, ::4, ::4] * 2.0


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_store_encodes_only_missing_keys_and_persists(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    path = cache_file(tmp_path, "task__normal", "train", "rgb", 16)
    store = RepresentationStore(path, "fp1", encoder)
    x = images(4)
    first = store.get(["a", "b", "c", "d"], x)
    assert encoder.calls == 4 and torch.equal(first, encoder(x))
    encoder.calls = 0
    # b and d are cached; e is new: only e is encoded, and the rows come back in batch order.
    y = torch.stack([x[1], images(1, seed=5)[0], x[3]])
    again = store.get(["b", "e", "d"], y)
    assert encoder.calls == 1
    assert torch.equal(again, y[:, :2, ::4, ::4] * 2.0)
    assert store.misses == 5 and store.hits == 2
    assert not path.exists()
    store.save()
    assert path.is_file() and not store.dirty
    # A fresh store (another process) reads them back without encoding anything.
    fresh_encoder = CountingEncoder()
    reloaded = RepresentationStore(path, "fp1", fresh_encoder)
    assert len(reloaded) == 5
    assert torch.equal(reloaded.get(["a", "e"], torch.zeros(2, 3, 16, 16)),
                       torch.stack([first[0], again[1]]))
    assert fresh_encoder.calls == 0


def test_store_with_another_fingerprint_starts_empty(tmp_path: Path) -> None:
    path = cache_file(tmp_path, "run", "test", "rgb", 16)
    store = RepresentationStore(path, "old", CountingEncoder())
    store.get(["a"], images(1))
    store.save()
    encoder = CountingEncoder()
    retrained = RepresentationStore(path, "new", encoder)
    assert len(retrained) == 0
    retrained.get(["a"], images(1))
    assert encoder.calls == 1


def test_concurrent_stores_merge_their_keys(tmp_path: Path) -> None:
    path = cache_file(tmp_path, "run", "train", "rgb", 16)
    one = RepresentationStore(path, "fp", CountingEncoder())
    two = RepresentationStore(path, "fp", CountingEncoder())
    one.get(["a", "b"], images(2, 1))
    two.get(["c"], images(1, 2))
    one.save()
    two.save()  # merges with what `one` wrote instead of replacing it
    merged = RepresentationStore(path, "fp", CountingEncoder())
    assert sorted(merged.keys()) == ["a", "b", "c"]


def test_damaged_cache_file_is_rebuilt(tmp_path: Path) -> None:
    path = cache_file(tmp_path, "run", "train", "rgb", 16)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a tensor file")
    store = RepresentationStore(path, "fp", CountingEncoder())
    assert len(store) == 0
    store.get(["a"], images(1))
    store.save()
    assert len(RepresentationStore(path, "fp", CountingEncoder())) == 1


def test_batch_key_count_must_match(tmp_path: Path) -> None:
    store = RepresentationStore(tmp_path / "x.pt", "fp", CountingEncoder())
    with pytest.raises(ValueError, match="one '__key__' per sample"):
        store.get(["a"], images(2))


def test_fingerprint_follows_the_weights_not_the_file() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = weights_fingerprint(network)
    copy = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    copy.load_state_dict(network.state_dict())
    assert weights_fingerprint(copy) == before  # the same weights, wherever they were read
    with torch.no_grad():
        network[0].weight[0, 0, 0, 0] += 1e-3
    assert weights_fingerprint(network) != before


def test_random_encoders_are_cached_by_their_weights_not_only_their_recipe() -> None:
    first, again = random_encoder("resnet10_tiny", seed=3), random_encoder("resnet10_tiny", seed=3)
    assert random_fingerprint(first, "resnet10_tiny", 3) == random_fingerprint(
        again, "resnet10_tiny", 3)
    with torch.no_grad():  # as another initialization scheme would give
        again.stem[0].weight.mul_(2)
    assert random_fingerprint(first, "resnet10_tiny", 3) != random_fingerprint(
        again, "resnet10_tiny", 3)


# ----------------------------------------------------------------------------- with transfers
@pytest.fixture(scope="module")
def source_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    for task in ("reshading", "depth_zbuffer"):
        register_task_run(build_task(task, encoder="resnet10_tiny", resolution=RES,
                                     decoder_width=0.25), runs)
    return runs


def fit_and_test(runs: Path, shards: Path, target: str, cache_dir: Path | None
                 ) -> tuple[TransferTask, dict[str, float]]:
    L.seed_everything(0)
    model = TransferTask(target=target, sources=["reshading", "depth_zbuffer"],
                         task_runs=str(runs), cache_dir=str(cache_dir) if cache_dir else None,
                         encoder="resnet10_tiny", resolution=RES, decoder_width=0.25,
                         head_width=0.25, lr=1e-3, lr_milestone=None)
    data = TaskonomyDataModule(shards, tasks=[target], resolution=RES, batch_size=4,
                               num_workers=0, limit=8, seed=0, shuffle_buffer=8)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu")
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    return model, dict(model.test_per_image_losses)


def test_cached_transfer_gives_the_uncached_test_losses(source_runs: Path, tiny_shards: Path,
                                                        tmp_path: Path) -> None:
    _, uncached = fit_and_test(source_runs, tiny_shards, "normal", None)
    cached_model, cached = fit_and_test(source_runs, tiny_shards, "normal", tmp_path / "cache")
    assert cached.keys() == uncached.keys() and len(cached) > 0
    for key, value in uncached.items():
        assert cached[key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
    assert cached_model.cache is not None and cached_model.cache.misses > 0
    # One file per (source, split): the split's name tagged with a hash of its images.
    files = sorted(re.sub(r"_[0-9a-f]{10}__", "__", p.name)
                   for p in (tmp_path / "cache").rglob("*.pt"))
    assert files == ["test__rgb__r32.pt", "test__rgb__r32.pt", "train__rgb__r32.pt",
                     "train__rgb__r32.pt"]

    # Another target reading the same sources encodes nothing: every representation is reused.
    other, _ = fit_and_test(source_runs, tiny_shards, "depth_zbuffer", tmp_path / "cache")
    assert other.cache is not None
    assert other.cache.misses == 0 and other.cache.hits > 0


def test_cache_is_keyed_by_source_run(source_runs: Path) -> None:
    cache = RepresentationCache(source_runs / "cache")
    a = cache.store("run-a", "train", "rgb", RES, "fp", CountingEncoder())
    b = cache.store("run-b", "train", "rgb", RES, "fp", CountingEncoder())
    assert a is not b and a.path != b.path
    assert cache.store("run-a", "train", "rgb", RES, "fp", CountingEncoder()) is a
    # The same run retrained in this process (other weights): a new store, not the old rows.
    retrained = cache.store("run-a", "train", "rgb", RES, "fp2", CountingEncoder())
    assert retrained is not a and retrained.fingerprint == "fp2"


def test_store_grows_past_its_capacity_and_saves_exact_rows(tmp_path: Path) -> None:
    # 200 keys in batches of 7: the in-memory table grows several times (capacity doubling);
    # every key keeps its own row, and the file holds exactly one row per key.
    encoder = CountingEncoder()
    path = cache_file(tmp_path, "run", "train", "rgb", 16)
    store = RepresentationStore(path, "fp", encoder)
    x = images(200, seed=3)
    keys = [f"k{i:03d}" for i in range(200)]
    for start in range(0, 200, 7):
        store.get(keys[start:start + 7], x[start:start + 7])
    assert encoder.calls == 200 and len(store) == 200
    order = torch.randperm(200, generator=torch.Generator().manual_seed(1))[:16].tolist()
    assert torch.equal(store.get([keys[i] for i in order], x[order]), encoder(x[order]))
    store.save()
    data = torch.load(path, weights_only=True)
    assert data["representations"].shape == (200, 2, 4, 4)
    assert data["keys"] == store.keys()
    reread = RepresentationStore(path, "fp", CountingEncoder())
    assert torch.equal(reread.get(keys[::-1], x.flip(0)), encoder(x.flip(0)))


def test_repeated_keys_in_one_batch_are_encoded_once(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    store = RepresentationStore(tmp_path / "x.pt", "fp", encoder)
    x = images(2)
    out = store.get(["a", "b", "a"], torch.stack([x[0], x[1], x[0]]))
    assert len(store) == 2 and out.shape[0] == 3 and torch.equal(out[0], out[2])


def test_take_serves_cached_keys_without_images_and_names_missing_ones(tmp_path: Path) -> None:
    encoder = CountingEncoder()
    store = RepresentationStore(tmp_path / "x.pt", "fp", encoder)
    x = images(3)
    filled = store.get(["a", "b", "c"], x)
    assert store.missing(["c", "d", "a", "d"]) == ["d"]
    assert torch.equal(store.take(["c", "a"]), filled[[2, 0]])
    assert encoder.calls == 3 and store.hits == 2
    with pytest.raises(KeyError, match=r"1 of 2 keys are not cached \(first: d\)"):
        store.take(["a", "d"])


def test_reload_takes_in_keys_saved_by_another_process(tmp_path: Path) -> None:
    path = cache_file(tmp_path, "run", "train", "rgb", 16)
    mine = RepresentationStore(path, "fp", CountingEncoder())
    mine.get(["a"], images(1))
    other = RepresentationStore(path, "fp", CountingEncoder())
    other.get(["b", "c"], images(2, 1))
    other.save()
    assert mine.missing(["a", "b", "c"]) == ["b", "c"]
    mine.reload()
    assert mine.missing(["a", "b", "c"]) == [] and mine.dirty  # "a" is still to be saved
    mine.save()
    assert sorted(RepresentationStore(path, "fp", CountingEncoder()).keys()) == ["a", "b", "c"]
