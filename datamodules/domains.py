"""Data domains of the released Taskonomy layout: folder names, file names, file encodings.

This is the one decode path for real and synthetic data: the synthetic renderer writes files with
:func:`write_domain_file` and every reader (packer, datamodule, inspect) goes through
:func:`read_domain_file`. 16-bit PNGs are read with OpenCV's ``IMREAD_UNCHANGED`` because
webdataset's and PIL's image decoders squash them to 8 bits.

Released file names are ``point_{P}_view_{V}_domain_{file_domain}.{ext}`` inside
``{building}/{folder}/``; ``nonfixated_matches`` is one file per point
(``point_{P}_view_all_domain_nonfixated_matches.json``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Raw depth value marking a missing depth (sky, holes): the released convention.
DEPTH_MISSING = 65535
#: Raw depth units per metre (1 unit = 1/512 m, max 128 m).
DEPTH_UNITS_PER_METRE = 512.0


@dataclass(frozen=True)
class Domain:
    """One data domain of the released layout.

    Attributes:
        name: Folder name in a building (``depth_zbuffer``).
        file_domain: The ``domain_...`` part of file names (``segmentsemantic`` for
            ``segment_semantic``, ``class_places`` for ``class_scene``).
        ext: File extension without the dot.
        kind: ``rgb8`` (8-bit RGB PNG, decoded H×W×3 ``uint8``; also channel-wise values
            such as normals), ``gray16`` (16-bit grey PNG, H×W ``uint16``), ``gray8`` (8-bit
            labels, H×W ``uint8``), ``npy`` (the array) or ``json`` (the parsed object).
        per_point: One file per fixated point rather than per view.
        description: The encoding in words.
    """

    name: str
    file_domain: str
    ext: str
    kind: str
    per_point: bool = False
    description: str = ""

    def file_name(self, point: int | str, view: int | str) -> str:
        """Released file name of this domain for a (point, view)."""
        view_part = "all" if self.per_point else view
        return f"point_{point}_view_{view_part}_domain_{self.file_domain}.{self.ext}"


# fmt: off
DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("rgb", "rgb", "png", "rgb8", description="8-bit sRGB"),
    Domain("depth_zbuffer", "depth_zbuffer", "png", "gray16", description="z-depth, 1/512 m, 65535 = missing"),  # noqa: E501
    Domain("depth_euclidean", "depth_euclidean", "png", "gray16", description="distance to the camera centre, 1/512 m, 65535 = missing"),  # noqa: E501
    Domain("normal", "normal", "png", "rgb8", description="camera-frame normal, 127-centred: n = (v/255 - 0.5)*2"),  # noqa: E501
    Domain("reshading", "reshading", "png", "rgb8", description="shading from a point light at the camera, grey stored as RGB"),  # noqa: E501
    Domain("principal_curvature", "principal_curvature", "png", "rgb8", description="k1, k2 in channels 0, 1, 127-centred; channel 2 unused"),  # noqa: E501
    Domain("edge_texture", "edge_texture", "png", "gray16", description="Canny gradient magnitude without NMS"),  # noqa: E501
    Domain("edge_occlusion", "edge_occlusion", "png", "gray16", description="depth-discontinuity edge strength"),  # noqa: E501
    Domain("keypoints2d", "keypoints2d", "png", "gray16", description="2D keypoint response (SURF determinant of Hessian, no NMS)"),  # noqa: E501
    Domain("keypoints3d", "keypoints3d", "png", "gray16", description="3D keypoint interest in [0,1] (NARF-style, on geometry)"),  # noqa: E501
    Domain("segment_unsup2d", "segment_unsup2d", "png", "gray8", description="superpixel ids on RGB"),  # noqa: E501
    Domain("segment_unsup25d", "segment_unsup25d", "png", "gray8", description="superpixel ids on depth, normals and curvature"),  # noqa: E501
    Domain("segment_semantic", "segmentsemantic", "png", "gray8", description="0 uncertain, 1 background, 2..17 COCO-16 classes"),  # noqa: E501
    Domain("class_object", "class_object", "npy", "npy", description="1000-way ImageNet distribution (float32)"),  # noqa: E501
    Domain("class_scene", "class_places", "npy", "npy", description="365-way Places365 distribution (float32)"),  # noqa: E501
    Domain("point_info", "point_info", "json", "json", description="camera and point record, released field names"),  # noqa: E501
    Domain("nonfixated_matches", "nonfixated_matches", "json", "json", per_point=True, description="every (point, view) image in which the point is visible"),  # noqa: E501
)}
# fmt: on

_FILE_RE = re.compile(
    r"^point_(?P<point>[^_]+)_view_(?P<view>[^_]+)_domain_(?P<domain>.+)\.(?P<ext>\w+)$"
)


def register_domain(domain: Domain) -> None:
    """Add a domain (e.g. the labels of a novel or plugin task) so it can be packed and read.

    Raises:
        ValueError: a different domain with the same name is already registered, or the name
            cannot name a folder and a shard member (``KEY.DOMAIN.EXT``).
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", domain.name):
        raise ValueError(
            f"domain name {domain.name!r}: use letters, digits, '_' and '-' only (it names a "
            "folder, and shard members are KEY.DOMAIN.EXT, so a '.' would split it)"
        )
    existing = DOMAINS.get(domain.name)
    if existing is not None and existing != domain:
        raise ValueError(
            f"domain {domain.name!r} is already registered as {existing}; choose another name"
        )
    if domain.kind not in {"rgb8", "gray8", "gray16", "npy", "json"}:
        raise ValueError(
            f"domain {domain.name!r}: unknown kind {domain.kind!r}; "
            "valid kinds: rgb8, gray8, gray16, npy, json"
        )
    DOMAINS[domain.name] = domain


def get_domain(name: str) -> Domain:
    """The domain called ``name``; the error lists the valid domains."""
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; valid domains: {', '.join(DOMAINS)} (a "
                         "plugin's domain is known once its package, installed with a "
                         "`taskonomy.tasks` entry point, calls register_domain on import)")
    return DOMAINS[name]


def parse_file_name(file_name: str) -> tuple[str, str, str, str]:
    """Split a released file name into ``(point, view, file_domain, ext)``.

    Raises:
        ValueError: the name does not follow ``point_P_view_V_domain_D.ext``.
    """
    match = _FILE_RE.match(file_name)
    if match is None:
        raise ValueError(
            f"{file_name!r} is not a released Taskonomy file name "
            "(expected point_{P}_view_{V}_domain_{domain}.{ext})"
        )
    return match["point"], match["view"], match["domain"], match["ext"]


def encode_domain(domain: str, value: Any) -> bytes:
    """Encode a value into the bytes of a released file of ``domain``.

    ``rgb8`` domains take uint8 H×W×3 arrays in RGB order, ``gray16`` uint16 H×W, ``gray8`` uint8
    H×W, ``npy`` float arrays and ``json`` JSON-serializable objects.
    """
    kind = get_domain(domain).kind
    if kind == "json":
        return json.dumps(value).encode()
    if kind == "npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value, dtype=np.float32))
        return buffer.getvalue()
    array = np.asarray(value)
    expected = {"rgb8": (np.uint8, 3), "gray8": (np.uint8, 2), "gray16": (np.uint16, 2)}[kind]
    if array.dtype != expected[0] or array.ndim != expected[1]:
        raise ValueError(
            f"domain {domain!r} stores {expected[1]}-d {np.dtype(expected[0]).name} arrays, "
            f"got {array.ndim}-d {array.dtype}"
        )
    if kind == "rgb8":
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not PNG-encode an array of shape {array.shape} for {domain!r}")
    return bytes(buf.tobytes())


def decode_domain(domain: str, data: bytes) -> Any:
    """Decode the bytes of a released file of ``domain`` (the inverse of :func:`encode_domain`).

    Images keep their bit depth: 16-bit PNGs come back as uint16.

    Raises:
        ValueError: the bytes do not decode as this domain's file type.
    """
    kind = get_domain(domain).kind
    if not data:  # a truncated download; OpenCV and numpy would raise their own errors
        raise ValueError(f"empty file for domain {domain!r}")
    if kind == "json":
        return json.loads(data)
    if kind == "npy":
        import io

        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, EOFError) as error:
            raise ValueError(f"corrupt .npy file for domain {domain!r}: {error}") from None
    if kind == "gray8" and _is_palette_png(data):
        return _palette_indices(domain, data)
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"corrupt or unreadable PNG for domain {domain!r}")
    if kind == "rgb8":
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.shape[2] == 4:
            array = array[:, :, :3]
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
        if array.dtype != np.uint8:  # some released RGB files are 16-bit
            array = (array // 257).astype(np.uint8)
    elif array.ndim == 3:  # grey stored as RGB
        array = array[:, :, 0]
    if kind == "gray16" and array.dtype == np.uint8:
        array = array.astype(np.uint16) * 257
    return array


def _is_palette_png(data: bytes) -> bool:
    # The IHDR chunk comes first; its colour type byte (offset 25) is 3 for palette images.
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[25:26] == b"\x03"


def _palette_indices(domain: str, data: bytes) -> np.ndarray:
    """The palette indices of a palette PNG: for label maps they are the labels.

    OpenCV expands palette images to their colours, which would turn label ids into one
    channel of a colour.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"corrupt or unreadable PNG for domain {domain!r}") from error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    A reader never sees a half-written file under the final name, even if the writer is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        publish_temporary(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_temporary(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename a complete ``mkstemp`` file to ``path`` with the usual umask-based mode.

    mkstemp creates 0600 files: without the chmod, other users (or a training container with
    another uid) could not read what was written.
    """
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


def write_domain_file(building_dir: str | os.PathLike[str], domain: str, point: int | str,
                      view: int | str, value: Any) -> Path:
    """Write one file ``{building}/{domain}/point_P_view_V_domain_D.ext`` atomically."""
    spec = get_domain(domain)
    path = Path(building_dir) / spec.name / spec.file_name(point, view)
    atomic_write_bytes(path, encode_domain(domain, value))
    return path


def read_domain_file(path: str | os.PathLike[str], domain: str) -> Any:
    """Read and decode one released-layout file of ``domain``."""
    return decode_domain(domain, Path(path).read_bytes())
