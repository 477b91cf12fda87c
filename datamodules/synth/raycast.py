"""Analytic ray caster over boxes, spheres and capped cylinders, compiled with numba.

A scene is a flat table of primitives (one row each, see :data:`PRIM_COLUMNS`) so the kernels
loop over plain arrays. Kind 0 is the room shell: the inside of a box, hit where a ray leaves it,
with normals pointing into the room. Kind 4 is a window: a box around an opening in the shell;
rays that would hit the shell inside a window leave the room and hit nothing (missing depth, sky
colour), as rays through windows do in the released scans. Each primitive has a local frame
(rotation matrix stored row-major, local → world); boxes and cylinders are intersected in that
frame, cylinders along their local z axis. A bounding-sphere test skips most primitives cheaply.

Whole views are rendered by :mod:`.tiles` on top of these kernels (per-tile culling of primary
and shadow rays); :func:`trace_rays` and its view-wide culling helpers serve single rays (camera
planning), the benchmark's reference path and the tests' oracle.

Numba caches compiled kernels next to this module (``cache=True``); where the package folder is
read-only (site-packages of a system install), ``NUMBA_CACHE_DIR`` is pointed at a user cache
folder before numba is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _ensure_writable_numba_cache() -> None:
    """Point numba's cache at a user folder when this package folder is not writable."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.access(Path(__file__).parent, os.W_OK):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    target = Path(base) / "taskonomy" / "numba"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        target = Path(tempfile.gettempdir()) / "taskonomy-numba-cache"
        target.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(target)
    import sys

    if "numba" in sys.modules:  # imported earlier by someone else: set its config directly
        sys.modules["numba"].config.CACHE_DIR = str(target)


_ensure_writable_numba_cache()

import numba  # noqa: E402
import numpy as np  # noqa: E402

#: Columns of the primitive table.
PRIM_COLUMNS = (
    "kind", "cx", "cy", "cz", "hx", "hy", "hz",
    "r00", "r01", "r02", "r10", "r11", "r12", "r20", "r21", "r22", "bound",
)
#: Primitive kinds.
ROOM, BOX, SPHERE, CYLINDER, WINDOW = 0, 1, 2, 3, 4
#: Surface kinds reported per hit (for analytic curvature).
FACE_FLAT, FACE_SPHERE, FACE_CYLINDER = 0, 1, 2
#: Material columns: colour a (3), colour b (3), pattern, pattern scale.
MATERIAL_COLUMNS = ("ra", "ga", "ba", "rb", "gb", "bb", "pattern", "scale")
#: Texture patterns.
PLAIN, CHECKER, STRIPES, PLANKS, NOISE = 0, 1, 2, 3, 4

_INF = 1e30
#: Linear radiance seen through windows (bright overcast sky).
SKY = (1.6, 1.7, 1.9)


@numba.njit(cache=True, error_model="numpy")
def _hit_primitive(p, i, ox, oy, oz, dx, dy, dz, tmin, tmax):  # noqa: C901
    """Nearest hit of one primitive in (tmin, tmax): (t, nx, ny, nz, face) or t = -1."""
    kind = int(p[i, 0])
    if kind == WINDOW:  # openings are not surfaces
        return -1.0, 0.0, 0.0, 0.0, 0
    cx, cy, cz = p[i, 1], p[i, 2], p[i, 3]
    rx, ry, rz = ox - cx, oy - cy, oz - cz
    if kind != ROOM:
        # Bounding-sphere rejection.
        tca = -(rx * dx + ry * dy + rz * dz)
        r = p[i, 16]
        d2 = rx * rx + ry * ry + rz * rz - tca * tca
        if d2 > r * r or tca + r < tmin or tca - r > tmax:
            return -1.0, 0.0, 0.0, 0.0, 0
    # To the local frame: local = R^T (world).
    lox = p[i, 7] * rx + p[i, 10] * ry + p[i, 13] * rz
    loy = p[i, 8] * rx + p[i, 11] * ry + p[i, 14] * rz
    loz = p[i, 9] * rx + p[i, 12] * ry + p[i, 15] * rz
    ldx = p[i, 7] * dx + p[i, 10] * dy + p[i, 13] * dz
    ldy = p[i, 8] * dx + p[i, 11] * dy + p[i, 14] * dz
    ldz = p[i, 9] * dx + p[i, 12] * dy + p[i, 15] * dz
    hx, hy, hz = p[i, 4], p[i, 5], p[i, 6]
    t = -1.0
    nlx, nly, nlz = 0.0, 0.0, 0.0
    face = FACE_FLAT
    if kind == ROOM or kind == BOX:
        tnear, tfar = -_INF, _INF
        axis_near, axis_far = 0, 0
        sign_near, sign_far = 0.0, 0.0
        for axis in range(3):
            if axis == 0:
                o, d, h = lox, ldx, hx
            elif axis == 1:
                o, d, h = loy, ldy, hy
            else:
                o, d, h = loz, ldz, hz
            if abs(d) < 1e-12:
                if o < -h or o > h:
                    return -1.0, 0.0, 0.0, 0.0, 0
                continue
            t1 = (-h - o) / d
            t2 = (h - o) / d
            s1 = -1.0
            if t1 > t2:
                t1, t2 = t2, t1
                s1 = 1.0
            if t1 > tnear:
                tnear, axis_near, sign_near = t1, axis, s1
            if t2 < tfar:
                tfar, axis_far, sign_far = t2, axis, -s1
        if tnear > tfar:
            return -1.0, 0.0, 0.0, 0.0, 0
        if kind == ROOM:
            t = tfar
            # Exit face: its outward normal is sign_far along axis_far; the room faces inwards.
            if axis_far == 0:
                nlx = -sign_far
            elif axis_far == 1:
                nly = -sign_far
            else:
                nlz = -sign_far
        else:
            t = tnear
            if axis_near == 0:
                nlx = sign_near
            elif axis_near == 1:
                nly = sign_near
            else:
                nlz = sign_near
    elif kind == SPHERE:
        r = hx
        b = lox * ldx + loy * ldy + loz * ldz
        c = lox * lox + loy * loy + loz * loz - r * r
        disc = b * b - c
        if disc < 0.0:
            return -1.0, 0.0, 0.0, 0.0, 0
        sq = np.sqrt(disc)
        t = -b - sq
        if t <= tmin:
            t = -b + sq
        nlx = (lox + t * ldx) / r
        nly = (loy + t * ldy) / r
        nlz = (loz + t * ldz) / r
        face = FACE_SPHERE
    else:  # capped cylinder along local z
        r = hx
        best = _INF
        a = ldx * ldx + ldy * ldy
        if a > 1e-12:
            b = lox * ldx + loy * ldy
            c = lox * lox + loy * loy - r * r
            disc = b * b - a * c
            if disc >= 0.0:
                sq = np.sqrt(disc)
                for root in ((-b - sq) / a, (-b + sq) / a):
                    if tmin < root < best:
                        z = loz + root * ldz
                        if -hz <= z <= hz:
                            best = root
                            nlx = (lox + root * ldx) / r
                            nly = (loy + root * ldy) / r
                            nlz = 0.0
                            face = FACE_CYLINDER
        if abs(ldz) > 1e-12:
            for cap in (-hz, hz):
                root = (cap - loz) / ldz
                if tmin < root < best:
                    x = lox + root * ldx
                    y = loy + root * ldy
                    if x * x + y * y <= r * r:
                        best = root
                        nlx, nly = 0.0, 0.0
                        nlz = 1.0 if cap > 0 else -1.0
                        face = FACE_FLAT
        if best >= _INF:
            return -1.0, 0.0, 0.0, 0.0, 0
        t = best
    if t <= tmin or t >= tmax:
        return -1.0, 0.0, 0.0, 0.0, 0
    # Back to world: n = R n_local.
    nx = p[i, 7] * nlx + p[i, 8] * nly + p[i, 9] * nlz
    ny = p[i, 10] * nlx + p[i, 11] * nly + p[i, 12] * nlz
    nz = p[i, 13] * nlx + p[i, 14] * nly + p[i, 15] * nlz
    return t, nx, ny, nz, face


@numba.njit(cache=True, error_model="numpy")
def intersect(prims, candidates, ox, oy, oz, dx, dy, dz, tmin, tmax):
    """Nearest hit over the candidate primitives: (t, index, nx, ny, nz, face); index −1 on a miss.

    ``candidates`` lists the primitive rows to test (all rows, or those in a camera's frustum).
    """
    best_t = tmax
    best_i = -1
    bnx, bny, bnz = 0.0, 0.0, 0.0
    best_face = 0
    for k in range(candidates.shape[0]):
        i = candidates[k]
        t, nx, ny, nz, face = _hit_primitive(prims, i, ox, oy, oz, dx, dy, dz, tmin, best_t)
        if t > 0.0 and t < best_t:
            best_t, best_i, bnx, bny, bnz, best_face = t, i, nx, ny, nz, face
    if best_i >= 0 and int(prims[best_i, 0]) == ROOM and _in_window(
        prims, ox + best_t * dx, oy + best_t * dy, oz + best_t * dz
    ):
        return tmax, -1, 0.0, 0.0, 0.0, 0
    return best_t, best_i, bnx, bny, bnz, best_face


@numba.njit(cache=True, error_model="numpy")
def _in_window(p, x, y, z):
    """Whether a point of the room shell lies inside one of the window boxes."""
    for i in range(p.shape[0]):
        if int(p[i, 0]) != WINDOW:
            continue
        rx, ry, rz = x - p[i, 1], y - p[i, 2], z - p[i, 3]
        lx = p[i, 7] * rx + p[i, 10] * ry + p[i, 13] * rz
        ly = p[i, 8] * rx + p[i, 11] * ry + p[i, 14] * rz
        lz = p[i, 9] * rx + p[i, 12] * ry + p[i, 15] * rz
        if abs(lx) <= p[i, 4] and abs(ly) <= p[i, 5] and abs(lz) <= p[i, 6]:
            return True
    return False


@numba.njit(cache=True, error_model="numpy")
def occluded(prims, rows, count, ox, oy, oz, dx, dy, dz, tmin, tmax):
    """Whether a primitive among ``rows[:count]`` lies on the ray in (tmin, tmax) (any hit)."""
    for k in range(count):
        t, _, _, _, _ = _hit_primitive(prims, rows[k], ox, oy, oz, dx, dy, dz, tmin, tmax)
        if t > 0.0:
            return True
    return False


@numba.njit(cache=True, error_model="numpy")
def _hash(i, j, k):
    h = (i * 73856093) ^ (j * 19349663) ^ (k * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF) / 16777215.0


@numba.njit(cache=True, error_model="numpy")
def _value_noise(x, y, z):
    ix, iy, iz = int(np.floor(x)), int(np.floor(y)), int(np.floor(z))
    fx, fy, fz = x - ix, y - iy, z - iz
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    fz = fz * fz * (3.0 - 2.0 * fz)
    result = 0.0
    for a in range(2):
        wx = fx if a else 1.0 - fx
        for b in range(2):
            wy = fy if b else 1.0 - fy
            for c in range(2):
                wz = fz if c else 1.0 - fz
                result += wx * wy * wz * _hash(ix + a, iy + b, iz + c)
    return result


@numba.njit(cache=True, error_model="numpy")
def _albedo(mat, x, y, z, nx, ny, nz):
    """Procedural albedo of a material at a world point with normal n: (r, g, b)."""
    pattern = int(mat[6])
    s = mat[7]
    # Surface coordinates: the two world axes most orthogonal to the normal.
    ax, ay, az = abs(nx), abs(ny), abs(nz)
    if az >= ax and az >= ay:
        u, v = x, y
    elif ax >= ay:
        u, v = y, z
    else:
        u, v = x, z
    w = 0.0
    if pattern == PLANKS:  # wood grain along the planks
        row = int(np.floor(v * s))
        w = _hash(row, int(np.floor(u * s * 0.25 + _hash(row, 7, 1) * 4.0)), 3)
        grain = 0.8 + 0.4 * _value_noise(u * 3.0, v * 60.0, float(row))
    elif pattern == PLAIN:  # paint: faint low-frequency blotches
        grain = 0.93 + 0.07 * _value_noise(x * 8.0, y * 8.0, z * 8.0)
    else:  # patterned materials get a fine grain
        grain = 0.85 + 0.3 * _value_noise(x * 40.0, y * 40.0, z * 40.0)
    if pattern == CHECKER:
        w = float((int(np.floor(u * s)) + int(np.floor(v * s))) & 1)
    elif pattern == STRIPES:
        w = 1.0 if np.sin(u * s * 6.283185307) + np.sin(v * s * 0.5) * 0.2 > 0.3 else 0.0
    elif pattern == NOISE:
        w = 0.65 * _value_noise(x * s, y * s, z * s) + 0.35 * _value_noise(
            x * s * 3.1, y * s * 3.1, z * s * 3.1
        )
    r = (mat[0] * (1.0 - w) + mat[3] * w) * grain
    g = (mat[1] * (1.0 - w) + mat[4] * w) * grain
    b = (mat[2] * (1.0 - w) + mat[5] * w) * grain
    return r, g, b


@numba.njit(cache=True, error_model="numpy")
def _shade(prims, mats, lights, occluders, counts, i, x, y, z, nx, ny, nz):
    """Linear radiance of a hit: ambient plus point lights with hard shadows.

    Shadow rays towards light k test the rows ``occluders[k, :counts[k]]``.
    """
    ar, ag, ab = _albedo(mats[i], x, y, z, nx, ny, nz)
    # Ambient stand-in for light bounced off the walls, plus the floor's bounce on ceilings.
    bounce = 0.3 * max(0.0, -nz)
    lr, lg, lb = 0.3 + bounce, 0.3 + bounce * 0.95, 0.32 + bounce * 0.9
    ex, ey, ez = x + nx * 1e-4, y + ny * 1e-4, z + nz * 1e-4
    for k in range(lights.shape[0]):
        lx, ly, lz = lights[k, 0] - x, lights[k, 1] - y, lights[k, 2] - z
        dist = np.sqrt(lx * lx + ly * ly + lz * lz)
        lx, ly, lz = lx / dist, ly / dist, lz / dist
        cosine = nx * lx + ny * ly + nz * lz
        if cosine <= 0.0:
            continue
        if occluded(prims, occluders[k], counts[k], ex, ey, ez, lx, ly, lz, 1e-4, dist - 1e-3):
            continue
        falloff = cosine / (1.0 + 0.08 * dist * dist)
        lr += lights[k, 3] * falloff
        lg += lights[k, 4] * falloff
        lb += lights[k, 5] * falloff
    return ar * lr, ag * lg, ab * lb


@numba.njit(cache=True, error_model="numpy")
def trace(prims, candidates, mats, lights, occluders, counts, origin, dirs, shade, out_t,
          out_index, out_normal, out_face, out_rgb):
    """Cast one ray per row of ``dirs`` from ``origin``; fill the output buffers.

    Args:
        prims: Primitive table (N×17).
        candidates: Rows of ``prims`` the rays may hit (shadow rays test every row).
        mats: Material table (N×8).
        lights: Point lights (L×6: position, linear RGB intensity).
        occluders: L×N rows that may shadow each light (see :func:`shadow_candidates`).
        counts: (L,) valid entries per row of ``occluders``.
        origin: Ray origin (3,).
        dirs: Unit ray directions (M×3).
        shade: Whether to compute radiance into ``out_rgb``.
        out_t: (M,) distance along the ray (euclidean depth), ``inf`` on a miss.
        out_index: (M,) primitive index, −1 on a miss.
        out_normal: (M×3) world normal facing the ray origin.
        out_face: (M,) surface kind (flat, sphere, cylinder side).
        out_rgb: (M×3) linear radiance (written only when ``shade``).
    """
    ox, oy, oz = origin[0], origin[1], origin[2]
    for k in range(dirs.shape[0]):
        dx, dy, dz = dirs[k, 0], dirs[k, 1], dirs[k, 2]
        t, i, nx, ny, nz, face = intersect(prims, candidates, ox, oy, oz, dx, dy, dz, 1e-6, _INF)
        out_index[k] = i
        if i < 0:
            out_t[k] = np.inf
            out_normal[k, 0] = 0.0
            out_normal[k, 1] = 0.0
            out_normal[k, 2] = 0.0
            out_face[k] = 0
            if shade:
                out_rgb[k, 0] = SKY[0]
                out_rgb[k, 1] = SKY[1]
                out_rgb[k, 2] = SKY[2]
            continue
        if nx * dx + ny * dy + nz * dz > 0.0:  # always face the viewer
            nx, ny, nz = -nx, -ny, -nz
        out_t[k] = t
        out_normal[k, 0] = nx
        out_normal[k, 1] = ny
        out_normal[k, 2] = nz
        out_face[k] = face
        if shade:
            r, g, b = _shade(prims, mats, lights, occluders, counts, i, ox + t * dx,
                             oy + t * dy, oz + t * dz, nx, ny, nz)
            out_rgb[k, 0] = r
            out_rgb[k, 1] = g
            out_rgb[k, 2] = b


@numba.njit(cache=True, error_model="numpy")
def shade_hits(prims, mats, lights, occluders, counts, points, normals, index, out_rgb):
    """Shade known hits (points, normals facing the viewer, primitive index; −1 = sky)."""
    for k in range(points.shape[0]):
        i = index[k]
        if i < 0:
            out_rgb[k, 0] = SKY[0]
            out_rgb[k, 1] = SKY[1]
            out_rgb[k, 2] = SKY[2]
            continue
        r, g, b = _shade(prims, mats, lights, occluders, counts, i, points[k, 0], points[k, 1],
                         points[k, 2], normals[k, 0], normals[k, 1], normals[k, 2])
        out_rgb[k, 0] = r
        out_rgb[k, 1] = g
        out_rgb[k, 2] = b


@numba.njit(cache=True, error_model="numpy")
def segments_visible(prims, origins, targets, tolerance):
    """For each (origin, target) pair, whether the target is the first surface on the ray.

    A target counts as visible when nothing is hit closer than ``|target − origin| −
    tolerance``.
    """
    n = origins.shape[0]
    result = np.zeros(n, dtype=np.bool_)
    rows = np.arange(prims.shape[0])
    for k in range(n):
        dx = targets[k, 0] - origins[k, 0]
        dy = targets[k, 1] - origins[k, 1]
        dz = targets[k, 2] - origins[k, 2]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        if dist <= tolerance:
            result[k] = True
            continue
        dx, dy, dz = dx / dist, dy / dist, dz / dist
        result[k] = not occluded(prims, rows, rows.shape[0], origins[k, 0], origins[k, 1],
                                 origins[k, 2], dx, dy, dz, 1e-6, dist - tolerance)
    return result


Occluders = tuple[np.ndarray, np.ndarray]


def all_occluders(prims: np.ndarray, lights: np.ndarray) -> Occluders:
    """Shadow-ray candidate lists that test every primitive for every light."""
    count = len(np.asarray(lights).reshape(-1, 6))
    rows = np.tile(np.arange(len(prims), dtype=np.int64), (max(count, 1), 1))
    return rows, np.full(max(count, 1), len(prims), dtype=np.int64)


def shadow_candidates(prims: np.ndarray, lights: np.ndarray, lo: np.ndarray,
                      hi: np.ndarray) -> Occluders:
    """Per light, the primitives that can shadow points inside the box ``lo``..``hi``.

    A shadow ray from a point in the box to a light stays inside the bounding box of the box and
    the light, so only primitives whose bounding sphere meets that box can block it. The room
    shell never does (lights hang inside it).
    """
    lights = np.asarray(lights, dtype=np.float64).reshape(-1, 6)
    centres, radius = prims[:, 1:4], prims[:, 16]
    lists = np.full((max(len(lights), 1), len(prims)), -1, dtype=np.int64)
    counts = np.zeros(max(len(lights), 1), dtype=np.int64)
    for k, light in enumerate(lights):
        box_lo = np.minimum(lo, light[:3])
        box_hi = np.maximum(hi, light[:3])
        nearest = np.clip(centres, box_lo, box_hi)
        meets = np.sum((nearest - centres) ** 2, axis=1) <= radius**2
        meets &= (prims[:, 0] != ROOM) & (prims[:, 0] != WINDOW)
        rows = np.nonzero(meets)[0]
        lists[k, : len(rows)] = rows
        counts[k] = len(rows)
    return lists, counts


def trace_rays(prims: np.ndarray, mats: np.ndarray, lights: np.ndarray, origin: np.ndarray,
               dirs: np.ndarray, shade: bool = True, candidates: np.ndarray | None = None,
               occluders: Occluders | None = None) -> dict[str, np.ndarray]:
    """Cast rays and return the buffers as a dict (``t``, ``index``, ``normal``, ``face``, ``rgb``).

    Args:
        prims: Primitive table (N×17).
        mats: Material table (N×8).
        lights: Lights (L×6).
        origin: Common ray origin (3,).
        dirs: Unit directions (M×3).
        shade: Compute the linear radiance ``rgb`` as well.
        candidates: Rows the rays may hit (see :func:`frustum_candidates`); all rows if None.
        occluders: Shadow candidates per light (see :func:`shadow_candidates`); all if None.
    """
    count = dirs.shape[0]
    buffers: dict[str, np.ndarray] = {
        "t": np.empty(count),
        "index": np.empty(count, dtype=np.int32),
        "normal": np.empty((count, 3)),
        "face": np.empty(count, dtype=np.int8),
        "rgb": np.zeros((count, 3) if shade else (1, 3)),
    }
    prims = np.ascontiguousarray(prims, dtype=np.float64)
    lights = np.ascontiguousarray(lights, dtype=np.float64).reshape(-1, 6)
    rows = np.arange(len(prims), dtype=np.int64) if candidates is None else candidates
    lists, counts = all_occluders(prims, lights) if occluders is None else occluders
    trace(prims, np.ascontiguousarray(rows, np.int64),
          np.ascontiguousarray(mats, dtype=np.float64), lights, lists, counts,
          np.ascontiguousarray(origin, dtype=np.float64),
          np.ascontiguousarray(dirs, dtype=np.float64), shade, buffers["t"], buffers["index"],
          buffers["normal"], buffers["face"], buffers["rgb"])
    return buffers


def shade_points(prims: np.ndarray, mats: np.ndarray, lights: np.ndarray, points: np.ndarray,
                 normals: np.ndarray, index: np.ndarray,
                 occluders: Occluders | None = None) -> np.ndarray:
    """Linear radiance (M×3) of known hits; ``index`` −1 marks misses (sky colour)."""
    prims = np.ascontiguousarray(prims, dtype=np.float64)
    lights = np.ascontiguousarray(lights, dtype=np.float64).reshape(-1, 6)
    lists, counts = all_occluders(prims, lights) if occluders is None else occluders
    rgb = np.zeros((len(points), 3))
    shade_hits(prims, np.ascontiguousarray(mats, dtype=np.float64), lights, lists, counts,
               np.ascontiguousarray(points, dtype=np.float64),
               np.ascontiguousarray(normals, dtype=np.float64),
               np.ascontiguousarray(index, dtype=np.int64), rgb)
    return rgb


def frustum_candidates(prims: np.ndarray, world_to_camera: np.ndarray, tan_x: float,
                       tan_y: float) -> np.ndarray:
    """Rows of ``prims`` whose bounding sphere may meet a camera's view frustum.

    Args:
        prims: Primitive table (N×17).
        world_to_camera: 4×4 OpenCV world-to-camera transform.
        tan_x: tan of half the horizontal field of view (with a margin for sub-pixel rays).
        tan_y: Same, vertical.
    """
    centres = prims[:, 1:4] @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    radius = prims[:, 16]
    x, y, z = centres[:, 0], centres[:, 1], centres[:, 2]
    inside = (
        (z > -radius)
        & (np.abs(x) - z * tan_x <= radius * np.sqrt(1.0 + tan_x * tan_x))
        & (np.abs(y) - z * tan_y <= radius * np.sqrt(1.0 + tan_y * tan_y))
    )
    inside |= prims[:, 0] == ROOM  # the shell has no bounding sphere
    return np.nonzero(inside)[0].astype(np.int64)
