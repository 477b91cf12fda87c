"""Principal-curvature labels of the synthetic renderer: smoothed, in range, creases present."""

import math

import numpy as np
import pytest

from taskonomy.datamodules.domains import DOMAINS, read_domain_file
from taskonomy.datamodules.synth import synthesize
from taskonomy.datamodules.synth.labels import CURVATURE_SCALE
from taskonomy.datamodules.synth.render import SMOOTHING_RADIUS, _add_creases

RES = 48


@pytest.fixture(scope="module")
def curvatures(tmp_path_factory):
    out = tmp_path_factory.mktemp("curv") / "out"
    synthesize(out, buildings=2, resolution=RES, seed=3, points=2, views=2)
    spec = DOMAINS["principal_curvature"]
    return np.stack([read_domain_file(p, "principal_curvature")
                     for p in sorted(out.glob(f"*/{spec.name}/*.png"))])


def test_curvature_never_saturates_the_8bit_code(curvatures):
    # Every curvature is at most 1/s (a crease rounded to radius s; r + s for curved parts).
    top = 127 + math.ceil(CURVATURE_SCALE / SMOOTHING_RADIUS)
    k1, k2 = curvatures[..., 0].astype(int), curvatures[..., 1].astype(int)
    assert k1.max() <= top and k2.min() >= 254 - top
    assert (k1 > 127).any() and (k2 < 127).any()  # convex and concave creases both occur
    assert np.all(k1 >= k2)


def test_curvature_z_scores_stay_near_the_tanh_range(curvatures):
    # The authors' z-scoring ((x - 123.572) / 31.922, (x - 120.1) / 21.658) of any label lies
    # within ~1.5 of the decoder's tanh range, as their labels' one-standard-deviation spread.
    k1 = (curvatures[..., 0] - 123.572) / 31.922
    k2 = (curvatures[..., 1] - 120.1) / 21.658
    assert k1.max() < 1.1 and k2.min() > -1.1
    assert k2.max() < 1.6  # spheres only: k2 = k1 > 0


def test_crease_band_width_follows_the_smoothing_radius():
    # Two walls meeting in a concave 90° corner along the z axis, seen head-on from 3 m: the
    # band of k2 = -1/s must be about θ·s = π/2 · s wide on the walls.
    res = 128
    origin = np.array([0.0, 0.0, 0.0])
    fov = 1.0
    focal = res / 2 / math.tan(fov / 2)
    v, u = np.mgrid[0:res, 0:res] + 0.5
    rays = np.stack([(u - res / 2) / focal, (v - res / 2) / focal, np.ones_like(u)], -1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    # Left wall x − z = −3 and right wall −x − z = −3 meet at (0, ·, 3); unit normals towards
    # the camera at the origin.
    n1 = np.array([1.0, 0.0, -1.0]) / math.sqrt(2)
    n2 = np.array([-1.0, 0.0, -1.0]) / math.sqrt(2)
    apex = np.array([0.0, 0.0, 3.0])
    t1 = (apex @ n1) / (rays @ n1)
    t2 = (apex @ n2) / (rays @ n2)
    left = rays[..., 0] < 0
    distance = np.where(left, t1, t2)
    normals = np.where(left[..., None], n1, n2)
    hit = np.ones((res, res), bool)
    curvature = _add_creases(np.zeros((res, res, 2)), origin, rays, normals, distance, hit,
                             1.0 / focal)
    row = curvature[res // 2, :, 1]
    assert np.allclose(curvature[..., 0], 0.0)  # concave: k1 untouched
    assert np.allclose(row[row != 0], -1.0 / SMOOTHING_RADIUS)
    band = np.count_nonzero(row)
    # Band width along the walls in metres (near the corner a pixel covers
    # distance · pixel angle / cos 45° of wall).
    width = band * distance[res // 2, res // 2] / focal * math.sqrt(2)
    assert width == pytest.approx(math.pi / 2 * SMOOTHING_RADIUS, rel=0.25)
