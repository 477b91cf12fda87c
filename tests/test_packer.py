import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from taskonomy.datamodules.domains import DOMAINS, decode_domain, read_domain_file
from taskonomy.datamodules.layouts import detect_layout, parse_key
from taskonomy.datamodules.packer import PackConfig, pack, parse_part, plan_shards
from taskonomy.datamodules.shards import iter_aligned_shard, read_manifest, shard_location
from taskonomy.datamodules.splits import load_split, parse_split_csv, split_buildings
from taskonomy.experiments.cli import main as cli_main


def _all_samples(root: Path, split: str, domains: list[str]) -> list[dict]:
    manifest = read_manifest(root, split)
    samples = []
    for shard in manifest["shards"]:
        locations = {d: shard_location(root, split, d, shard["index"]) for d in domains}
        samples.extend(iter_aligned_shard(locations))
    return samples


def test_released_split_csvs_parse():
    tiny = load_split("tiny")
    assert [len(tiny[p]) for p in ("train", "val", "test")] == [25, 5, 5]
    assert len(split_buildings("fullplus", "all")) == 537
    assert set(split_buildings("tiny", "all")) <= set(split_buildings("medium", "all"))
    assert parse_split_csv("id,train,val,test\rfoo,1,0,0\rbar,0,0,1\r") == {
        "train": ["foo"], "val": [], "test": ["bar"]}
    with pytest.raises(ValueError, match="header"):
        parse_split_csv("name,a\nfoo,1\n")
    with pytest.raises(ValueError, match="row 3: building 'foo' is already listed in row 2"):
        parse_split_csv("id,train,val,test\nfoo,1,0,0\nfoo,0,0,1\n")
    with pytest.raises(ValueError, match="row 2: building 'foo' is in more than one part"):
        parse_split_csv("id,train,val,test\nfoo,1,0,1\n")
    for row in ("foo,yes,0,0", ",1,0,0"):  # flags are 0 or 1; every row names a building
        with pytest.raises(ValueError, match="row 2: expected 'building,0|1,0|1,0|1'"):
            parse_split_csv(f"id,train,val,test\n{row}\n")
    with pytest.raises(FileNotFoundError, match="give a released split"):
        load_split("huge")


def test_pack_is_lossless_and_aligned(tiny_source: Path, tiny_shards: Path):
    manifest = read_manifest(tiny_shards, "train")
    domains = list(manifest["domains"])
    assert set(domains) == set(DOMAINS)
    assert manifest["count"] == 27 and manifest["resolution"] == 32
    assert manifest["skipped"] == []
    layout = detect_layout(tiny_source)
    samples = _all_samples(tiny_shards, "train", domains)
    assert [s["__key__"] for s in samples] == [k for s in manifest["shards"] for k in s["keys"]]
    for sample in samples:
        ref = parse_key(sample["__key__"])
        for domain in domains:
            path = layout.file_path(ref, domain)
            assert sample[domain] == path.read_bytes()  # byte for byte
        depth = decode_domain("depth_zbuffer", sample["depth_zbuffer"])
        assert depth.dtype == np.uint16
        assert np.array_equal(depth, read_domain_file(layout.file_path(ref, "depth_zbuffer"),
                                                      "depth_zbuffer"))
    # A point's views never straddle two shards.
    points = [{parse_key(k).point_key for k in s["keys"]} for s in manifest["shards"]]
    assert sum(len(p) for p in points) == len(set().union(*points))


def test_plan_never_splits_a_point():
    from taskonomy.datamodules.layouts import ViewRef

    views = [ViewRef("b", str(p), str(v)) for p in range(4) for v in range(p + 1)]
    shards = plan_shards(views, 2)
    assert [len(s) for s in shards] == [3, 3, 4]
    assert sum(shards, []) == views


def test_resume_refusal_and_added_domain(tiny_source: Path, tmp_path: Path, train_buildings):
    out = tmp_path / "out"
    base = PackConfig(source=tiny_source, out=out, split="train", buildings=[train_buildings[0]],
                      domains=["rgb", "depth_zbuffer"], shard_size=3)
    first = pack(base, progress=False)
    assert first.shards_written == 6 and first.manifest is not None
    with pytest.raises(FileExistsError, match="--resume"):
        pack(base, progress=False)
    again = pack(PackConfig(**{**base.__dict__, "resume": True}), progress=False)
    assert again.shards_written == 0 and again.shards_skipped == 6
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.tar")}
    added = pack(PackConfig(**{**base.__dict__, "resume": True, "domains": ["normal"]}),
                 progress=False)
    assert added.shards_written == 3
    assert sorted(added.manifest["domains"]) == ["depth_zbuffer", "normal", "rgb"]
    for path, (mtime, data) in before.items():  # nothing rewritten
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data
    assert len(list((out / "train" / "normal").glob("*.tar"))) == 3
    # A shard cut short after packing (an interrupted copy) is packed again by --resume.
    cut = out / "train" / "rgb" / "train-000001.tar"
    whole = cut.read_bytes()
    cut.write_bytes(whole[:1024])
    repaired = pack(PackConfig(**{**base.__dict__, "resume": True}), progress=False)
    assert repaired.shards_written == 1 and cut.read_bytes() == whole
    other = PackConfig(**{**base.__dict__, "buildings": list(train_buildings[:2]),
                          "resume": True})
    with pytest.raises(ValueError, match="another pack .*buildings_sha1.*repeat the original "
                                         "command's options: it was packed with the buildings "
                                         "of its --split-file"):
        pack(other, progress=False)
    # A new domain asked for with another shard size names the one the pack was made with.
    resized = PackConfig(**{**base.__dict__, "shard_size": 8, "domains": ["normal"],
                            "resume": True})
    with pytest.raises(ValueError, match="differs in: shard_size; .*packed with --shard-size 3"):
        pack(resized, progress=False)
    # An option the pack was made without is named as absent, not as "None".
    assert base.resolution is None
    sized = PackConfig(**{**base.__dict__, "resolution": 16, "resume": True})
    with pytest.raises(ValueError, match="packed with no --resolution"):
        pack(sized, progress=False)


def test_a_building_downloaded_after_planning_is_named(tmp_path: Path, building_factory):
    # The same command once a download finished: the plan cannot take the new building.
    source = tmp_path / "source"
    building_factory(source, "hanson", points=1, views=2, seed=1)
    config = PackConfig(source=source, out=tmp_path / "out", split="train",
                        buildings=["hanson", "klickitat"], domains=["rgb"], shard_size=2)
    first = pack(config, progress=False)
    assert first.manifest is not None and first.manifest["absent_buildings"] == ["klickitat"]
    building_factory(source, "klickitat", points=1, views=2, seed=2)
    with pytest.raises(ValueError, match=r"buildings changed since it was planned \(now also "
                                         r"klickitat\).*another --out"):
        pack(PackConfig(**{**config.__dict__, "resume": True}), progress=False)


def test_a_plan_with_a_building_now_known_corrupt_says_how_to_finish(
        tmp_path: Path, building_factory, monkeypatch: pytest.MonkeyPatch):
    # A pack planned before a building joined the known-corrupt list (as woodbine did).
    import taskonomy.datamodules.packer as packer

    source = tmp_path / "source"
    for seed, name in enumerate(("hanson", "klickitat")):
        building_factory(source, name, points=1, views=2, seed=seed)
    config = PackConfig(source=source, out=tmp_path / "out", split="train",
                        buildings=["hanson", "klickitat"], domains=["rgb"], shard_size=2)
    pack(config, progress=False)
    monkeypatch.setattr(packer, "KNOWN_CORRUPT_BUILDINGS", frozenset({"klickitat"}))
    resumed = PackConfig(**{**config.__dict__, "resume": True})
    with pytest.raises(ValueError, match="klickitat is now excluded as known to be corrupt; "
                                         "pass --include-corrupt"):
        pack(resumed, progress=False)
    done = pack(PackConfig(**{**resumed.__dict__, "include_corrupt": True}), progress=False)
    assert done.shards_written == 0 and done.manifest is not None


def test_corrupt_files_and_known_corrupt_buildings(tmp_path: Path, building_factory):
    source = tmp_path / "src"
    building_factory(source, "hanson", points=2, views=2, seed=3)
    building_factory(source, "mosquito", points=1, views=2, seed=4)
    bad = source / "hanson" / "normal" / "point_0_view_1_domain_normal.png"
    bad.write_bytes(bad.read_bytes()[:40])
    (source / "hanson" / "reshading" / "point_1_view_0_domain_reshading.png").unlink()
    result = pack(PackConfig(source=source, out=tmp_path / "out", split="train"), progress=False)
    manifest = result.manifest
    assert manifest["buildings"] == ["hanson"] and manifest["excluded_buildings"] == ["mosquito"]
    reasons = {(s["key"], s["domain"]): s["reason"] for s in manifest["skipped"]}
    assert reasons[("hanson__0__1", "normal")].startswith("corrupt")
    assert reasons[("hanson__1__0", "reshading")] == "missing file"
    assert manifest["domains"]["normal"]["missing"] == 1
    with_corrupt = pack(PackConfig(source=source, out=tmp_path / "out2", split="train",
                                   include_corrupt=True), progress=False)
    assert "mosquito" in with_corrupt.manifest["buildings"]


def test_parts_pack_disjoint_shards_and_last_part_writes_manifest(tiny_source: Path,
                                                                  tmp_path: Path,
                                                                  train_buildings):
    out, original = tmp_path / "out", tmp_path / "original"
    shutil.copytree(tiny_source, original)
    config = dict(source=original, out=out, split="train", buildings=list(train_buildings),
                  domains=["rgb"], shard_size=3, resume=True)
    alone = pack(PackConfig(**{**config, "out": tmp_path / "alone"}, part=(2, 2)),
                 progress=False)  # part 2 of 2 alone: its 4 of the 9 shards, no manifest
    assert alone.shards_written == 4 and alone.manifest is None
    first = pack(PackConfig(**config, part=(1, 2)), progress=False)
    assert first.manifest is None and first.pending == 4
    assert not (out / "train" / "manifest.json").exists()
    # Another machine packs its part from its own copy (or mount) of the source; the first
    # machine's path does not exist there. A copy lacking a view is refused.
    copy = tmp_path / "elsewhere"
    shutil.copytree(original, copy)
    shutil.move(original, tmp_path / "gone")
    lacking = tmp_path / "lacking"
    shutil.copytree(copy, lacking)
    next((lacking / train_buildings[0] / "rgb").glob("*.png")).unlink()
    with pytest.raises(ValueError, match="1 of its views are missing here"):
        pack(PackConfig(**{**config, "source": lacking}, part=(2, 2)), progress=False)
    # A copy without a domain this pack does not read is enough.
    for building in train_buildings:
        shutil.rmtree(copy / building / "depth_zbuffer")
    second = pack(PackConfig(**{**config, "source": copy}, part=(2, 2), workers=2),
                  progress=False)
    assert second.shards_written == 4 and second.manifest["count"] == 27
    assert not second.manifest["skipped"]
    with pytest.raises(ValueError, match="K/N"):
        parse_part("3")
    with pytest.raises(ValueError, match="between 1 and N"):
        parse_part("3/2")


def test_a_source_elsewhere_must_hold_the_planned_domain_folders(tiny_source: Path,
                                                                 tmp_path: Path,
                                                                 train_buildings):
    out, copy = tmp_path / "out", tmp_path / "copy"
    config = dict(source=tiny_source, out=out, split="train", buildings=list(train_buildings),
                  domains=["rgb", "depth_zbuffer"], shard_size=3, resume=True)
    pack(PackConfig(**config, part=(1, 2)), progress=False)
    shutil.copytree(tiny_source, copy)
    shutil.rmtree(copy / train_buildings[0] / "depth_zbuffer")
    with pytest.raises(ValueError, match=f"lacks 1 domain folder.*{train_buildings[0]}/depth"):
        pack(PackConfig(**{**config, "source": copy}, part=(2, 2)), progress=False)
    # A plan of an earlier version (no per-building domains) cannot vouch for a moved source.
    plan_path = out / "train" / "plan.json"
    plan = json.loads(plan_path.read_text())
    del plan["building_domains"]
    plan_path.write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="earlier version.*pack it from the original path"):
        pack(PackConfig(**{**config, "source": copy}, part=(2, 2)), progress=False)
    done = pack(PackConfig(**config, part=(2, 2)), progress=False)  # the original still works
    assert done.manifest is not None and not done.manifest["skipped"]


def test_tiny_split_from_synthetic_buildings_with_real_names(tmp_path: Path, building_factory):
    source = tmp_path / "src"
    names = split_buildings("tiny", "all")
    assert len(names) == 35
    for i, name in enumerate(names):
        building_factory(source, name, points=1, views=1, res=8, seed=i)
    for part in ("train", "val", "test"):
        code = cli_main(["data", "pack", str(source), "--out", str(tmp_path / "out"),
                         "--split-file", "tiny", "--split", part, "--domains", "rgb",
                         "point_info", "--quiet"])
        assert code == 0
    counts = {p: read_manifest(tmp_path / "out", p)["count"] for p in ("train", "val", "test")}
    # woodbine, a tiny train building, is known to be corrupt (its files were lost).
    assert counts == {"train": 24, "val": 5, "test": 5}
    assert read_manifest(tmp_path / "out", "train")["excluded_buildings"] == ["woodbine"]
    assert read_manifest(tmp_path / "out", "val")["buildings"] == sorted(load_split("tiny")["val"])


def test_omnidata_layout_packs_the_same_bytes(tiny_source: Path, tmp_path: Path,
                                              train_buildings):
    omni = tmp_path / "omni"
    building = train_buildings[0]
    for domain in ("rgb", "depth_zbuffer"):
        shutil.copytree(tiny_source / building / domain, omni / domain / "taskonomy" / building)
    assert detect_layout(omni).kind == "omnidata"
    result = pack(PackConfig(source=omni, out=tmp_path / "out", split="val"), progress=False)
    assert result.manifest["layout"] == "omnidata" and result.manifest["count"] == 9
    sample = _all_samples(tmp_path / "out", "val", ["depth_zbuffer"])[0]
    ref = parse_key(sample["__key__"])
    original = tiny_source / building / "depth_zbuffer" / (
        f"point_{ref.point}_view_{ref.view}_domain_depth_zbuffer.png")
    assert sample["depth_zbuffer"] == original.read_bytes()


def test_bad_input_messages(tmp_path: Path, tiny_source: Path, capsys):
    (tmp_path / "junk" / "stuff").mkdir(parents=True)
    with pytest.raises(ValueError, match="Accepted layouts: 'released'"):
        detect_layout(tmp_path / "junk")
    with pytest.raises(ValueError, match="valid domains: rgb"):
        pack(PackConfig(source=tiny_source, out=tmp_path / "o", split="train",
                        domains=["depht"]), progress=False)
    code = cli_main(["data", "pack", str(tmp_path / "junk"), "--out", str(tmp_path / "o")])
    assert code == 2 and "Accepted layouts" in capsys.readouterr().err
    # No split file: every building would land in one split, unless asked for.
    code = cli_main(["data", "pack", str(tiny_source), "--out", str(tmp_path / "o"),
                     "--split", "test", "--quiet"])
    assert code == 2 and "--all-buildings" in capsys.readouterr().err
    assert not (tmp_path / "o" / "test").exists()
    assert cli_main(["data", "pack", str(tiny_source), "--out", str(tmp_path / "o"),
                     "--split", "test", "--all-buildings", "--domains", "rgb", "--quiet"]) == 0
    # A domain asked for that no building has is packed as markers, and said so.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_source, bare, ignore=shutil.ignore_patterns("keypoints2d"))
    assert cli_main(["data", "pack", str(bare), "--out", str(tmp_path / "o2"), "--split", "test",
                     "--all-buildings", "--domains", "rgb", "keypoints2d", "--quiet"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "no sample of split 'test' has a file of keypoints2d" in err and "rgb" not in err
    # The authors' zip of split CSVs, and a source holding several split CSVs.
    archive = tmp_path / "splits_taskonomy.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("splits_taskonomy/train_val_test_tiny.csv", "id,train,val,test\n")
        zipped.writestr("__MACOSX/splits_taskonomy/._train_val_test_tiny.csv", "")
    code = cli_main(["data", "pack", str(tiny_source), "--out", str(tmp_path / "o"),
                     "--split-file", str(archive)])
    err = capsys.readouterr().err
    assert code == 2 and "zip archive (of splits_taskonomy/train_val_test_tiny.csv)" in err
    source = tmp_path / "source"
    shutil.copytree(tiny_source, source)
    for name in ("tiny", "medium"):
        (source / f"train_val_test_{name}.csv").write_text("id,train,val,test\n")
    code = cli_main(["data", "pack", str(source), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code == 2 and "2 split files (train_val_test_medium.csv, train_val_test_tiny.csv)" in err


def test_parts_need_no_resume_and_an_unresizable_file_is_skipped(tmp_path: Path,
                                                                 tiny_source: Path):
    import cv2

    source = tmp_path / "src"
    shutil.copytree(tiny_source, source)
    odd = sorted((source / sorted(p.name for p in source.iterdir() if p.is_dir())[0]
                  / "segment_unsup2d").glob("*.png"))[0]
    cv2.imwrite(str(odd), np.full((8, 8), 300, np.uint16))  # 16-bit where 8-bit is expected
    for part in ("1/2", "2/2"):
        result = pack(PackConfig(source=source, out=tmp_path / "out", split="train",
                                 part=parse_part(part), resolution=4), progress=False)
    assert result.manifest is not None
    reasons = [item["reason"] for item in result.manifest["skipped"]]
    assert any("cannot resize" in r and odd.name in r for r in reasons)


def test_manifest_is_valid_json_with_checksums(tiny_shards: Path):
    manifest = json.loads((tiny_shards / "train" / "manifest.json").read_text())
    from taskonomy.datamodules.shards import file_sha256

    rgb = manifest["domains"]["rgb"]
    assert len(rgb["sha256"]) == len(manifest["shards"])
    assert rgb["sha256"][0] == file_sha256(tiny_shards / "train" / "rgb" / "train-000000.tar")


def test_inspect_shards_summary_and_views(tiny_shards: Path, tmp_path: Path, capsys):
    from taskonomy.datamodules.shard_inspect import (
        inspect_shard_root,
        inspect_shards,
        is_shard_root,
        shard_samples,
    )

    assert is_shard_root(tiny_shards) and not is_shard_root(tmp_path)
    summary = inspect_shards(tiny_shards)
    train = summary["splits"]["train"]
    assert train["count"] == 27 and train["shards"] == 9 and train["skipped"] == 0
    depth = train["domains"]["depth_zbuffer"]
    assert depth["dtype"] == "uint16" and depth["max"] == 65535 and depth["missing_fraction"] > 0
    assert train["domains"]["rgb"]["bytes_per_sample"] > 0
    # A domain whose plugin is no longer installed is named so, not shown blank.
    from taskonomy.datamodules import domains

    with pytest.MonkeyPatch.context() as patch:
        patch.delitem(domains.DOMAINS, "normal")
        gone = inspect_shards(tiny_shards)["splits"]["train"]["domains"]["normal"]
    assert gone["kind"] == "unregistered: install its plugin"
    samples = shard_samples(tiny_shards, "train", views=4)
    assert len(samples) == 4
    assert len({s["key"].split("_view_")[0] for s in samples}) == 4  # four different points
    assert samples[0]["rgb"].shape == (32, 32, 3) and "point_info" in samples[0]
    pytest.importorskip("taskonomy.datamodules.visualize")
    assert inspect_shard_root(tiny_shards, tmp_path / "sheet.png", views=2, size=64) == 0
    assert (tmp_path / "sheet.png").stat().st_size > 0
    assert "27 samples in 9 shards" in capsys.readouterr().out
    # A split folder given for the root (it read as a released building folder).
    assert cli_main(["data", "inspect", str(tiny_shards / "train"), "--out",
                     str(tmp_path / "split.png")]) == 2
    assert f"give the shard root {tiny_shards}" in capsys.readouterr().err


def test_inspect_verify_names_damaged_and_missing_shards(tiny_shards: Path, tmp_path: Path,
                                                         capsys, train_buildings):
    root = tmp_path / "copy"
    shutil.copytree(tiny_shards, root)
    assert cli_main(["data", "inspect", str(root), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    damaged = root / "train" / "rgb" / "train-000001.tar"
    data = bytearray(damaged.read_bytes())
    data[600] ^= 1  # same size: only the hash tells
    damaged.write_bytes(bytes(data))
    (root / "val" / "normal" / "val-000000.tar").unlink()
    assert cli_main(["data", "inspect", str(root), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "2 of " in out and "train-000001.tar: its SHA-256 differs" in out
    assert "val-000000.tar: unreadable" in out and "--resume" in out
    # The printed commands repair both splits once the split file is filled in.
    manifest = read_manifest(root, "train")
    hints = [line.strip() for line in out.splitlines()
             if line.strip().startswith("taskonomy data pack")]
    assert len(hints) == 2 and all(manifest["source"] in h for h in hints)
    split_file = tmp_path / "split.csv"
    split_file.write_text("id,train,val,test\n" + "".join(
        f"{b},{int(b in train_buildings)},{int(b not in train_buildings)},0\n"
        for b in manifest["buildings"] + read_manifest(root, "val")["buildings"]))
    damaged.unlink()
    for hint in hints:
        argv = hint.replace("SPLIT_FILE", str(split_file)).split()[1:]
        assert cli_main([*argv, "--quiet"]) == 0
    assert cli_main(["data", "inspect", str(root), "--verify"]) == 0


def test_pack_time_resize_keeps_depth_values_and_halves_the_side(tiny_source: Path,
                                                                 tmp_path: Path,
                                                                 train_buildings):
    result = pack(PackConfig(source=tiny_source, out=tmp_path / "out", split="train",
                             buildings=[train_buildings[0]], shard_size=3, resolution=16,
                             domains=["rgb", "depth_zbuffer", "segment_semantic", "point_info"]),
                  progress=False)
    assert result.manifest["resolution"] == 16 and result.manifest["source_resolution"] == 32
    layout = detect_layout(tiny_source)
    for sample in _all_samples(tmp_path / "out", "train", ["rgb", "depth_zbuffer",
                                                           "point_info"]):
        ref = parse_key(sample["__key__"])
        depth = decode_domain("depth_zbuffer", sample["depth_zbuffer"])
        original = read_domain_file(layout.file_path(ref, "depth_zbuffer"), "depth_zbuffer")
        assert depth.shape == (16, 16) and set(np.unique(depth)) <= set(np.unique(original))
        # The pixel under each centre, as the datamodule's (and the authors') nearest resize.
        assert np.array_equal(depth, original[1::2, 1::2])
        assert decode_domain("rgb", sample["rgb"]).shape == (16, 16, 3)
        assert sample["point_info"] == layout.file_path(ref, "point_info").read_bytes()


@pytest.mark.slow
def test_synthetic_renderer_buildings_pack_losslessly_and_feed_every_task(tmp_path: Path):
    synth = pytest.importorskip("taskonomy.datamodules.synth.dataset")
    from taskonomy.datamodules.datamodule import TaskonomyDataModule
    from taskonomy.tasks.registry import task_names

    source = tmp_path / "synth"
    synth.synthesize(source, buildings=["hanson", "merom"], resolution=32, points=3, views=3)
    result = pack(PackConfig(source=source, out=tmp_path / "out", split="val", shard_size=3),
                  progress=False)
    manifest = result.manifest
    assert manifest["skipped"] == [] and manifest["count"] == 18
    layout = detect_layout(source)
    for sample in _all_samples(tmp_path / "out", "val", list(manifest["domains"])):
        ref = parse_key(sample["__key__"])
        for domain in manifest["domains"]:
            assert sample[domain] == layout.file_path(ref, domain).read_bytes()
    single = [t for t in task_names() if t not in
              ("fixated_pose", "nonfixated_pose", "egomotion", "point_matching")]
    for tasks in (single, ["fixated_pose", "egomotion", "point_matching"], ["nonfixated_pose"]):
        dm = TaskonomyDataModule(tmp_path / "out", tasks=tasks, resolution=32, batch_size=2,
                                 num_workers=0, jigsaw_tile=16)
        batches = list(dm.val_dataloader())
        assert batches and dm.skipped.count == 0
        for task in tasks:
            assert torch.isfinite(batches[0][task]["target"].float()).all()


def test_source_split_file_is_used_and_partial_buildings_ignored(tmp_path: Path,
                                                                 building_factory):
    source = tmp_path / "src"
    for i, name in enumerate(("synth000", "synth001", "synth002")):
        building_factory(source, name, points=1, views=2, res=8, seed=i)
    building_factory(source, ".partial-synth003", points=1, views=2, res=8, seed=9)
    (source / "train_val_test_synth.csv").write_text(
        "id,train,val,test\nsynth000,1,0,0\nsynth001,1,0,0\nsynth002,0,1,0\n")
    assert detect_layout(source).buildings() == ["synth000", "synth001", "synth002"]
    for part in ("train", "val"):
        assert cli_main(["data", "pack", str(source), "--out", str(tmp_path / "out"),
                         "--split", part, "--quiet"]) == 0
    assert read_manifest(tmp_path / "out", "train")["buildings"] == ["synth000", "synth001"]
    assert read_manifest(tmp_path / "out", "val")["count"] == 2
    # A building of the split still being rendered: packing now would plan the split without it.
    (source / "train_val_test_synth.csv").write_text(
        "id,train,val,test\nsynth000,1,0,0\nsynth001,1,0,0\nsynth002,0,1,0\nsynth003,0,0,1\n")
    with pytest.raises(ValueError, match=r"unfinished buildings \(\.partial-synth003\).*Repeat"):
        pack(PackConfig(source=source, out=tmp_path / "out", split="test",
                        buildings=["synth003"]), progress=False)
    assert not (tmp_path / "out" / "test").exists()


def test_options_that_cannot_work_are_refused_before_anything_is_written(
        tiny_source: Path, tiny_shards: Path, tmp_path: Path, capsys):
    with pytest.raises(ValueError, match="resolution must be a positive side"):
        pack(PackConfig(source=tiny_source, out=tmp_path / "o", split="train",
                        resolution=-5), progress=False)
    assert not (tmp_path / "o").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cli_main(["data", "inspect", str(tiny_shards), "--out", str(notes)]) == 2
    assert "--out must end in .png" in capsys.readouterr().err and notes.read_text() == "mine"


def test_a_damaged_manifest_or_plan_is_named_with_the_repair(tiny_shards: Path, tiny_source: Path,
                                                             tmp_path: Path, train_buildings):
    root = tmp_path / "copy"
    shutil.copytree(tiny_shards, root)
    (root / "train" / "manifest.json").write_text("")
    with pytest.raises(ValueError, match=r"manifest.json is not valid JSON .*--resume"):
        read_manifest(root, "train")
    # Repacking with --resume writes the manifest anew from the shards' records.
    pack(PackConfig(source=tiny_source, out=root, split="train", buildings=list(train_buildings),
                    shard_size=3, resume=True), progress=False)
    assert read_manifest(root, "train") == read_manifest(tiny_shards, "train")
    (root / "train" / "plan.json").write_text("{")
    with pytest.raises(ValueError, match=r"plan.json is not valid JSON .*delete the split"):
        pack(PackConfig(source=tiny_source, out=root, split="train",
                        buildings=list(train_buildings), shard_size=3, resume=True),
             progress=False)
