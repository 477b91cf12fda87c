import cv2
import numpy as np
import pytest

from taskonomy.datamodules.domains import DOMAINS
from taskonomy.datamodules.synth import synthesize
from taskonomy.datamodules.visualize import (
    SHEET_COLUMNS,
    building_samples,
    contact_sheet,
    draw_room_layout,
    draw_vanishing_points,
    render_domain,
    write_contact_sheet,
)
from taskonomy.experiments.cli import main

RES = 48


@pytest.fixture(scope="module")
def building(tmp_path_factory):
    out = tmp_path_factory.mktemp("sheet") / "out"
    synthesize(out, buildings=1, resolution=RES, seed=2, points=3, views=2)
    return out / "synth000"


def test_every_domain_renders_to_rgb(building):
    samples = building_samples(building, views=4)
    assert len(samples) == 4
    # Views come from different fixated points first.
    assert samples[0]["key"].split("_view_")[0] != samples[1]["key"].split("_view_")[0]
    for name in DOMAINS:
        images = [render_domain(name, sample[name]) for sample in samples]
        for image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        # A view may be flat in one domain (a bare wall has no semantic objects), not in all.
        assert max(image.std() for image in images) > 0, f"{name} renders as flat images"


def test_render_domain_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid domains: rgb"):
        render_domain("depth", np.zeros((4, 4)))


def test_overlays_draw_on_the_image(building):
    sample = building_samples(building, views=1)[0]
    base = np.zeros((128, 128, 3), dtype=np.uint8)
    vanishing = draw_vanishing_points(base, sample["point_info"])
    layout = draw_room_layout(base, sample["point_info"])
    assert (vanishing != 0).any() and (layout != 0).any()
    assert not (base != 0).any()  # drawing works on a copy


def test_sheet_has_one_tile_per_domain_and_view(building, tmp_path):
    out = write_contact_sheet(building, tmp_path / "sheet.png", views=4, size=64)
    sheet = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    header, label = 18, 90
    assert sheet.shape == (header + 4 * 64, label + 64 * len(SHEET_COLUMNS), 3)
    for column in range(len(SHEET_COLUMNS)):
        tiles = [sheet[header + 64 * row : header + 64 * (row + 1),
                       label + 64 * column : label + 64 * (column + 1)] for row in range(4)]
        assert max(tile.std() for tile in tiles) > 0, SHEET_COLUMNS[column]
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_contact_sheet_needs_views():
    with pytest.raises(ValueError, match="no views"):
        contact_sheet([])


def test_inspect_cli(building, tmp_path, capsys):
    out = tmp_path / "cli.png"
    assert main(["data", "inspect", str(building), "--out", str(out), "--views", "2",
                 "--size", "48"]) == 0
    assert cv2.imread(str(out)) is not None
    assert main(["data", "inspect", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path), "--out", str(out)]) == 2
    assert "not a recognised Taskonomy layout" in capsys.readouterr().err
    assert main(["data", "inspect", str(building), "--out", str(tmp_path / "x.jpg")]) == 2


def test_inspect_cli_draws_a_building_of_a_source_of_either_layout(building, tmp_path, capsys):
    import shutil

    # The released layout's source folder, and the same building as Omnidata's downloader
    # lays it out (DOMAIN/taskonomy/BUILDING/...), beside another component dataset's folder.
    omnidata = tmp_path / "omnidata"
    for domain in building.iterdir():
        shutil.copytree(domain, omnidata / domain.name / "taskonomy" / building.name)
        (omnidata / domain.name / "replica" / "apartment_0").mkdir(parents=True)
    (omnidata / "rgb" / "taskonomy" / building.name / ".DS_Store").write_bytes(b"\0")
    for source in (building.parent, omnidata):
        out = tmp_path / f"{source.name}.png"
        assert main(["data", "inspect", str(source), "--building", building.name, "--out",
                     str(out), "--views", "2", "--size", "48"]) == 0, capsys.readouterr().err
        assert cv2.imread(str(out)) is not None
    assert main(["data", "inspect", str(omnidata), "--building", "nowhere", "--out",
                 str(tmp_path / "x.png")]) == 2
    assert f"has no building 'nowhere'; it has {building.name}" in capsys.readouterr().err


def test_inspect_cli_needs_out_for_a_building(building, capsys):
    assert main(["data", "inspect", str(building)]) == 2
    assert "give --out" in capsys.readouterr().err


def test_inspect_cli_draws_a_shard_root(building, tmp_path, capsys):
    packer = pytest.importorskip("taskonomy.datamodules.packer")
    packer.pack(packer.PackConfig(source=building.parent, out=tmp_path / "shards", split="train",
                                  shard_size=3), progress=False)
    out = tmp_path / "shards.png"
    assert main(["data", "inspect", str(tmp_path / "shards"), "--out", str(out), "--views", "2",
                 "--size", "48"]) == 0
    assert cv2.imread(str(out)) is not None
