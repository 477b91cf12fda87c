"""One compiled pass over the image in tiles: primary rays, shading, silhouette antialiasing.

Culling per tile is what makes the ray caster fast: a 16×16 tile sees a narrow frustum, so only
the few primitives whose bounding sphere meets it are tested by its rays, and the shadow rays of
its pixels only test the primitives near the segment from the tile's surface points to each
light. Both tests are conservative (a culled primitive cannot be hit), so the image equals the one
of a caster that tests every primitive for every ray.

The pass runs in two sweeps: the first traces the centre ray of every pixel; the second shades
each tile and re-shades its silhouette pixels (a 4-neighbour hits another primitive or a very
different normal) with four sub-pixel rays, which needs the neighbours of tile-border pixels.
"""

from __future__ import annotations

import numba
import numpy as np

from taskonomy.datamodules.synth import raycast
from taskonomy.datamodules.synth.raycast import ROOM, SKY, WINDOW

#: Tile side in pixels.
TILE = 16
#: Sub-pixel offsets of the silhouette supersampling (a rotated grid), in pixels (x, y).
SUBPIXELS = np.array([[-0.125, -0.375], [0.375, -0.125], [0.125, 0.375], [-0.375, 0.125]])
#: Squared normal change between 4-neighbours that marks a silhouette.
_BENT = 0.1
_INF = 1e30


@numba.njit(cache=True, error_model="numpy")
def _tile_candidates(prims, cam_centres, fx, fy, cx, cy, u0, u1, v0, v1, out):
    """Rows whose bounding sphere meets the frustum of pixels ``u0..u1`` × ``v0..v1``.

    The four side planes pass through the camera centre; ``cam_centres`` are the primitive
    centres in the OpenCV camera frame. Returns the number of rows written to ``out``.
    """
    a0, a1 = (u0 - cx) / fx, (u1 - cx) / fx
    b0, b1 = (v0 - cy) / fy, (v1 - cy) / fy
    na0, na1 = np.sqrt(1.0 + a0 * a0), np.sqrt(1.0 + a1 * a1)
    nb0, nb1 = np.sqrt(1.0 + b0 * b0), np.sqrt(1.0 + b1 * b1)
    count = 0
    for i in range(prims.shape[0]):
        kind = int(prims[i, 0])
        if kind == WINDOW:  # openings are never hit (the shell test handles them)
            continue
        if kind != ROOM:
            x, y, z = cam_centres[i, 0], cam_centres[i, 1], cam_centres[i, 2]
            r = prims[i, 16]
            # Inward plane normals: (1, 0, -a0), (-1, 0, a1), (0, 1, -b0), (0, -1, b1).
            if (z < -r or (x - a0 * z) < -r * na0 or (a1 * z - x) < -r * na1
                    or (y - b0 * z) < -r * nb0 or (b1 * z - y) < -r * nb1):
                continue
        out[count] = i
        count += 1
    return count


@numba.njit(cache=True, error_model="numpy")
def _occluders_near(prims, lights, mx, my, mz, rho, out, counts):
    """Per light, the rows that may block a shadow ray from within ``rho`` of ``m``.

    Every point of a shadow ray from p (|p − m| ≤ rho) to the light L lies within rho of the
    segment m–L, so a primitive whose bounding sphere stays farther than its radius plus rho
    from that segment cannot block it. The room shell and windows never do.
    """
    for k in range(lights.shape[0]):
        lx, ly, lz = lights[k, 0], lights[k, 1], lights[k, 2]
        sx, sy, sz = lx - mx, ly - my, lz - mz
        length2 = sx * sx + sy * sy + sz * sz
        count = 0
        for i in range(prims.shape[0]):
            kind = int(prims[i, 0])
            if kind == ROOM or kind == WINDOW:
                continue
            px, py, pz = prims[i, 1] - mx, prims[i, 2] - my, prims[i, 3] - mz
            s = 0.0
            if length2 > 0.0:
                s = min(1.0, max(0.0, (px * sx + py * sy + pz * sz) / length2))
            dx, dy, dz = px - s * sx, py - s * sy, pz - s * sz
            reach = prims[i, 16] + rho
            if dx * dx + dy * dy + dz * dz <= reach * reach:
                out[k, count] = i
                count += 1
        counts[k] = count


@numba.njit(cache=True, error_model="numpy")
def _silhouette(index, normal, r, c):
    """Whether pixel (r, c) differs from a 4-neighbour in primitive or (strongly) in normal."""
    height, width = index.shape
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        rr, cc = r + dr, c + dc
        if rr < 0 or rr >= height or cc < 0 or cc >= width:
            continue
        if index[rr, cc] != index[r, c]:
            return True
        d0 = normal[rr, cc, 0] - normal[r, c, 0]
        d1 = normal[rr, cc, 1] - normal[r, c, 1]
        d2 = normal[rr, cc, 2] - normal[r, c, 2]
        if d0 * d0 + d1 * d1 + d2 * d2 > _BENT:
            return True
    return False


@numba.njit(cache=True, error_model="numpy")
def _trace_one(prims, cand, windows, ox, oy, oz, dx, dy, dz):
    """Nearest hit facing the viewer: (t, index, nx, ny, nz, face); index −1 on a miss.

    The same hit as :func:`raycast.intersect`, but only the window rows ``windows`` are tested
    when the shell is hit (the shell is most of every image).
    """
    best_t, best_i = _INF, -1
    bnx, bny, bnz = 0.0, 0.0, 0.0
    best_face = 0
    for k in range(cand.shape[0]):
        i = cand[k]
        t, nx, ny, nz, face = raycast._hit_primitive(prims, i, ox, oy, oz, dx, dy, dz, 1e-6,
                                                     best_t)
        if t > 0.0 and t < best_t:
            best_t, best_i, bnx, bny, bnz, best_face = t, i, nx, ny, nz, face
    if best_i >= 0 and int(prims[best_i, 0]) == ROOM and _in_windows(
            prims, windows, ox + best_t * dx, oy + best_t * dy, oz + best_t * dz):
        return _INF, -1, 0.0, 0.0, 0.0, 0
    if best_i >= 0 and bnx * dx + bny * dy + bnz * dz > 0.0:
        bnx, bny, bnz = -bnx, -bny, -bnz
    return best_t, best_i, bnx, bny, bnz, best_face


@numba.njit(cache=True, error_model="numpy")
def _in_windows(p, windows, x, y, z):
    """Whether a point of the room shell lies inside one of the window boxes ``windows``."""
    for k in range(windows.shape[0]):
        i = windows[k]
        rx, ry, rz = x - p[i, 1], y - p[i, 2], z - p[i, 3]
        lx = p[i, 7] * rx + p[i, 10] * ry + p[i, 13] * rz
        ly = p[i, 8] * rx + p[i, 11] * ry + p[i, 14] * rz
        lz = p[i, 9] * rx + p[i, 12] * ry + p[i, 15] * rz
        if abs(lx) <= p[i, 4] and abs(ly) <= p[i, 5] and abs(lz) <= p[i, 6]:
            return True
    return False


@numba.njit(cache=True, error_model="numpy")
def render_tiles(prims, mats, lights, origin, rays, rotation, cam_centres, fx, fy, cx, cy,
                 antialias, out_t, out_index, out_normal, out_face, out_rgb, out_edge):
    """Trace, shade and antialias every pixel of one view.

    Args:
        prims: Primitive table (N×17).
        mats: Material table (N×8).
        lights: Point lights (L×6).
        origin: Camera centre (3,).
        rays: H×W×3 unit world directions through the pixel centres.
        rotation: 3×3 world-to-camera rotation (OpenCV).
        cam_centres: N×3 primitive centres in the camera frame.
        fx: Focal length in pixels along x.
        fy: Focal length in pixels along y.
        cx: Principal point x (pixels).
        cy: Principal point y (pixels).
        antialias: Re-shade silhouette pixels with four sub-pixel rays.
        out_t: H×W distance along the ray, ``inf`` on a miss.
        out_index: H×W primitive index (int32), −1 on a miss.
        out_normal: H×W×3 world normal facing the camera, 0 on a miss.
        out_face: H×W surface kind (int8).
        out_rgb: H×W×3 linear radiance.
        out_edge: H×W silhouette mask (bool), filled when ``antialias``.
    """
    height, width = out_t.shape
    n = prims.shape[0]
    ox, oy, oz = origin[0], origin[1], origin[2]
    cand = np.empty(n, dtype=np.int64)
    windows = np.empty(n, dtype=np.int64)
    window_count = 0
    for i in range(n):
        if int(prims[i, 0]) == WINDOW:
            windows[window_count] = i
            window_count += 1
    windows = windows[:window_count]
    rows_y = (height + TILE - 1) // TILE
    rows_x = (width + TILE - 1) // TILE
    # Sweep 1: centre rays. The tile frustum grows by a pixel for the sub-pixel rays of sweep 2.
    for ty in range(rows_y):
        for tx in range(rows_x):
            r0, c0 = ty * TILE, tx * TILE
            r1, c1 = min(r0 + TILE, height), min(c0 + TILE, width)
            count = _tile_candidates(prims, cam_centres, fx, fy, cx, cy, c0 - 1.0, c1 + 1.0,
                                     r0 - 1.0, r1 + 1.0, cand)
            tile_cand = cand[:count]
            for r in range(r0, r1):
                for c in range(c0, c1):
                    t, i, nx, ny, nz, face = _trace_one(prims, tile_cand, windows, ox, oy, oz,
                                                        rays[r, c, 0], rays[r, c, 1],
                                                        rays[r, c, 2])
                    out_index[r, c] = i
                    if i < 0:
                        out_t[r, c] = np.inf
                        out_normal[r, c, 0] = 0.0
                        out_normal[r, c, 1] = 0.0
                        out_normal[r, c, 2] = 0.0
                        out_face[r, c] = 0
                    else:
                        out_t[r, c] = t
                        out_normal[r, c, 0] = nx
                        out_normal[r, c, 1] = ny
                        out_normal[r, c, 2] = nz
                        out_face[r, c] = face
    # Sweep 2: shading with per-tile shadow candidates; silhouette pixels are shaded from their
    # four sub-pixel rays instead of the centre ray.
    light_count = lights.shape[0]
    lists = np.full((max(light_count, 1), n), -1, dtype=np.int64)
    counts = np.zeros(max(light_count, 1), dtype=np.int64)
    every = np.full((max(light_count, 1), n), -1, dtype=np.int64)
    every_counts = np.zeros(max(light_count, 1), dtype=np.int64)
    for k in range(light_count):
        for i in range(n):
            kind = int(prims[i, 0])
            if kind != ROOM and kind != WINDOW:
                every[k, every_counts[k]] = i
                every_counts[k] += 1
    for ty in range(rows_y):
        for tx in range(rows_x):
            r0, c0 = ty * TILE, tx * TILE
            r1, c1 = min(r0 + TILE, height), min(c0 + TILE, width)
            # Bounding sphere of the surface points of the tile and its one-pixel ring.
            lo0, lo1, lo2 = _INF, _INF, _INF
            hi0, hi1, hi2 = -_INF, -_INF, -_INF
            for r in range(max(r0 - 1, 0), min(r1 + 1, height)):
                for c in range(max(c0 - 1, 0), min(c1 + 1, width)):
                    if out_index[r, c] < 0:
                        continue
                    t = out_t[r, c]
                    x, y, z = ox + t * rays[r, c, 0], oy + t * rays[r, c, 1], oz + t * rays[r, c, 2]
                    lo0, lo1, lo2 = min(lo0, x), min(lo1, y), min(lo2, z)
                    hi0, hi1, hi2 = max(hi0, x), max(hi1, y), max(hi2, z)
            has_hits = lo0 <= hi0
            mx, my, mz = (lo0 + hi0) / 2, (lo1 + hi1) / 2, (lo2 + hi2) / 2
            rho = 0.0
            if has_hits:
                rho = np.sqrt((hi0 - lo0) ** 2 + (hi1 - lo1) ** 2 + (hi2 - lo2) ** 2) / 2 + 1e-3
                _occluders_near(prims, lights, mx, my, mz, rho, lists, counts)
            if antialias:
                count = _tile_candidates(prims, cam_centres, fx, fy, cx, cy, c0 - 1.0, c1 + 1.0,
                                         r0 - 1.0, r1 + 1.0, cand)
                tile_cand = cand[:count]
            for r in range(r0, r1):
                for c in range(c0, c1):
                    if antialias and _silhouette(out_index, out_normal, r, c):
                        out_edge[r, c] = True
                        sr, sg, sb = 0.0, 0.0, 0.0
                        for s in range(SUBPIXELS.shape[0]):
                            dx, dy, dz = _subpixel_ray(rotation, fx, fy, cx, cy,
                                                       c + 0.5 + SUBPIXELS[s, 0],
                                                       r + 0.5 + SUBPIXELS[s, 1])
                            t, i, nx, ny, nz, _ = _trace_one(prims, tile_cand, windows, ox, oy,
                                                             oz, dx, dy, dz)
                            if i < 0:
                                sr, sg, sb = sr + SKY[0], sg + SKY[1], sb + SKY[2]
                                continue
                            x, y, z = ox + t * dx, oy + t * dy, oz + t * dz
                            ex, ey, ez = x - mx, y - my, z - mz
                            # Outside the tile's sphere, every primitive may shadow the hit.
                            if has_hits and ex * ex + ey * ey + ez * ez <= (rho - 1e-3) ** 2:
                                red, green, blue = raycast._shade(prims, mats, lights, lists,
                                                                  counts, i, x, y, z, nx, ny, nz)
                            else:
                                red, green, blue = raycast._shade(prims, mats, lights, every,
                                                                  every_counts, i, x, y, z, nx,
                                                                  ny, nz)
                            sr, sg, sb = sr + red, sg + green, sb + blue
                        scale = 1.0 / SUBPIXELS.shape[0]
                        out_rgb[r, c, 0] = sr * scale
                        out_rgb[r, c, 1] = sg * scale
                        out_rgb[r, c, 2] = sb * scale
                        continue
                    i = out_index[r, c]
                    if i < 0:
                        out_rgb[r, c, 0] = SKY[0]
                        out_rgb[r, c, 1] = SKY[1]
                        out_rgb[r, c, 2] = SKY[2]
                        continue
                    t = out_t[r, c]
                    red, green, blue = raycast._shade(
                        prims, mats, lights, lists, counts, i, ox + t * rays[r, c, 0],
                        oy + t * rays[r, c, 1], oz + t * rays[r, c, 2], out_normal[r, c, 0],
                        out_normal[r, c, 1], out_normal[r, c, 2])
                    out_rgb[r, c, 0] = red
                    out_rgb[r, c, 1] = green
                    out_rgb[r, c, 2] = blue


@numba.njit(cache=True, error_model="numpy")
def _subpixel_ray(rotation, fx, fy, cx, cy, u, v):
    """Unit world direction through image point (u, v)."""
    a, b = (u - cx) / fx, (v - cy) / fy
    norm = np.sqrt(a * a + b * b + 1.0)
    a, b, w = a / norm, b / norm, 1.0 / norm
    # World direction = Rᵀ · camera direction (rows: cam @ R).
    return (a * rotation[0, 0] + b * rotation[1, 0] + w * rotation[2, 0],
            a * rotation[0, 1] + b * rotation[1, 1] + w * rotation[2, 1],
            a * rotation[0, 2] + b * rotation[1, 2] + w * rotation[2, 2])


@numba.njit(cache=True, error_model="numpy")
def pixel_rays(rotation, fx, fy, cx, cy, height, width):
    """H×W×3 unit world directions through the pixel centres (same formula as sub-pixel rays)."""
    out = np.empty((height, width, 3))
    for r in range(height):
        for c in range(width):
            out[r, c, 0], out[r, c, 1], out[r, c, 2] = _subpixel_ray(rotation, fx, fy, cx, cy,
                                                                     c + 0.5, r + 0.5)
    return out
