import json
import os
from pathlib import Path

import numpy as np
import pytest

from taskonomy.datamodules.cameras import camera_from_point_info, room_box_world
from taskonomy.datamodules.domains import DEPTH_MISSING, DOMAINS, read_domain_file
from taskonomy.datamodules.synth import MANIFEST, SPLIT_FILE, read_split_csv, synthesize
from taskonomy.datamodules.synth.classes import places_home_workspace_mask
from taskonomy.datamodules.synth.labels import RENDERED_DOMAINS
from taskonomy.experiments.cli import main

RES = 48
POINTS, VIEWS = 3, 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "out"
    synthesize(out, buildings=3, resolution=RES, seed=7, points=POINTS, views=VIEWS)
    return out


def _views(building: Path):
    for path in sorted((building / "point_info").iterdir()):
        record = read_domain_file(path, "point_info")
        yield record["point_uuid"], record["view_id"], record


def _load(building: Path, domain: str, point, view):
    spec = DOMAINS[domain]
    return read_domain_file(building / spec.name / spec.file_name(point, view), domain)


def _buildings(dataset: Path):
    return sorted(p for p in dataset.iterdir() if p.is_dir())


def _to_camera_units(record):
    """Unit directions from each pixel centre towards the camera, in the released normal frame."""
    camera = camera_from_point_info(record)
    v, u = np.mgrid[0:RES, 0:RES] + 0.5
    rays = np.stack([(u - camera.K[0, 2]) / camera.K[0, 0], (v - camera.K[1, 2]) / camera.K[1, 1],
                     np.ones_like(u)], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    # Towards the camera is -ray (OpenCV); the released frame has z pointing at the camera.
    return np.stack([-rays[..., 0], -rays[..., 1], rays[..., 2]], axis=-1), rays


def test_every_domain_file_exists_and_decodes(dataset):
    for building in _buildings(dataset):
        assert sorted(p.name for p in building.iterdir()) == sorted(DOMAINS)
        assert sorted(RENDERED_DOMAINS) == sorted(DOMAINS)  # what the demo checks tasks against
        for name, spec in DOMAINS.items():
            files = sorted((building / spec.name).iterdir())
            assert len(files) == (POINTS if spec.per_point else POINTS * VIEWS), name
            for path in files:
                assert not path.name.startswith(".")
                value = read_domain_file(path, name)
                if spec.kind in ("rgb8", "gray8", "gray16"):
                    assert value.shape[:2] == (RES, RES), (name, path.name)
                elif name == "class_object":
                    assert value.shape == (1000,) and value.sum() == pytest.approx(1, abs=1e-4)
                elif name == "class_scene":
                    assert value.shape == (365,) and value.sum() == pytest.approx(1, abs=1e-4)
                    assert value[places_home_workspace_mask()].sum() > 0.99


def test_point_info_has_every_released_field(dataset):
    released = {
        "vanishing_points_gaussian_sphere", "nonfixated_points_in_view", "point_pitch",
        "camera_rotation_from_original_to_final", "camera_location", "camera_rotation_original",
        "view_id", "point_location", "camera_distance", "bounding_box_ranges",
        "obliqueness_angle", "resolution", "point_uuid", "point_normal", "camera_rotation_final",
        "vanishing_points_image", "camera_uuid", "field_of_view_rads", "room",
    }
    fovs = []
    for building in _buildings(dataset):
        for _, _, record in _views(building):
            assert set(record) == released
            assert record["resolution"] == RES
            fovs.append(record["field_of_view_rads"])
    assert 0.85 <= min(fovs) and max(fovs) <= 1.28


def test_fixated_point_projects_to_image_centre_and_depth_agrees(dataset):
    for building in _buildings(dataset):
        for point, view, record in _views(building):
            lo, hi = room_box_world(record)  # the released x/y swap, as on real records
            for key in ("camera_location", "point_location"):
                position = np.array(record[key])
                assert np.all(position >= lo - 1e-6) and np.all(position <= hi + 1e-6)
            camera = camera_from_point_info(record)
            pixels, depth = camera.project(np.array(record["point_location"]))
            assert np.allclose(pixels[0], [RES / 2, RES / 2], atol=1e-6)
            assert depth[0] > 0
            euclid = _load(building, "depth_euclidean", point, view) / 512.0
            centre = euclid[RES // 2 - 1 : RES // 2 + 1, RES // 2 - 1 : RES // 2 + 1]
            assert np.min(np.abs(centre - record["camera_distance"])) < 0.05 * depth[0] + 0.01


def test_nonfixated_matches_project_to_their_pixels(dataset):
    seen_other = 0
    for building in _buildings(dataset):
        records = {(str(p), str(v)): r for p, v, r in _views(building)}
        for path in (building / "nonfixated_matches").iterdir():
            match = read_domain_file(path, "nonfixated_matches")
            own = [v for v in match["views"] if v["point_uuid"] == match["point_uuid"]]
            assert len(own) == VIEWS  # a fixated point is visible in all of its own views
            for sighting in match["views"]:
                record = records[(sighting["point_uuid"], str(sighting["view_id"]))]
                assert sighting["camera_uuid"] == record["camera_uuid"]
                pixels, _ = camera_from_point_info(record).project(
                    np.array(match["point_location"]))
                assert np.allclose(pixels[0], [sighting["nonfixated_pixel_x"],
                                               sighting["nonfixated_pixel_y"]], atol=1e-6)
                if sighting["point_uuid"] != match["point_uuid"]:
                    seen_other += 1
                    assert int(match["point_uuid"]) in record["nonfixated_points_in_view"]
    assert seen_other > 0


def test_zbuffer_depth_never_exceeds_euclidean_depth(dataset):
    for building in _buildings(dataset):
        for point, view, _ in _views(building):
            z = _load(building, "depth_zbuffer", point, view).astype(int)
            e = _load(building, "depth_euclidean", point, view).astype(int)
            valid = (z < DEPTH_MISSING) & (e < DEPTH_MISSING)
            assert np.array_equal(z < DEPTH_MISSING, e < DEPTH_MISSING)  # windows miss in both
            assert valid.mean() > 0.3
            assert np.all(z[valid] <= e[valid] + 1)
            assert np.any(z[valid] < e[valid])


def test_normals_unit_length_facing_camera_and_reshading_is_their_lambert_term(dataset):
    for building in _buildings(dataset):
        for point, view, record in _views(building):
            valid = _load(building, "depth_zbuffer", point, view) < DEPTH_MISSING
            normal = (_load(building, "normal", point, view) / 255.0 - 0.5) * 2.0
            norms = np.linalg.norm(normal, axis=-1)
            assert np.all(np.abs(norms[valid] - 1.0) < 0.02)
            assert np.all(norms[~valid] < 0.01)  # no surface through a window
            to_camera, _ = _to_camera_units(record)
            cosine = np.sum(normal * to_camera, axis=-1)
            assert np.all(cosine[valid] > -0.02)
            shading = _load(building, "reshading", point, view)
            assert np.array_equal(shading[..., 0], shading[..., 1])
            lambert = np.where(valid, np.clip(cosine, 0, 1), 0.0)
            assert np.abs(shading[..., 0] / 255.0 - lambert).max() < 0.03


def test_occlusion_edges_sit_on_depth_discontinuities(dataset):
    total = 0
    for building in _buildings(dataset):
        for point, view, _ in _views(building):
            edges = _load(building, "edge_occlusion", point, view)
            raw = _load(building, "depth_zbuffer", point, view)
            z = np.where(raw < DEPTH_MISSING, raw / 512.0, np.nan)
            padded = np.pad(z, 1, mode="edge")
            around = np.stack([padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2],
                               padded[1:-1, 2:]])
            jump = np.nanmax(np.abs(np.where(np.isnan(around), z, around) - z), axis=0)
            on = edges > 0
            assert not np.any(on & np.isnan(z))  # no edges in windows
            total += on.sum()
            assert np.all(jump[on] > 0.015)
            # The stored strength is the jump itself (1 cm units).
            assert np.allclose(edges[on] / 100.0, jump[on], atol=0.01)
    assert total > 0


def test_labels_are_in_their_ranges(dataset):
    counts: dict[str, list[int]] = {"segment_unsup2d": [], "segment_unsup25d": []}
    for building in _buildings(dataset):
        for point, view, _ in _views(building):
            semantic = _load(building, "segment_semantic", point, view)
            assert semantic.max() <= 17 and (semantic == 1).any()
            curvature = _load(building, "principal_curvature", point, view)
            assert np.all(curvature[..., 0] >= curvature[..., 1])  # k1 >= k2
            flat = semantic == 1  # room shell and background furniture: all planes
            assert np.all(curvature[..., 0][flat & (curvature[..., 0] != 127)] >= 127)
            for name in ("segment_unsup2d", "segment_unsup25d"):
                counts[name].append(len(np.unique(_load(building, name, point, view))))
    for name, values in counts.items():  # a bare wall may be one segment; most views are not
        assert np.mean(np.array(values) >= 2) > 0.5, (name, values)


def test_split_file_is_released_format_and_disjoint(dataset):
    split = read_split_csv(dataset / SPLIT_FILE)
    assert sorted(split) == sorted(p.name for p in _buildings(dataset))
    assert sorted(split.values()) == ["test", "train", "val"]
    lines = (dataset / SPLIT_FILE).read_text().splitlines()
    assert lines[0] == "id,train,val,test"
    assert all(sum(map(int, line.split(",")[1:])) == 1 for line in lines[1:])


def test_split_csv_reader_accepts_released_line_ends(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_bytes(b"id,train,val,test\rhanson,1,0,0\rwiconisco,0,1,0\rihlen,0,0,1")
    assert read_split_csv(path) == {"hanson": "train", "wiconisco": "val", "ihlen": "test"}
    path.write_text("id,train,val,test\nhanson,1,1,0\n")
    with pytest.raises(ValueError, match="exactly one split"):
        read_split_csv(path)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes_and_names_and_splits_given(tmp_path):
    kwargs = dict(buildings=["hanson", "merom"], resolution=32, points=2, views=2,
                  split_names={"hanson": "train", "merom": "test"})
    synthesize(tmp_path / "a", seed=3, **kwargs)
    synthesize(tmp_path / "b", seed=3, **kwargs)
    synthesize(tmp_path / "c", seed=4, **kwargs)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert read_split_csv(tmp_path / "a" / SPLIT_FILE) == {"hanson": "train", "merom": "test"}


def test_interrupted_run_resumes(tmp_path):
    out = tmp_path / "out"
    settings = dict(buildings=2, resolution=32, seed=5, points=2, views=1)
    synthesize(out, **settings)
    reference = _tree_bytes(out)
    # Simulate a kill while the second building was being written.
    (out / "synth001").rename(out / ".partial-synth001")
    (out / ".partial-synth001" / "rgb" / "point_0_view_0_domain_rgb.png").write_bytes(b"junk")
    kept = (out / "synth000" / "rgb" / "point_0_view_0_domain_rgb.png").stat().st_mtime_ns
    synthesize(out, **settings)
    assert not (out / ".partial-synth001").exists()
    assert _tree_bytes(out) == reference
    assert (out / "synth000" / "rgb" / "point_0_view_0_domain_rgb.png").stat().st_mtime_ns == kept


def test_bad_input_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not synthetic buildings"):
        synthesize(foreign, buildings=1, resolution=32, points=1, views=1)
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "out"
    synthesize(out, buildings=1, resolution=32, seed=1, points=1, views=1)
    with pytest.raises(ValueError, match="other settings"):
        synthesize(out, buildings=1, resolution=32, seed=2, points=1, views=1)
    (out / "stray").mkdir()
    with pytest.raises(FileExistsError, match="stray"):
        synthesize(out, buildings=1, resolution=32, seed=1, points=1, views=1)
    with pytest.raises(ValueError, match="resolution"):
        synthesize(tmp_path / "x", buildings=1, resolution=4)
    with pytest.raises(ValueError, match="unique"):
        synthesize(tmp_path / "x", buildings=["a", "a"], resolution=32)
    with pytest.raises(ValueError, match="plain folder names"):
        synthesize(tmp_path / "x", buildings=[MANIFEST], resolution=32)
    with pytest.raises(ValueError, match="train, val, test"):
        synthesize(tmp_path / "x", buildings=["a"], resolution=32, split_names={"a": "dev"})
    assert not (tmp_path / "x").exists()


def test_cli_synth_and_its_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--buildings", "1", "--resolution", "32",
                 "--points", "1", "--views", "1"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["buildings"] == ["synth000"] and manifest["resolution"] == 32
    assert main(["data", "synth", "--out", str(out), "--buildings", "1", "--resolution", "32",
                 "--points", "1", "--views", "1", "--seed", "9"]) == 2
    assert "other settings" in capsys.readouterr().err
    # One building gives train only: said at once, and packing val names the empty part.
    assert main(["data", "synth", "--out", str(out), "--buildings", "1", "--resolution", "32",
                 "--points", "1", "--views", "1"]) == 0
    captured = capsys.readouterr()
    assert "split: 1 train, 0 val, 0 test" in captured.out
    assert "no val or test building" in captured.err
    assert main(["data", "pack", str(out), "--out", str(tmp_path / "shards"),
                 "--split", "val"]) == 2
    assert "lists no 'val' buildings" in capsys.readouterr().err
    assert not (tmp_path / "shards").exists()
    # A count beside names would be dropped silently: refused before anything is written.
    assert main(["data", "synth", "--out", str(tmp_path / "named"), "--buildings", "5",
                 "--names", "a", "b"]) == 2
    assert "--buildings 5 with --names" in capsys.readouterr().err
    assert not (tmp_path / "named").exists()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_worker_processes_do_not_change_the_bytes(tmp_path):
    settings = dict(buildings=2, resolution=32, seed=11, points=1, views=2)
    synthesize(tmp_path / "one", workers=1, **settings)
    synthesize(tmp_path / "two", workers=2, **settings)
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


def _oracle_hits(prims, origin, dirs):
    """Brute-force numpy ray caster for rooms, spheres and oriented boxes (a test oracle)."""
    best = np.full(len(dirs), np.inf)
    index = np.full(len(dirs), -1)
    for i, row in enumerate(prims):
        kind, centre, half = int(row[0]), row[1:4], row[4:7]
        rotation = row[7:16].reshape(3, 3)
        local_o = (origin - centre) @ rotation
        local_d = dirs @ rotation
        if kind == 2:  # sphere
            b = local_d @ local_o
            c = local_o @ local_o - half[0] ** 2
            disc = b * b - c
            root = np.sqrt(np.maximum(disc, 0))
            t = np.where(disc >= 0, -b - root, np.inf)
            t = np.where(t > 1e-6, t, np.where(disc >= 0, -b + root, np.inf))
        else:  # box slabs; the room is hit where the ray leaves it
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = (-half - local_o) / local_d
                t2 = (half - local_o) / local_d
            near = np.max(np.minimum(t1, t2), axis=1)
            far = np.min(np.maximum(t1, t2), axis=1)
            t = np.where(near <= far, far if kind == 0 else near, np.inf)
        t = np.where(t > 1e-6, t, np.inf)
        closer = t < best
        best[closer], index[closer] = t[closer], i
    return best, index


def test_ray_caster_matches_a_numpy_oracle_and_frustum_culling_changes_nothing():
    from taskonomy.datamodules.synth import raycast
    from taskonomy.datamodules.synth.render import camera_rays
    from taskonomy.datamodules.synth.scene import _Builder, _material, _yaw

    builder = _Builder()
    grey = _material(np.array([0.5, 0.5, 0.5]))
    builder.add(raycast.ROOM, np.array([2.0, 2.0, 1.5]), (2.0, 2.0, 1.5), np.eye(3), grey, 1, 0)
    builder.add(raycast.SPHERE, np.array([2.0, 2.0, 1.0]), (0.5, 0.5, 0.5), np.eye(3), grey, 2, 1)
    builder.add(raycast.BOX, np.array([1.0, 3.0, 1.0]), (0.2, 0.3, 0.4), _yaw(0.5), grey, 3, 2)
    builder.add(raycast.BOX, np.array([3.0, 1.0, 0.5]), (0.4, 0.2, 0.5), _yaw(-1.1), grey, 3, 3)
    prims = np.array(builder.prims)
    mats = np.array(builder.materials)
    lights = np.array([[2.0, 2.0, 2.8, 1.0, 1.0, 1.0]])
    rng = np.random.default_rng(0)
    origin = np.array([0.5, 0.7, 1.4])
    dirs = rng.normal(size=(4000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out = raycast.trace_rays(prims, mats, lights, origin, dirs, shade=False)
    t, index = _oracle_hits(prims, origin, dirs)
    assert np.array_equal(out["index"], index)
    assert np.allclose(out["t"], t, rtol=1e-9, atol=1e-9)
    assert {0, 1, 2, 3} <= set(index.tolist())
    # Known hit: straight up to the ceiling, normal pointing back into the room.
    up = raycast.trace_rays(prims, mats, lights, origin, np.array([[0.0, 0.0, 1.0]]), False)
    assert up["t"][0] == pytest.approx(1.6) and np.allclose(up["normal"][0], [0, 0, -1])

    from taskonomy.datamodules.synth.point_info import look_at_camera

    camera = look_at_camera(origin, np.array([3.0, 1.0, 0.5]), 0.9, 32)
    rays = camera_rays(camera).reshape(-1, 3)
    candidates = raycast.frustum_candidates(prims, camera.world_to_camera, 0.5, 0.5)
    assert len(candidates) < len(prims)
    culled = raycast.trace_rays(prims, mats, lights, origin, rays, True, candidates)
    full = raycast.trace_rays(prims, mats, lights, origin, rays, True)
    for key in ("t", "index", "normal", "rgb"):
        assert np.array_equal(culled[key], full[key]), key


def test_unknown_names_list_the_valid_ones():
    from taskonomy.datamodules.synth.classes import room_type, semantic_label

    with pytest.raises(ValueError, match="valid: living_room"):
        room_type("garage")
    with pytest.raises(ValueError, match="valid: background, bottle"):
        semantic_label("teddy bear")


def test_read_only_package_folder_moves_the_numba_cache(tmp_path, monkeypatch):
    import numba

    from taskonomy.datamodules.synth import raycast

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(raycast.os, "access", lambda path, mode: False)
    previous = numba.config.CACHE_DIR
    try:
        raycast._ensure_writable_numba_cache()
        target = tmp_path / "taskonomy" / "numba"
        assert os.environ["NUMBA_CACHE_DIR"] == str(target) and target.is_dir()
        assert numba.config.CACHE_DIR == str(target)
    finally:
        numba.config.CACHE_DIR = previous


def _first_appearance_ids(labels):
    """Segment ids renumbered by first appearance in raster order (capped at 255)."""
    flat = labels.reshape(-1)
    _, first = np.unique(flat, return_index=True)
    rank = {int(flat[p]): k for k, p in enumerate(sorted(first))}
    return np.minimum(np.vectorize(rank.get)(labels), 255).astype(np.uint8)


def test_felzenszwalb_gives_opencvs_segments():
    import cv2

    from taskonomy.datamodules.synth import felzenszwalb

    rng = np.random.default_rng(3)
    image = np.zeros((48, 64, 3), dtype=np.uint8)
    image[:, :20] = (200, 40, 40)
    image[10:40, 30:60] = (30, 160, 60)
    cv2.circle(image, (20, 30), 9, (40, 40, 220), -1)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    geometry = rng.normal(0, 3, (48, 64, 5)).astype(np.float32)
    geometry[:, 32:] += 90.0
    for picture, sigma, k in ((image, 0.8, 400.0), (geometry, 0.5, 600.0)):
        reference = cv2.ximgproc.segmentation.createGraphSegmentation(sigma, k, 20).processImage(
            picture)
        ours = felzenszwalb.segment(picture, sigma, k, 20)
        assert ours.dtype == np.uint8 and ours.shape == picture.shape[:2]
        assert ours.max() >= 2  # several segments, not one
        assert np.array_equal(ours, _first_appearance_ids(reference))
    with pytest.raises(ValueError, match="H×W"):
        felzenszwalb.segment(np.zeros(5), 0.5, 100.0, 4)


def _small_scene_view(resolution=40):
    from taskonomy.datamodules.synth.building import plan_building

    scenes, fixated = plan_building("tiles", 5, resolution, 1, 1)
    return scenes[fixated[0].room], fixated[0].views[0].camera


def test_tiled_caster_equals_testing_every_primitive_for_every_ray():
    from taskonomy.datamodules.synth import raycast, tiles
    from taskonomy.datamodules.synth.render import camera_rays

    scene, camera = _small_scene_view()
    rays = camera_rays(camera)
    rotation = np.ascontiguousarray(camera.world_to_camera[:3, :3])
    centres = np.ascontiguousarray(scene.prims[:, 1:4] @ rotation.T
                                   + camera.world_to_camera[:3, 3])
    shape = rays.shape[:2]
    lights = scene.lights.reshape(-1, 6)
    k = camera.K
    for antialias in (False, True):
        out = [np.empty(shape), np.empty(shape, np.int32), np.empty((*shape, 3)),
               np.empty(shape, np.int8), np.empty((*shape, 3)), np.zeros(shape, bool)]
        tiles.render_tiles(scene.prims, scene.materials, lights, camera.centre, rays, rotation,
                           centres, k[0, 0], k[1, 1], k[0, 2], k[1, 2], antialias, *out)
        full = raycast.trace_rays(scene.prims, scene.materials, lights, camera.centre,
                                  rays.reshape(-1, 3), True)
        assert np.array_equal(out[1].reshape(-1), full["index"])
        assert np.array_equal(out[0].reshape(-1), full["t"])
        assert np.array_equal(out[2].reshape(-1, 3), full["normal"])
        edge = out[5]
        assert edge.any() != (not antialias)
        # Off silhouettes, the shading is the full caster's; on them, the mean of 4 sub-pixels.
        assert np.array_equal(out[4][~edge], full["rgb"].reshape(*shape, 3)[~edge])
        rows, cols = np.nonzero(edge)
        if len(rows):
            mean = np.zeros((len(rows), 3))
            for dx, dy in tiles.SUBPIXELS:
                sub = np.array([tiles._subpixel_ray(rotation, k[0, 0], k[1, 1], k[0, 2], k[1, 2],
                                                    c + 0.5 + dx, r + 0.5 + dy)
                                for r, c in zip(rows, cols, strict=True)])
                mean += raycast.trace_rays(scene.prims, scene.materials, lights, camera.centre,
                                           sub, True)["rgb"]
            assert np.allclose(out[4][rows, cols], mean / 4, rtol=1e-12, atol=1e-12)


def test_compiled_label_encodings_match_their_numpy_formulas():
    from taskonomy.datamodules.synth import labels

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 200.0, (24, 24))
    depth[3, 4] = np.inf
    depth[5:9, 5:9] = 2.0
    depth[5:9, 9:12] = 4.0
    raw = np.round(np.where(np.isfinite(depth), depth, 0.0) * 512.0)
    expected = np.where(np.isfinite(depth) & (raw < 65535), raw, 65535).astype(np.uint16)
    assert np.array_equal(labels.encode_depth(depth), expected)
    unit = rng.uniform(-1.2, 1.2, (24, 24, 3))
    assert np.array_equal(labels.encode_unit(unit),
                          np.clip(np.round((unit + 1.0) * 127.5), 0, 255).astype(np.uint8))
    curvature = rng.normal(0.0, 8.0, (24, 24, 2))
    encoded = labels.encode_curvature(curvature)
    assert np.array_equal(encoded[..., :2], np.clip(np.round(127.0 + 10.0 * curvature), 0, 255))
    assert not encoded[..., 2].any()
    # Occlusion edges: only where the planes at 2 m and 4 m meet, not inside either.
    plane = np.full((16, 16), 3.0)
    plane[:, 8:] = 6.0
    plane[2, 2] = np.inf
    strength = labels.occlusion_strength(plane)
    assert set(np.nonzero(strength)[1].tolist()) == {7, 8}
    assert np.allclose(strength[strength > 0], 3.0)


def test_batched_free_floor_points_follow_the_one_by_one_search():
    from taskonomy.datamodules.synth.scene import generate_room

    def one_by_one(scene, rng, margin=0.35, tries=200):
        lo, hi = scene.bounds
        for _ in range(tries):
            x = rng.uniform(lo[0] + margin, hi[0] - margin)
            y = rng.uniform(lo[1] + margin, hi[1] - margin)
            if all(not (a - margin < x < c + margin and b - margin < y < d + margin)
                   for a, b, c, d in scene.footprints):
                return np.array([x, y])
        return None

    scene = generate_room(np.random.default_rng(4), np.zeros(3))
    assert scene.footprints
    ours, reference = np.random.default_rng(9), np.random.default_rng(9)
    for tries in (200, 200, 3, 1):
        point, expected = scene.free_floor_point(ours, tries=tries), one_by_one(
            scene, reference, tries=tries)
        assert (point is None) == (expected is None)
        if point is not None:
            assert np.array_equal(point, expected)
    assert ours.random() == reference.random()  # the streams stay in step


def test_a_building_whose_first_layout_is_too_cramped_gets_another(monkeypatch):
    from taskonomy.datamodules.synth import building

    # synth697 (seed 0): its first room layout cannot fit 4 fixated points with 3 views.
    scenes, fixated = building.plan_building("synth697", 0, 32, 4, 3)
    assert len(fixated) == 4 and all(len(p.views) == 3 for p in fixated)
    assert scenes
    monkeypatch.setattr(building, "_plan_layout", lambda *args: None)
    with pytest.raises(RuntimeError, match="fewer points or views"):
        building.plan_building("synth000", 0, 32, 4, 3)
