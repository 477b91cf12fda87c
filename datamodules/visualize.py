"""Per-domain renderers to RGB, overlays for camera geometry, and the building contact sheet.

:func:`render_domain` turns a decoded value of any released domain (as returned by
:func:`taskonomy.datamodules.domains.decode_domain`) into a uint8 H×W×3 picture: depth
colour-mapped on a log scale, normals and curvature as colours, 16-bit responses colour-mapped,
segmentations as palettes, class distributions as top-5 text. :func:`draw_vanishing_points` and
:func:`draw_room_layout` draw the geometry of a ``point_info`` record on an image. The same
functions serve prediction panels (pass predicted values in the released encodings).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from taskonomy.datamodules.cameras import (
    Camera,
    camera_from_point_info,
    room_box_world,
    vanishing_point_pixels,
)
from taskonomy.datamodules.domains import (
    DEPTH_MISSING,
    DEPTH_UNITS_PER_METRE,
    DOMAINS,
    atomic_write_bytes,
    get_domain,
    read_domain_file,
)
from taskonomy.datamodules.layouts import SourceLayout, ViewRef, detect_layout

#: Colours (RGB) of the semantic labels 0..17: uncertain black, background grey, then classes.
SEMANTIC_PALETTE = np.array([
    (0, 0, 0), (150, 150, 150), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210),
], dtype=np.uint8)
#: Axis colours (RGB) for vanishing points: x red, y green, z blue.
AXIS_COLOURS = {"x": (230, 40, 40), "y": (40, 200, 40), "z": (60, 90, 255)}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _colormap(values: np.ndarray, valid: np.ndarray, cmap: int) -> np.ndarray:
    """Colour-map finite values to RGB with the valid range stretched; invalid pixels black."""
    out = np.zeros((*values.shape, 3), dtype=np.uint8)
    if not valid.any():
        return out
    lo, hi = np.percentile(values[valid], [1, 99])
    if hi <= lo:
        hi = lo + 1e-6
    scaled = np.clip((values - lo) / (hi - lo), 0, 1)
    mapped = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cmap)
    out[valid] = cv2.cvtColor(mapped, cv2.COLOR_BGR2RGB)[valid]
    return out


def depth_to_rgb(raw: np.ndarray) -> np.ndarray:
    """16-bit depth (1/512 m, 65535 missing) → log-scaled turbo colours, missing black."""
    valid = raw < DEPTH_MISSING
    metres = raw.astype(np.float64) / DEPTH_UNITS_PER_METRE
    return _colormap(np.log1p(metres), valid, cv2.COLORMAP_TURBO)


def response_to_rgb(raw: np.ndarray) -> np.ndarray:
    """16-bit non-negative response (edges, keypoints) → inferno colours, strongest 1 % white."""
    values = raw.astype(np.float64)
    positive = values > 0
    top = float(np.percentile(values[positive], 99)) if positive.any() else 1.0
    scaled = np.clip(values / max(top, 1.0), 0, 1) ** 0.5  # square root shows weak responses
    mapped = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(mapped, cv2.COLOR_BGR2RGB)


def segments_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids → a fixed pseudo-random palette (the same id always gets the same colour)."""
    index = ids.astype(np.int64)
    palette = np.stack([(index * 97 + 41) % 256, (index * 57 + 101) % 256,
                        (index * 151 + 17) % 256], axis=-1)
    return (palette * 0.8 + 40).astype(np.uint8)


def semantic_to_rgb(labels: np.ndarray) -> np.ndarray:
    """Semantic labels 0..17 → :data:`SEMANTIC_PALETTE` colours (out-of-range labels white)."""
    out = np.full((*labels.shape, 3), 255, dtype=np.uint8)
    inside = labels < len(SEMANTIC_PALETTE)
    out[inside] = SEMANTIC_PALETTE[labels[inside]]
    return out


def text_panel(lines: Sequence[str], size: int = 256, scale: float | None = None) -> np.ndarray:
    """A dark square panel with lines of text."""
    panel = np.full((size, size, 3), 24, dtype=np.uint8)
    scale = scale if scale is not None else max(0.35, size / 420)
    step = int(math.ceil(24 * scale / 0.6))
    for row, line in enumerate(lines):
        y = step * (row + 1)
        if y > size - 4:
            break
        cv2.putText(panel, line, (6, y), _FONT, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return panel


def _class_names(length: int) -> dict[int, str]:
    from taskonomy.datamodules.synth.classes import IMAGENET_NAMES, places365_categories

    if length == 365:
        return dict(enumerate(places365_categories()))
    return dict(IMAGENET_NAMES) if length == 1000 else {}


def top_k_lines(distribution: np.ndarray, k: int = 5) -> list[str]:
    """``name  p`` lines of the k most probable classes of a 1000- or 365-way distribution."""
    values = np.asarray(distribution, dtype=np.float64).reshape(-1)
    names = _class_names(len(values))
    order = np.argsort(-values)[:k]
    label = "ImageNet" if len(values) == 1000 else "Places365" if len(values) == 365 else "class"
    return [f"{label} top-{k}"] + [
        f"{values[i]:.2f} {names.get(int(i), f'#{int(i)}')[:22]}" for i in order
    ]


def render_domain(domain: str, value: Any, size: int | None = None) -> np.ndarray:
    """Render a decoded value of a released domain as a uint8 H×W×3 RGB image.

    Args:
        domain: Domain name (see :data:`taskonomy.datamodules.domains.DOMAINS`).
        value: The decoded value (array, distribution or JSON record).
        size: Side of text panels (class distributions, JSON records); images keep their size.

    Raises:
        ValueError: unknown domain (the message lists the valid ones).
    """
    spec = get_domain(domain)
    if spec.kind == "json":
        side = size or 256
        if domain == "point_info":
            return text_panel([
                f"point {value.get('point_uuid')} view {value.get('view_id')}",
                f"fov {math.degrees(value.get('field_of_view_rads', 0)):.1f} deg",
                f"distance {value.get('camera_distance', 0):.2f} m",
                f"pitch {math.degrees(value.get('point_pitch', 0)):.1f} deg",
                f"oblique {math.degrees(value.get('obliqueness_angle', 0)):.1f} deg",
                f"also sees {len(value.get('nonfixated_points_in_view', []))} pts",
            ], side)
        views = value.get("views", [])
        return text_panel([f"point {value.get('point_uuid')}", f"seen in {len(views)} images"]
                          + [f"p{v['point_uuid']} v{v['view_id']} ({v['nonfixated_pixel_x']:.0f},"
                             f"{v['nonfixated_pixel_y']:.0f})" for v in views[:8]], side)
    if spec.kind == "npy":
        return text_panel(top_k_lines(value), size or 256)
    array = np.asarray(value)
    if domain in ("depth_zbuffer", "depth_euclidean"):
        return depth_to_rgb(array)
    if spec.kind == "gray16":
        return response_to_rgb(array)
    if domain == "segment_semantic":
        return semantic_to_rgb(array)
    if spec.kind == "gray8":
        return segments_to_rgb(array)
    if domain == "principal_curvature":
        out = array.copy()
        out[..., 2] = 127  # the unused channel: grey keeps flat surfaces neutral
        return out
    return array.astype(np.uint8)


def _clip_segment(a: np.ndarray, b: np.ndarray, near: float = 0.05
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Clip a camera-frame segment to z ≥ near (OpenCV axes)."""
    if a[2] < near and b[2] < near:
        return None
    if a[2] < near:
        a = a + (b - a) * (near - a[2]) / (b[2] - a[2])
    elif b[2] < near:
        b = b + (a - b) * (near - b[2]) / (a[2] - b[2])
    return a, b


def draw_room_layout(image: np.ndarray, record: Mapping[str, Any],
                     colour: tuple[int, int, int] = (255, 220, 0)) -> np.ndarray:
    """Draw the 12 edges of the record's room box (``bounding_box_ranges``) on a copy of ``image``.

    The image may have any size; the camera is scaled to it.
    """
    camera = _camera_for(record, image)
    lo, hi = room_box_world(record)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    cam = camera.to_camera(corners)
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, image.shape[0] // 128)
    for i in range(8):
        for j in range(i + 1, 8):
            if bin(i ^ j).count("1") != 1:  # corners differing in one coordinate share an edge
                continue
            clipped = _clip_segment(cam[i], cam[j])
            if clipped is None:
                continue
            a, b = (camera.K @ p for p in clipped)
            pa, pb = a[:2] / a[2], b[:2] / b[2]
            ok, p1, p2 = cv2.clipLine((0, 0, image.shape[1], image.shape[0]),
                                      _int_point(pa), _int_point(pb))
            if ok:
                cv2.line(out, p1, p2, colour, thickness, cv2.LINE_AA)
    return out


def _int_point(p: np.ndarray) -> tuple[int, int]:
    return int(np.clip(round(p[0]), -1e6, 1e6)), int(np.clip(round(p[1]), -1e6, 1e6))


def _camera_for(record: Mapping[str, Any], image: np.ndarray) -> Camera:
    scaled = dict(record)
    scaled["resolution"] = int(image.shape[1])
    return camera_from_point_info(scaled)


def draw_vanishing_points(image: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """Draw the vanishing directions of the three world axes on a copy of ``image``.

    Each axis gets a line from the image centre towards its vanishing point (x red, y green,
    z blue) and a disc at the vanishing point when it falls inside the image.
    """
    camera = _camera_for(record, image)
    out = np.ascontiguousarray(image.copy())
    h, w = image.shape[:2]
    centre = np.array([w / 2.0, h / 2.0])
    thickness = max(1, h // 128)
    rotation = camera.world_to_camera[:3, :3]
    for axis, point in vanishing_point_pixels(camera).items():
        colour = AXIS_COLOURS[axis]
        if point is None:  # parallel to the image plane: draw the direction itself
            direction = rotation[:2, "xyz".index(axis)]
        else:
            direction = point - centre
        norm = float(np.linalg.norm(direction))
        if norm < 1e-9:
            cv2.circle(out, _int_point(centre), 3 * thickness + 2, colour, -1, cv2.LINE_AA)
            continue
        end = centre + direction / norm * (1.5 * max(h, w))
        if point is not None and norm < 1.5 * max(h, w):
            end = point
        ok, p1, p2 = cv2.clipLine((0, 0, w, h), _int_point(centre), _int_point(end))
        if ok:
            cv2.line(out, p1, p2, colour, thickness, cv2.LINE_AA)
        if point is not None and 0 <= point[0] < w and 0 <= point[1] < h:
            cv2.circle(out, _int_point(point), 3 * thickness + 2, colour, -1, cv2.LINE_AA)
    return out


def draw_points(image: np.ndarray, pixels: Sequence[tuple[float, float]], resolution: int,
                colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """Draw rings at pixel positions given at ``resolution`` (e.g. nonfixated sightings)."""
    out = np.ascontiguousarray(image.copy())
    scale = image.shape[1] / float(resolution)
    radius = max(3, image.shape[0] // 40)
    for x, y in pixels:
        cv2.circle(out, (int(round(x * scale)), int(round(y * scale))), radius, colour,
                   max(1, radius // 3), cv2.LINE_AA)
    return out


#: Columns of the contact sheet: every released domain plus two geometry overlays.
SHEET_COLUMNS = (*DOMAINS, "vanishing_point", "room_layout")


def building_samples(building_dir: str | os.PathLike[str], views: int = 4, *,
                     building: str | None = None) -> list[dict[str, Any]]:
    """Decoded values of every domain for ``views`` views of one building of a source.

    ``building_dir`` is a building folder of the released layout (``BUILDING/rgb/...``) or a
    source folder of either layout (:func:`~taskonomy.datamodules.layouts.detect_layout`: the
    released one, or Omnidata's ``DOMAIN/taskonomy/BUILDING/...``), whose ``building`` (default:
    the first) is drawn. Views are taken from as many different fixated points as possible.
    Each sample maps a domain to its value (missing files are absent) plus ``key``
    (``point_P_view_V``) and ``sightings``: pixel positions of other points seen in the view,
    from the ``nonfixated_matches`` files. Files that do not follow the released naming are
    ignored.

    Raises:
        FileNotFoundError: the folder does not exist, or the building has no ``rgb`` or
            ``point_info`` views.
        ValueError: neither a building folder nor a source, or no such building.
    """
    root = Path(building_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give a building folder "
                                "(BUILDING/rgb/point_P_view_V_domain_rgb.png, ...) or a source")
    omnidata = any((root / name / "taskonomy").is_dir() for name in DOMAINS)
    if not omnidata and any((root / name).is_dir() for name in DOMAINS):  # a building folder
        if building not in (None, root.name):
            raise ValueError(f"{root} is the building folder of {root.name!r}, not {building!r}")
        layout, name = SourceLayout(root.parent, "released"), root.name
    else:
        layout = detect_layout(root)
        present = layout.buildings()
        if not present:
            raise FileNotFoundError(f"{root} holds no building")
        name = building or present[0]
        if name not in present:
            raise ValueError(f"{root} has no building {name!r}; it has "
                             f"{', '.join(present[:10])}{' ...' if len(present) > 10 else ''}")
    anchor = next((d for d in ("rgb", "point_info") if layout.domain_dir(name, d).is_dir()), None)
    if anchor is None:
        raise FileNotFoundError(
            f"building {name!r} of {layout.root} has no rgb/ or point_info/ folder; give a "
            f"building of the released layout (folders: {', '.join(DOMAINS)})"
        )
    by_point: dict[str, list[ViewRef]] = {}
    for ref in layout.views(name, anchor):
        by_point.setdefault(ref.point, []).append(ref)
    chosen: list[ViewRef] = []
    round_index = 0
    while len(chosen) < views and any(round_index < len(v) for v in by_point.values()):
        for point_views in by_point.values():
            if round_index < len(point_views) and len(chosen) < views:
                chosen.append(point_views[round_index])
        round_index += 1
    sightings = _sightings(layout.domain_dir(name, "nonfixated_matches"))
    samples = []
    for ref in chosen:
        sample: dict[str, Any] = {"key": f"point_{ref.point}_view_{ref.view}"}
        for domain in DOMAINS:
            path = layout.file_path(ref, domain)
            if path.exists():
                sample[domain] = read_domain_file(path, domain)
        if (ref.point, ref.view) in sightings:
            sample["sightings"] = sightings[(ref.point, ref.view)]
        samples.append(sample)
    return samples


def _sightings(folder: Path) -> dict[tuple[str, str], list[tuple[float, float]]]:
    result: dict[tuple[str, str], list[tuple[float, float]]] = {}
    if not folder.is_dir():
        return result
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        record = read_domain_file(path, "nonfixated_matches")
        for entry in record.get("views", []):
            if str(entry["point_uuid"]) == str(record["point_uuid"]):
                continue  # its own fixated views: the image centre
            key = (str(entry["point_uuid"]), str(entry["view_id"]))
            result.setdefault(key, []).append((entry["nonfixated_pixel_x"],
                                               entry["nonfixated_pixel_y"]))
    return result


def _tile(sample: Mapping[str, Any], column: str, size: int) -> np.ndarray:
    rgb = sample.get("rgb")
    record = sample.get("point_info")
    if column in ("vanishing_point", "room_layout"):
        if rgb is None or record is None:
            return text_panel(["missing rgb or", "point_info"], size)
        base = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        if column == "vanishing_point":
            return draw_vanishing_points(base, record)
        return draw_room_layout(base, record)
    if column == "nonfixated_matches":
        if rgb is None or record is None:
            return text_panel(["missing"], size)
        base = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        pixels = sample.get("sightings", [])
        return draw_points(base, pixels, int(record.get("resolution", rgb.shape[1])))
    if column not in sample:
        return text_panel(["missing"], size)
    image = render_domain(column, sample[column], size)
    interpolation = cv2.INTER_NEAREST if get_domain(column).kind == "gray8" else cv2.INTER_AREA
    return cv2.resize(image, (size, size), interpolation=interpolation)


def contact_sheet(samples: Sequence[Mapping[str, Any]], size: int = 192,
                  columns: Sequence[str] = SHEET_COLUMNS) -> np.ndarray:
    """A grid image: one row per sample, one column per domain, with headers.

    Args:
        samples: Decoded views (see :func:`building_samples`); ``key`` labels the row.
        size: Tile side in pixels.
        columns: Domains (and ``vanishing_point`` / ``room_layout`` overlays) to show.
    """
    if not samples:
        raise ValueError("no views to show; the building folder holds no views")
    header = max(18, size // 8)
    label_width = max(90, size // 2)
    scale = max(0.35, size / 400)
    rows = []
    top = np.full((header, label_width + size * len(columns), 3), 255, dtype=np.uint8)
    for index, column in enumerate(columns):
        cv2.putText(top, column[:24], (label_width + index * size + 4, header - 6), _FONT,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(top)
    for sample in samples:
        label = np.full((size, label_width, 3), 255, dtype=np.uint8)
        for line, text in enumerate(str(sample.get("key", "")).split("_view_")):
            prefix = "" if line == 0 else "view "
            cv2.putText(label, prefix + text, (4, 20 + 18 * line), _FONT, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
        tiles = [_tile(sample, column, size) for column in columns]
        rows.append(np.concatenate([label, *tiles], axis=1))
    return np.concatenate(rows, axis=0)


def save_contact_sheet(samples: Sequence[Mapping[str, Any]], out: str | os.PathLike[str],
                       size: int = 192) -> Path:
    """Render :func:`contact_sheet` of decoded samples and write it as a PNG (atomically).

    Any source of samples works: a building folder (:func:`building_samples`) or, later, shards.

    Raises:
        ValueError: ``size`` is below 32 px, ``out`` is not a ``.png`` path, or no samples.
    """
    if size < 32:
        raise ValueError(f"the tile size must be at least 32 px, got {size}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {out}")
    sheet = contact_sheet(samples, size)
    ok, data = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a sheet of shape {sheet.shape}")
    atomic_write_bytes(out, data.tobytes())
    return out


def write_contact_sheet(building_dir: str | os.PathLike[str], out: str | os.PathLike[str],
                        views: int = 4, size: int = 192, *, building: str | None = None) -> Path:
    """Write the contact sheet of ``views`` views of a building (see :func:`building_samples`).

    Raises:
        ValueError: ``views`` is not positive, or see :func:`save_contact_sheet`.
        FileNotFoundError: the building folder is missing or holds no views.
    """
    if views < 1:
        raise ValueError(f"--views must be at least 1, got {views}")
    if Path(out).suffix.lower() != ".png":  # fail before reading the building
        raise ValueError(f"--out must end in .png, got {out}")
    return save_contact_sheet(building_samples(building_dir, views, building=building), out, size)
