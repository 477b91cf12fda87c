import io
import os
import tarfile
from pathlib import Path

import pytest

from taskonomy.datamodules.layouts import make_key, parse_key
from taskonomy.datamodules.shards import (
    MissingValue,
    ShardEntry,
    ShardKeyMismatchError,
    file_sha256,
    iter_aligned_shard,
    iter_domain_shard,
    member_name,
    read_manifest,
    shard_location,
    write_domain_shard,
)


def test_keys_round_trip_and_reject_dots():
    key = make_key("allensville", 12, 3)
    assert key == "allensville__12__3"
    ref = parse_key(key)
    assert (ref.building, ref.point, ref.view) == ("allensville", "12", "3")
    with pytest.raises(ValueError, match="no '.'"):
        make_key("a.b", 1, 2)


def test_write_read_round_trip_with_missing_member(tmp_path: Path):
    path = tmp_path / "rgb" / "train-000000.tar"
    entries = [ShardEntry("b__0__0", b"abc"), ShardEntry("b__0__1", None, "corrupt: bad"),
               ShardEntry("b__0__2", bytes(range(256)))]
    stats = write_domain_shard(path, "rgb", entries)
    assert stats["count"] == 3 and stats["missing"] == 1
    assert stats["sha256"] == file_sha256(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    items = list(iter_domain_shard(str(path), "rgb"))
    assert [k for k, _ in items] == ["b__0__0", "b__0__1", "b__0__2"]
    assert items[0][1] == b"abc" and items[2][1] == bytes(range(256))
    assert isinstance(items[1][1], MissingValue) and "corrupt" in items[1][1].reason
    # The umask's mode, as for any file the user writes (mkstemp alone gives 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    # Deterministic tars: the same entries give the same checksum.
    again = write_domain_shard(tmp_path / "again.tar", "rgb", entries)
    assert again["sha256"] == stats["sha256"]


def test_failed_write_leaves_no_final_file(tmp_path: Path):
    def entries():
        yield ShardEntry("b__0__0", b"x")
        raise RuntimeError("killed")

    path = tmp_path / "rgb" / "train-000000.tar"
    with pytest.raises(RuntimeError):
        write_domain_shard(path, "rgb", entries())
    assert not path.exists() and list(path.parent.iterdir()) == []
    # A writer killed outright (SIGKILL, SIGTERM) leaves its temporary file: the next writer
    # of that shard removes it, and leaves other shards' temporaries alone.
    (path.parent / ".train-000000.tar.ab12cd.tmp").write_bytes(b"x" * 100)
    (path.parent / ".train-000001.tar.ef34gh.tmp").write_bytes(b"y")
    write_domain_shard(path, "rgb", [ShardEntry("b__0__0", b"x")])
    assert sorted(p.name for p in path.parent.iterdir()) == [".train-000001.tar.ef34gh.tmp",
                                                             "train-000000.tar"]


def test_aligned_zip_and_key_mismatch(tmp_path: Path):
    write_domain_shard(tmp_path / "rgb.tar", "rgb", [ShardEntry("a__0__0", b"1"),
                                                     ShardEntry("a__0__1", b"2")])
    write_domain_shard(tmp_path / "d.tar", "depth_zbuffer", [ShardEntry("a__0__0", b"3"),
                                                             ShardEntry("a__0__1", b"4")])
    samples = list(iter_aligned_shard({"rgb": str(tmp_path / "rgb.tar"),
                                       "depth_zbuffer": str(tmp_path / "d.tar")}))
    assert samples == [{"__key__": "a__0__0", "rgb": b"1", "depth_zbuffer": b"3"},
                       {"__key__": "a__0__1", "rgb": b"2", "depth_zbuffer": b"4"}]
    write_domain_shard(tmp_path / "bad.tar", "depth_zbuffer", [ShardEntry("a__0__0", b"3"),
                                                               ShardEntry("a__9__9", b"4")])
    with pytest.raises(ShardKeyMismatchError, match="'a__0__1'.*'a__9__9'"):
        list(iter_aligned_shard({"rgb": str(tmp_path / "rgb.tar"),
                                 "depth_zbuffer": str(tmp_path / "bad.tar")}))


def test_a_domain_ending_before_the_others_is_a_truncated_shard(tmp_path: Path):
    write_domain_shard(tmp_path / "rgb.tar", "rgb", [ShardEntry("a__0__0", b"1")])
    write_domain_shard(tmp_path / "d.tar", "depth_zbuffer", [ShardEntry("a__0__0", b"3"),
                                                             ShardEntry("a__0__1", b"4")])
    with pytest.raises(EOFError, match=r"rgb.tar ends after 1 samples while .*d.tar goes on"):
        list(iter_aligned_shard({"rgb": str(tmp_path / "rgb.tar"),
                                 "depth_zbuffer": str(tmp_path / "d.tar")}))


def test_truncated_shard_raises_while_streaming(tmp_path: Path):
    path = tmp_path / "rgb.tar"
    write_domain_shard(path, "rgb", [ShardEntry(f"a__0__{i}", bytes(5000)) for i in range(4)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((tarfile.TarError, EOFError)):
        list(iter_domain_shard(str(path), "rgb"))


def test_member_of_wrong_domain_is_rejected(tmp_path: Path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(member_name("a__0__0", "normal"))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="wrong folder"):
        list(iter_domain_shard(str(path), "rgb"))


def test_pipe_urls_stream_shards(tmp_path: Path):
    write_domain_shard(tmp_path / "train" / "rgb" / "train-000000.tar", "rgb",
                       [ShardEntry("a__0__0", b"hello")])
    location = shard_location(f"pipe:cat {tmp_path}", "train", "rgb", 0)
    assert location == f"pipe:cat {tmp_path}/train/rgb/train-000000.tar"
    assert list(iter_domain_shard(location, "rgb")) == [("a__0__0", b"hello")]


def test_missing_manifest_names_the_split(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="split 'train' has not been packed"):
        read_manifest(tmp_path, "train")
    # A split's own folder given as the root: the message names the root to give instead.
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "manifest.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=f"--data.root={tmp_path.resolve()}$"):
        read_manifest(tmp_path / "train", "val")
