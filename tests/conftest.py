"""Shared fixtures: tiny buildings in the released layout and their packed shards.

The buildings are made with ``write_domain_file`` and hold valid values for every domain,
including ``point_info`` records with the released field names and fixated cameras, and
``nonfixated_matches``. Session-scoped, 32 px, a few views: the whole set packs in seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from taskonomy.datamodules.domains import DEPTH_MISSING, write_domain_file
from taskonomy.datamodules.packer import PackConfig, pack


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """Give every test the environment and torch thread count the one before it found.

    The CLI sets ``WANDB_MODE`` (and the synthesizer ``NUMBA_CACHE_DIR``) in ``os.environ`` for
    its subprocesses, and tests pin torch to one thread; left in place, they would make a test
    pass or fail by the tests that ran before it.
    """
    environ = dict(os.environ)
    threads = torch.get_num_threads()
    yield
    os.environ.clear()
    os.environ.update(environ)
    torch.set_num_threads(threads)


@pytest.fixture()
def offline_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B offline and one torch thread (OpenMP spin-waits on a shared 2-core machine).

    :func:`_restore_process_state` gives the thread count back after the test.
    """
    monkeypatch.setenv("WANDB_MODE", "offline")
    torch.set_num_threads(1)


TINY_RESOLUTION = 32
TRAIN_BUILDINGS = ("allensville", "beechwood", "coffeen")
VAL_BUILDINGS = ("collierville", "corozal")


def look_at_euler(camera: np.ndarray, target: np.ndarray) -> list[float]:
    """Extrinsic xyz Euler angle of a camera at ``camera`` looking down −z at ``target``."""
    forward = target - camera
    forward /= np.linalg.norm(forward)
    z_axis = -forward
    x_axis = np.cross([0.0, 0.0, 1.0], z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    matrix = np.stack([x_axis, y_axis, z_axis], axis=1)
    return [float(a) for a in Rotation.from_matrix(matrix).as_euler("xyz")]


def _smooth(rng: np.random.Generator, res: int, channels: int) -> np.ndarray:
    coarse = rng.random((4, 4, channels))
    return np.kron(coarse, np.ones((res // 4, res // 4, 1)))


def write_building(root: Path, name: str, *, points: int = 3, views: int = 3,
                   res: int = TINY_RESOLUTION, seed: int = 0) -> Path:
    """Write one building with every domain for ``points`` × ``views`` views."""
    rng = np.random.default_rng(seed)
    building = root / name
    point_locations = {p: rng.uniform([-3, -3, 0.5], [3, 3, 2.0]) for p in range(points)}
    box = {"x": [-4.0, 4.0], "y": [-3.5, 3.5], "z": [0.0, 2.8]}
    for p in range(points):
        visible_in = []
        for v in range(views):
            angle = 2 * np.pi * v / views + rng.uniform(0, 0.3)
            camera = point_locations[p] + [2.0 * np.cos(angle), 2.0 * np.sin(angle), 0.3]
            others = [q for q in range(points) if q != p]
            info = {
                "point_uuid": str(p), "view_id": v, "camera_uuid": f"cam{p}{v}",
                "room": "room0", "resolution": res, "field_of_view_rads": 1.0,
                "camera_location": [float(c) for c in camera],
                "camera_rotation_final": look_at_euler(camera, point_locations[p]),
                "point_location": [float(c) for c in point_locations[p]],
                "bounding_box_ranges": box,
                "nonfixated_points_in_view": others,
                "camera_distance": 2.0, "obliqueness_angle": 0.5, "point_pitch": -0.1,
                "point_normal": [0.0, 0.0, 1.0],
            }
            write_domain_file(building, "point_info", p, v, info)
            visible_in.append({"point_uuid": str(p), "view_id": v, "camera_uuid": f"cam{p}{v}",
                               "nonfixated_pixel_x": res // 2, "nonfixated_pixel_y": res // 2})
            write_domain_file(building, "rgb", p, v,
                              (_smooth(rng, res, 3) * 255).astype(np.uint8))
            depth = (500 + _smooth(rng, res, 1)[:, :, 0] * 4000).astype(np.uint16)
            depth[0, :4] = DEPTH_MISSING
            write_domain_file(building, "depth_zbuffer", p, v, depth)
            write_domain_file(building, "depth_euclidean", p, v, depth + 10)
            for domain in ("normal", "reshading", "principal_curvature"):
                write_domain_file(building, domain, p, v,
                                  rng.integers(0, 256, (res, res, 3), dtype=np.uint8))
            for domain in ("edge_texture", "edge_occlusion", "keypoints2d", "keypoints3d"):
                write_domain_file(building, domain, p, v,
                                  rng.integers(0, 6000, (res, res), dtype=np.uint16))
            for domain in ("segment_unsup2d", "segment_unsup25d"):
                write_domain_file(building, domain, p, v,
                                  rng.integers(0, 12, (res, res), dtype=np.uint8))
            write_domain_file(building, "segment_semantic", p, v,
                              rng.integers(0, 18, (res, res), dtype=np.uint8))
            write_domain_file(building, "class_object", p, v, rng.dirichlet(np.ones(1000)))
            write_domain_file(building, "class_scene", p, v, rng.dirichlet(np.ones(365)))
        matches = {"point_uuid": str(p), "point_location": list(map(float, point_locations[p])),
                   "views": visible_in}
        for v in range(views):
            (building / "nonfixated_matches").mkdir(parents=True, exist_ok=True)
            write_domain_file(building, "nonfixated_matches", p, v, matches)
    return building


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 5 tiny buildings (3 points × 3 views each) in the released layout."""
    root = tmp_path_factory.mktemp("buildings")
    for i, name in enumerate(TRAIN_BUILDINGS + VAL_BUILDINGS):
        write_building(root, name, seed=i)
    return root


@pytest.fixture(scope="session")
def tiny_shards(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_source`` packed into ``train`` (3 buildings) and ``val``/``test`` (2 buildings),
    3 views (one fixated point) per shard."""
    root = tmp_path_factory.mktemp("shards")
    for split, buildings in (("train", TRAIN_BUILDINGS), ("val", VAL_BUILDINGS),
                             ("test", VAL_BUILDINGS)):
        pack(PackConfig(source=tiny_source, out=root, split=split, buildings=list(buildings),
                        shard_size=3), progress=False)
    return root


def read_json(path: Path) -> dict:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def building_factory():
    """:func:`write_building`, for tests that need buildings of their own."""
    return write_building


@pytest.fixture(scope="session")
def train_buildings() -> tuple[str, ...]:
    """Building names of the ``train`` split of ``tiny_shards``."""
    return TRAIN_BUILDINGS
