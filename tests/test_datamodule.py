import functools
import io
import itertools
import shutil
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from taskonomy.datamodules import datamodule as datamodule_module
from taskonomy.datamodules.datamodule import (
    TaskonomyDataModule,
    UpsampledDataWarning,
    select_subset,
)
from taskonomy.datamodules.layouts import parse_key
from taskonomy.datamodules.multiview import CONTEXT_POINTS, context_blocks
from taskonomy.datamodules.shards import manifest_keys, read_manifest


def _keys(loader) -> list[str]:
    return [key for batch in loader for key in batch["__key__"]]


def test_batch_contract_single_view_tasks(tiny_shards: Path):
    tasks = ["depth_zbuffer", "segment_semantic", "class_scene", "colorization", "jigsaw",
             "room_layout"]
    dm = TaskonomyDataModule(tiny_shards, tasks=tasks, resolution=16, batch_size=4,
                             num_workers=0, jigsaw_tile=8)
    dm.setup("fit")
    assert "normal" not in dm.domains and "depth_zbuffer" in dm.domains  # only needed folders
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["__key__"]) == 4
    assert batch["rgb"].shape == (4, 3, 16, 16) and batch["rgb"].abs().max() <= 1.0
    depth = batch["depth_zbuffer"]
    assert depth["target"].shape == depth["mask"].shape == depth["raw"].shape == (4, 1, 16, 16)
    assert torch.equal(depth["input"], batch["rgb"])
    semantic = batch["segment_semantic"]
    assert semantic["target"].dtype == torch.int64 and semantic["target"].shape == (4, 16, 16)
    assert semantic["target"].max() <= 16 and semantic["mask"].shape == (4, 16, 16)
    assert batch["class_scene"]["target"].shape == (4, 63)
    assert torch.allclose(batch["class_scene"]["target"].sum(1), torch.ones(4), atol=1e-4)
    assert batch["class_scene"]["mask"].shape == (4,)
    assert batch["colorization"]["input"].shape == (4, 1, 16, 16)
    assert batch["colorization"]["target"].shape == (4, 313, 4, 4)
    assert batch["jigsaw"]["input"].shape == (4, 9, 3, 8, 8)
    assert batch["jigsaw"]["target"].shape == (4,)
    assert batch["room_layout"]["target"].shape == (4, 9)


def test_multi_view_units(tiny_shards: Path):
    dm = TaskonomyDataModule(tiny_shards, tasks=["fixated_pose", "egomotion", "point_matching"],
                             resolution=16, batch_size=2, num_workers=0)
    batches = list(dm.val_dataloader())
    units = [key for b in batches for key in b["__key__"]]
    assert len(units) == 6  # one unit per fixated point of the 2 val buildings
    for batch in batches:
        assert batch["fixated_pose"]["input"].shape[1:] == (2, 3, 16, 16)
        assert batch["egomotion"]["input"].shape[1:] == (3, 3, 16, 16)
        assert batch["egomotion"]["target"].shape[1:] == (18,)
        for key, label in zip(batch["__key__"], batch["point_matching"]["target"], strict=True):
            views = [parse_key(k) for k in key.split("+")]
            assert len({v.point_key for v in views[:3]}) == 1  # a group of one point
            partner = views[1] if label == 1 else views[-1]
            assert (partner.point_key == views[0].point_key) == bool(label)
    again = _keys(dm.val_dataloader())
    assert again == units  # deterministic evaluation units
    nonfixated = TaskonomyDataModule(tiny_shards, tasks=["nonfixated_pose"], resolution=16,
                                     batch_size=2, num_workers=0)
    for key in _keys(nonfixated.val_dataloader()):
        first, second = (parse_key(k) for k in key.split("+"))
        assert first.building == second.building and first.point != second.point


@pytest.mark.parametrize("split", ["val", "test"])
def test_every_eval_key_once_across_two_ranks_and_two_workers(tiny_shards: Path, split: str):
    expected = manifest_keys(read_manifest(tiny_shards, split))
    seen: list[str] = []
    for rank in range(2):
        dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=8, batch_size=2,
                                 num_workers=2, rank=rank, world_size=2)
        loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
        keys = _keys(loader)
        assert keys, f"rank {rank} got no samples"
        seen.extend(keys)
    assert Counter(seen) == Counter(expected)


def test_the_rank_is_read_when_the_loader_is_made_not_in_its_workers(
        tiny_shards: Path, monkeypatch: pytest.MonkeyPatch):
    # Workers started by spawn or forkserver have no process group: a rank looked up there
    # read 0 of 1 on every rank, and every rank read the whole split.
    expected = manifest_keys(read_manifest(tiny_shards, "val"))
    seen: list[str] = []
    for rank in range(2):
        with monkeypatch.context() as patch:  # the trainer's process of DDP rank `rank`
            patch.setattr(torch.distributed, "is_initialized", lambda: True)
            patch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
            patch.setattr(torch.distributed, "get_world_size", lambda: 2)
            dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=8, batch_size=2,
                                     num_workers=2)
            loader = dm.val_dataloader()
        seen.extend(_keys(loader))  # iterated where no process group exists, as such workers
    assert Counter(seen) == Counter(expected)


@pytest.mark.parametrize("world", [3, 64])
def test_eval_keys_once_with_any_number_of_ranks(tiny_shards: Path, world: int):
    # 64 ranks outnumber the shards: each rank reads all of them and keeps its points.
    expected = manifest_keys(read_manifest(tiny_shards, "test"))
    shards = len(read_manifest(tiny_shards, "test")["shards"])
    seen: list[str] = []
    for rank in range(world):
        dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=8, batch_size=2,
                                 num_workers=0, rank=rank, world_size=world)
        keys = _keys(dm.test_dataloader())
        assert keys or world > shards, f"rank {rank} of {world} got no samples"
        seen.extend(keys)
    assert Counter(seen) == Counter(expected)


def test_persistent_workers_draw_new_shards_every_epoch(tiny_shards: Path):
    dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=8, batch_size=2,
                             num_workers=1, memory_mb=64, shuffle_buffer=2)
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    epochs = [_keys(loader) for _ in range(3)]
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def _rewrite_member(path: Path, index: int, payload: bytes) -> str:
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    name = members[index][0].name
    with tarfile.open(path, "w") as tar:
        for i, (member, data) in enumerate(members):
            data = payload if i == index else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return name.split(".")[0]


def test_corrupt_png_and_truncated_shard_are_skipped_and_counted(tiny_shards: Path,
                                                                tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_shards / "val", root / "val")
    corrupt_key = _rewrite_member(root / "val" / "rgb" / "val-000001.tar", 1,
                                  b"\x89PNG\r\n\x1a\n" + bytes(100))
    truncated = root / "val" / "depth_zbuffer" / "val-000003.tar"
    truncated.write_bytes(truncated.read_bytes()[:2000])
    dm = TaskonomyDataModule(root, tasks=["depth_zbuffer"], resolution=8, batch_size=2,
                             num_workers=0, train_split=None, test_split=None)
    with pytest.warns(RuntimeWarning, match="skipped a bad sample"):
        keys = _keys(dm.val_dataloader())
    all_keys = manifest_keys(read_manifest(root, "val"))
    lost = set(all_keys) - set(keys)
    assert corrupt_key in lost
    shard3 = read_manifest(root, "val")["shards"][3]["keys"]
    assert len(lost) <= 1 + len(shard3) and lost - {corrupt_key} <= set(shard3)
    assert dm.skipped.count == 2  # one corrupt sample, one unreadable shard tail
    assert dm.skipped.reset() == 2 and dm.skipped.count == 0
    # Training keeps going over the bad data and completes its epoch.
    train = TaskonomyDataModule(root, tasks=["depth_zbuffer"], resolution=8, batch_size=2,
                                num_workers=0, train_split="val", val_split=None,
                                test_split=None, epoch_size=30, shuffle_buffer=4)
    with pytest.warns(RuntimeWarning):
        assert len(_keys(train.train_dataloader())) == 30 == len(train.train_dataloader()) * 2


def _cut_at_member(shard: Path, member: int) -> None:
    """Cut a tar right before one of its members: what remains reads as a valid archive."""
    with tarfile.open(shard) as tar:
        offset = tar.getmembers()[member].offset
    with shard.open("r+b") as handle:
        handle.truncate(offset)


@pytest.mark.parametrize("tasks", [["depth_zbuffer"], ["autoencoding"]],
                         ids=["two-domains", "rgb-only"])
def test_shard_cut_at_a_member_boundary_is_counted_as_truncated(tiny_shards: Path,
                                                                 tmp_path: Path, tasks):
    # Such a cut ended the epoch with a key mismatch (two domains), or dropped the shard's
    # tail without a word (one domain).
    root = tmp_path / "root"
    shutil.copytree(tiny_shards / "val", root / "val")
    shard = read_manifest(root, "val")["shards"][1]
    _cut_at_member(root / "val" / "rgb" / "val-000001.tar", 1)
    dm = TaskonomyDataModule(root, tasks=tasks, resolution=8, batch_size=2, num_workers=0,
                             train_split=None, test_split=None)
    with pytest.warns(RuntimeWarning, match="skipped a bad sample"):
        keys = _keys(dm.val_dataloader())
    lost = set(manifest_keys(read_manifest(root, "val"))) - set(keys)
    assert lost and lost <= set(shard["keys"][1:])
    assert dm.skipped.count == 1


def test_reading_shards_at_a_larger_size_than_packed_warns(tiny_shards: Path):
    dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=64, num_workers=0)
    with pytest.warns(UpsampledDataWarning, match=r"holds 32² images.*--model.resolution=32"):
        dm.setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UpsampledDataWarning)
        TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=16,
                            num_workers=0).setup("fit")


def test_missing_domain_folder_is_an_error_before_training(tiny_shards: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_shards / "train", root / "train")
    shutil.rmtree(root / "train" / "normal")
    dm = TaskonomyDataModule(root, tasks=["normal"], num_workers=0, val_split=None,
                             test_split=None)
    with pytest.raises(FileNotFoundError, match=r"train/normal is missing.*--domains normal"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="valid domains"):
        TaskonomyDataModule(root, domains=["depht"])
    with pytest.raises(ValueError, match="valid tasks"):
        TaskonomyDataModule(root, tasks=["depht"])


def test_limit_selects_a_fixed_subset_and_epochs_have_fixed_length(tiny_shards: Path):
    keys = manifest_keys(read_manifest(tiny_shards, "train"))
    subset = select_subset(keys, 5, seed=3)
    assert subset == select_subset(keys, 5, seed=3) and len(subset) == 5
    assert subset != select_subset(keys, 5, seed=4)
    dm = TaskonomyDataModule(tiny_shards, tasks=["autoencoding"], resolution=8, batch_size=1,
                             num_workers=2, limit=5, seed=3, epoch_size=12)
    epochs = [_keys(dm.train_dataloader()) for _ in range(2)]
    assert len(dm.train_dataloader()) == 12  # exact: schedulers can count steps
    for epoch in epochs:
        assert len(epoch) == 12 and set(epoch) <= subset
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    with pytest.raises(ValueError, match="exceeds"):
        select_subset(keys, 1000, seed=0)
    # Whole points (multi-view tasks): at most one point is cut short.
    per_point = Counter(k.rsplit("__", 1)[0]
                        for k in select_subset(keys, 7, seed=1, by_point=True))
    sizes = Counter(k.rsplit("__", 1)[0] for k in keys)
    assert sum(per_point.values()) == 7
    assert sum(n < sizes[point] for point, n in per_point.items()) <= 1


def test_a_repeated_read_never_makes_a_multi_view_unit_of_one_view():
    from taskonomy.datamodules.multiview import group_by_point

    views = [{"__key__": f"b__1__{v}"} for v in (0, 1, 2)]
    groups = list(group_by_point([*views, *views]))  # the same shard drawn twice in a row
    assert [[s["__key__"] for s in g] for g in groups] == [[v["__key__"] for v in views]] * 2


def test_pipe_root_streams_like_a_local_root(tiny_shards: Path):
    local = TaskonomyDataModule(tiny_shards, tasks=["edge_texture"], resolution=8,
                                batch_size=3, num_workers=0)
    piped = TaskonomyDataModule(f"pipe:cat {tiny_shards}", tasks=["edge_texture"],
                                resolution=8, batch_size=3, num_workers=0)
    a, b = list(local.val_dataloader()), list(piped.val_dataloader())
    assert [x["__key__"] for x in a] == [x["__key__"] for x in b]
    assert all(torch.equal(x["edge_texture"]["target"], y["edge_texture"]["target"])
               for x, y in zip(a, b, strict=True))


def test_trainer_epoch_end_reports_skipped_samples(tiny_shards: Path, tmp_path: Path):
    import lightning as L

    from taskonomy.datamodules.datamodule import SkippedSamplesCallback

    root = tmp_path / "root"
    shutil.copytree(tiny_shards / "train", root / "train")
    shutil.copytree(tiny_shards / "val", root / "val")  # clean
    for shard in (root / "train" / "rgb").glob("*.tar"):
        _rewrite_member(shard, 0, b"not a png")

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Conv2d(3, 1, 1)

        def training_step(self, batch, _):
            out = self.layer(batch["depth_zbuffer"]["input"])
            target, mask = batch["depth_zbuffer"]["target"], batch["depth_zbuffer"]["mask"]
            return ((out - target).abs() * mask).sum() / mask.sum().clamp(min=1)

        def validation_step(self, batch, _):
            return self.training_step(batch, _)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = TaskonomyDataModule(root, tasks=["depth_zbuffer"], resolution=8, batch_size=3,
                             num_workers=0, test_split=None, epoch_size=27,
                             shuffle_buffer=4, seed=1)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, num_sanity_val_steps=0,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[SkippedSamplesCallback()],
                        default_root_dir=tmp_path)
    with pytest.warns(RuntimeWarning):
        trainer.fit(Probe(), datamodule=dm)
    assert trainer.callback_metrics["data/skipped_train"] >= 1
    # Validation runs before the training epoch ends: its count is its own.
    assert trainer.callback_metrics["data/skipped_val"] == 0


def test_domains_arrive_in_stored_units(tiny_shards: Path):
    dm = TaskonomyDataModule(tiny_shards, domains=["depth_zbuffer", "class_object", "point_info"],
                             resolution=16, batch_size=3, num_workers=0)
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"__key__", "rgb", "domains"}
    depth = batch["domains"]["depth_zbuffer"]
    assert depth.shape == (3, 1, 16, 16)
    # Resized by nearest pixel: stored units, never a blend with the missing code (65535).
    assert torch.equal(depth, depth.round()) and depth.max() <= 65535
    assert (depth[depth < 65535] < 20000).all()  # the tiny scenes lie within 40 m
    assert batch["domains"]["class_object"].shape == (3, 1000)
    assert "point_info" not in batch["domains"]  # JSON has no tensor form


def test_skip_counter_survives_pickling(tiny_shards: Path):
    import copy
    import pickle

    dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], num_workers=0)
    with pytest.warns(RuntimeWarning):
        dm.skipped.add("test")
    clone = pickle.loads(pickle.dumps(dm))
    assert clone.skipped.count == 1 and copy.deepcopy(dm).skipped.count == 1


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_skip_counts_are_shared_with_spawned_and_forked_processes(tiny_shards: Path,
                                                                  method: str):
    import multiprocessing

    dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], num_workers=0)
    # The target is the counter's own method: a spawned child imports the package, not tests.
    process = multiprocessing.get_context(method).Process(
        target=dm.skipped.add, args=("in another process", "val"))
    process.start()
    process.join(60)
    assert process.exitcode == 0 and dm.skipped.reset("val") == 1


def test_single_view_tasks_beside_multi_view_ones_use_the_first_view(tiny_shards: Path):
    dm = TaskonomyDataModule(tiny_shards, tasks=["fixated_pose", "depth_zbuffer"],
                             resolution=16, batch_size=2, num_workers=0)
    batch = next(iter(dm.val_dataloader()))
    assert batch["depth_zbuffer"]["target"].shape == (2, 1, 16, 16)
    assert torch.equal(batch["fixated_pose"]["input"][:, 0], batch["rgb"])
    assert torch.equal(batch["depth_zbuffer"]["input"], batch["rgb"])


@pytest.mark.parametrize("memory_mb", [512, 0])
def test_regime_subset_is_read_from_disk_once(tiny_shards: Path, tmp_path: Path,
                                              memory_mb: int):
    """A ``limit`` subset's shards are kept in memory after the first epoch (not re-read)."""
    root = tmp_path / "shards"
    shutil.copytree(tiny_shards, root)
    dm = TaskonomyDataModule(root, tasks=["depth_zbuffer"], resolution=8, batch_size=2,
                             num_workers=0, limit=4, val_split=None, test_split=None,
                             memory_mb=memory_mb)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = _keys(loader)
    subset = set(dm.role_keys("train"))
    assert len(first) == 4 and set(first) <= subset
    shutil.rmtree(root / "train" / "depth_zbuffer")  # the disk is gone for the next epochs
    if memory_mb:
        for _ in range(2):
            again = _keys(loader)
            assert len(again) == 4 and set(again) <= subset
    else:
        with pytest.raises(RuntimeError, match="no usable sample"):
            _keys(loader)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("memory_mb", [512, 0])
def test_no_usable_sample_stops_with_an_error_instead_of_hanging(
        tiny_shards: Path, monkeypatch: pytest.MonkeyPatch, memory_mb: int):
    """Shards that read fine but whose every sample fails to build (e.g. all labels missing)."""
    def unusable(task, decoded, rng, **kwargs):  # type: ignore[no-untyped-def]
        raise datamodule_module.BadSampleError(f"sample {decoded['__key__']}: no usable label")

    monkeypatch.setattr(datamodule_module, "make_task_sample", unusable)
    dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=8, batch_size=2,
                             num_workers=0, val_split=None, test_split=None, memory_mb=memory_mb)
    dm.setup("fit")
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="no usable sample"):
        warnings.simplefilter("ignore")
        next(iter(dm.train_dataloader()))


def test_a_resumed_fit_continues_the_epoch_sequence(tiny_shards: Path):
    """A fit resumed at epoch 3 draws new samples, not a replay of epoch 0's.

    (Not epoch 3's exactly: an uninterrupted stream also carries its shuffle buffer over.)
    """
    from types import SimpleNamespace

    def module() -> TaskonomyDataModule:
        dm = TaskonomyDataModule(tiny_shards, tasks=["denoising"], resolution=8, batch_size=2,
                                 num_workers=0, val_split=None, test_split=None, epoch_size=8,
                                 shuffle_buffer=4, seed=5)
        dm.setup("fit")
        return dm

    loader = module().train_dataloader()
    epochs = [[(k, float(b["denoising"]["input"].sum())) for b in loader for k in b["__key__"]]
              for _ in range(4)]
    resumed = module()
    resumed.trainer = SimpleNamespace(current_epoch=3)  # type: ignore[assignment]
    first = [(k, float(b["denoising"]["input"].sum()))
             for b in resumed.train_dataloader() for k in b["__key__"]]
    again = [(k, float(b["denoising"]["input"].sum()))
             for b in module().train_dataloader() for k in b["__key__"]]
    assert again == epochs[0]  # a fresh fit is reproducible
    assert first != epochs[0]  # a resumed one goes on


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_an_epoch_covers_epoch_size_whatever_the_number_of_ranks(tiny_shards: Path, world: int):
    # The paper's 1k regime on 8 loader workers: each worker's share rounded up to a batch
    # made 2048 images an epoch on 8 GPUs.
    dm = TaskonomyDataModule(tiny_shards, tasks=["autoencoding"], resolution=8, batch_size=32,
                             num_workers=8, epoch_size=1000, rank=0, world_size=world,
                             val_split=None, test_split=None)
    dm.setup("fit")
    stream = dm.train_dataloader().dataset
    per_rank = len(stream)  # type: ignore[arg-type]
    assert per_rank % 32 == 0 and 1000 <= world * per_rank < 1000 + world * 32
    assert sum(stream._per_worker(world, 8, w) for w in range(8)) == per_rank  # type: ignore[attr-defined]


def test_workers_with_fewer_batches_still_give_an_exact_epoch(tiny_shards: Path):
    dm = TaskonomyDataModule(tiny_shards, tasks=["autoencoding"], resolution=8, batch_size=2,
                             num_workers=2, epoch_size=6, val_split=None, test_split=None)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 3  # one worker makes two batches, the other one
    assert len(_keys(loader)) == 6


def test_memory_mb_must_not_be_negative(tiny_shards: Path):
    with pytest.raises(ValueError, match="memory_mb"):
        TaskonomyDataModule(tiny_shards, tasks=["normal"], memory_mb=-1)


def test_shuffle_buffer_carries_over_epochs(tiny_shards: Path, monkeypatch: pytest.MonkeyPatch):
    """Later epochs decode only what they yield (the buffer is not refilled from scratch)."""
    import taskonomy.datamodules.datamodule as module

    decoded = []
    original = module.decode_sample
    monkeypatch.setattr(module, "decode_sample",
                        lambda raw: decoded.append(raw["__key__"]) or original(raw))
    dm = TaskonomyDataModule(tiny_shards, tasks=["normal"], resolution=8, batch_size=2,
                             num_workers=0, limit=8, shuffle_buffer=8, val_split=None,
                             test_split=None)
    dm.setup("fit")
    loader = dm.train_dataloader()
    counts = []
    for _ in range(3):
        before = len(decoded)
        # As Lightning reads an epoch: len(loader) batches, never asking past the last one.
        batches = list(itertools.islice(iter(loader), len(loader)))
        assert sum(len(b["__key__"]) for b in batches) == 8
        counts.append(len(decoded) - before)
    assert counts == [15, 8, 8]  # fill the buffer once (8 + 7), then one decode per sample


def test_nonfixated_pose_leads_with_a_view_that_has_a_partner():
    from taskonomy.datamodules.multiview import build_units

    def view(point: int, index: int, sees: tuple[int, ...] = ()) -> dict:
        return {"__key__": f"bldg__{point}__{index}",
                "point_info": {"nonfixated_points_in_view": [str(p) for p in sees]}}

    earlier = [view(0, 0), view(0, 1)]
    # Only view 2 of point 1 shows point 0: whatever order the views are drawn in, point 1's
    # unit leads with that view, and point 0 (read first) pairs with it by looking ahead.
    group = [view(1, 0), view(1, 1), view(1, 2, sees=(0,))]
    for seed in range(6):
        units = list(build_units([earlier, group], ["nonfixated_pose"],
                                 lambda key, s=seed: np.random.default_rng(s)))
        pairs = [unit["__key__"].split("+") for unit in units]
        assert len(pairs) == 2
        assert pairs[0][0].startswith("bldg__0__") and pairs[0][1] == "bldg__1__2"
        assert pairs[1][0] == "bldg__1__2" and pairs[1][1].startswith("bldg__0__")
    lonely = [view(2, 0), view(2, 1)]
    assert list(build_units([earlier, lonely], ["nonfixated_pose"],
                            lambda key: np.random.default_rng(0))) == []
    # Without non-fixated pose nothing is held back: each unit comes as its group arrives.
    arrived: list[str] = []

    def stream():
        for g in (earlier, group):
            arrived.append(g[0]["__key__"])
            yield g

    for unit in build_units(stream(), ["fixated_pose"], lambda key: np.random.default_rng(0)):
        first = parse_key(unit["__key__"].split("+")[0])
        assert first.point_key == parse_key(arrived[-1]).point_key


@pytest.mark.parametrize("block_points", [CONTEXT_POINTS, 2])
@pytest.mark.parametrize("world,workers", [(2, 2), (3, 0), (64, 0)])
def test_multi_view_eval_units_do_not_depend_on_parallelism(
        tiny_shards: Path, world: int, workers: int, block_points: int,
        monkeypatch: pytest.MonkeyPatch):
    # Units are built block by block and blocks are handed out whole, so the GPU and worker
    # count of a run cannot change them: candidates evaluated at different parallelism are
    # scored on the same test units. 2 points a block spreads the tiny split over many blocks.
    monkeypatch.setattr(datamodule_module, "context_blocks",
                        functools.partial(context_blocks, min_points=block_points))
    tasks = ["point_matching", "nonfixated_pose"]

    def units(rank: int, world: int, workers: int) -> list[str]:
        dm = TaskonomyDataModule(tiny_shards, tasks=tasks, resolution=8, batch_size=2,
                                 num_workers=workers, rank=rank, world_size=world)
        return _keys(dm.test_dataloader())

    alone = units(0, 1, 0)
    assert alone
    spread = [key for rank in range(world) for key in units(rank, world, workers)]
    assert Counter(spread) == Counter(alone)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("tasks", [["fixated_pose"], ["normal"]])
def test_every_rank_gets_evaluation_samples_when_blocks_are_fewer_than_ranks(
        tiny_shards: Path, workers: int, tasks: list[str], monkeypatch: pytest.MonkeyPatch):
    # One block for two ranks: both read it. A rank left without samples would hang the
    # other in the end-of-epoch reduction (a hash of the points gave all of them to rank 0).
    monkeypatch.setattr(datamodule_module, "context_blocks",
                        functools.partial(context_blocks, min_points=10**6))

    def keys(rank: int, world: int, shards: list[int] | None = None) -> list[str]:
        dm = TaskonomyDataModule(tiny_shards, tasks=tasks, resolution=8, batch_size=1,
                                 num_workers=workers if world > 1 else 0, rank=rank,
                                 world_size=world)
        loader = dm.test_dataloader()
        if shards is not None:  # single-view: one shard for two ranks
            loader.dataset.shards = shards
        return _keys(loader)

    first = [read_manifest(tiny_shards, "test")["shards"][0]["index"]]
    shards = None if tasks == ["fixated_pose"] else first
    alone = keys(0, 1, shards)
    per_rank = [keys(rank, 2, shards) for rank in range(2)]
    assert all(per_rank), [len(k) for k in per_rank]
    assert Counter(per_rank[0] + per_rank[1]) == Counter(alone)


def test_context_blocks_hold_enough_points_and_keep_shard_order():
    def shard(index: int, *points: int) -> dict:
        return {"index": index, "keys": [f"b__{p}__{v}" for p in points for v in range(2)]}

    shards = [shard(0, 1, 2), shard(1, 3), shard(2, 4, 5), shard(3, 6), shard(4, 7)]
    assert context_blocks(shards, min_points=3) == [[0, 1], [2, 3, 4]]  # the tail joins
    assert context_blocks(shards, min_points=1) == [[0], [1], [2], [3], [4]]
    assert context_blocks(shards, min_points=99) == [[0, 1, 2, 3, 4]]
    subset = {"b__1__0", "b__3__0", "b__4__1", "b__6__0"}  # a regime subset: its points only
    assert context_blocks(shards, keep=subset, min_points=2) == [[0, 1], [2, 3, 4]]


def _skips_over_ranks(root: Path, task: str, world: int) -> int:
    """Skipped test samples summed over every rank of a ``world``-rank evaluation."""
    total = 0
    for rank in range(world):
        dm = TaskonomyDataModule(root, tasks=[task], resolution=8, batch_size=2, num_workers=0,
                                 rank=rank, world_size=world, train_split=None, val_split=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            _keys(dm.test_dataloader())
        total += dm.skipped.count
    return total


def test_ranks_reading_the_same_blocks_count_a_bad_view_once(tiny_shards: Path, tmp_path: Path):
    # Fewer context blocks than ranks: every rank decodes every view, and the skipped counts
    # are summed over ranks, so only the rank owning the view's point may count it.
    root = tmp_path / "root"
    shutil.copytree(tiny_shards / "test", root / "test")
    _rewrite_member(root / "test" / "rgb" / "test-000001.tar", 1,
                    b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert _skips_over_ranks(root, "fixated_pose", 3) == 1


def test_ranks_reading_the_same_blocks_count_an_unreadable_shard_once(tiny_shards: Path,
                                                                      tmp_path: Path):
    # With fewer shards than ranks every rank reads every shard; each counted the cut one.
    root = tmp_path / "root"
    shutil.copytree(tiny_shards / "test", root / "test")
    _cut_at_member(root / "test" / "rgb" / "test-000001.tar", 1)
    world = 2 * len(read_manifest(root, "test")["shards"])
    assert _skips_over_ranks(root, "normal", world) == 1
