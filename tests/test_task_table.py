"""The task table: 26 tasks whose names, domains and families agree."""

import json
import subprocess
import sys

import pytest

from taskonomy.datamodules.domains import DOMAINS
from taskonomy.tasks.registry import get_spec, task_names
from taskonomy.tasks.specs import BUILTIN_TASKS, CODE_NAMES, FAMILIES

REFERENCE_CODE_NAMES = {
    "autoencoder", "class_1000", "class_places", "class_selected", "colorization", "curvature",
    "denoise", "edge2d", "edge3d", "ego_motion", "fix_pose", "impainting_whole", "jigsaw",
    "keypoint2d", "keypoint3d", "non_fixated_pose", "point_match", "reshade", "rgb2depth",
    "rgb2mist", "rgb2sfnorm", "room_layout", "segment25d", "segment2d", "segmentsemantic_rb",
    "vanishing_point_well_defined",
}
SOURCE_ONLY = {"colorization", "inpainting", "jigsaw", "class_selected"}


def test_26_tasks_with_unique_names() -> None:
    names = [s.name for s in BUILTIN_TASKS]
    assert len(names) == 26 == len(set(names))
    assert set(CODE_NAMES) == REFERENCE_CODE_NAMES


@pytest.mark.parametrize("spec", BUILTIN_TASKS, ids=lambda s: s.name)
def test_spec_is_consistent(spec) -> None:
    assert spec.family in FAMILIES
    assert spec.domains[0] == "rgb"
    assert all(d in DOMAINS for d in spec.domains), spec.domains
    if spec.name in DOMAINS:  # a task named after a released folder reads that folder
        assert spec.name in spec.domains
    if spec.mask == "depth_valid":
        assert "depth_zbuffer" in spec.domains
    assert (spec.family == "multi_view") == (spec.views > 1)
    assert spec.target == (spec.name not in SOURCE_ONLY)
    assert get_spec(spec.name) is spec


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid tasks: autoencoding"):
        get_spec("surface_normals")


def test_targets_only() -> None:
    assert len(task_names(targets_only=True)) == 22


def test_tasks_command_prints_26_rows() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "taskonomy.experiments.cli", "tasks", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = json.loads(out)
    assert len(rows) == 26
    assert {r["name"] for r in rows} == {s.name for s in BUILTIN_TASKS}


def test_domain_codecs_round_trip_exactly() -> None:
    import numpy as np

    from taskonomy.datamodules.domains import decode_domain, encode_domain

    rng = np.random.default_rng(0)
    values = {
        "rgb": rng.integers(0, 256, (8, 9, 3), dtype=np.uint8),
        "depth_zbuffer": rng.integers(0, 65536, (8, 9), dtype=np.uint16),
        "segment_semantic": rng.integers(0, 18, (8, 9), dtype=np.uint8),
        "class_object": rng.random(1000).astype(np.float32),
        "point_info": {"resolution": 9, "point_uuid": "3"},
    }
    for domain, value in values.items():
        back = decode_domain(domain, encode_domain(domain, value))
        if isinstance(value, dict):
            assert back == value
        else:
            assert back.dtype == value.dtype and np.array_equal(back, value), domain


def test_palette_label_pngs_decode_to_their_indices() -> None:
    import io

    import numpy as np
    from PIL import Image

    from taskonomy.datamodules.domains import decode_domain

    labels = np.array([[0, 1, 2], [17, 3, 1]], dtype=np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([v for i in range(256) for v in (13 * i % 256, 7 * i % 256, 200)])
    data = io.BytesIO()
    image.save(data, format="PNG")
    back = decode_domain("segment_semantic", data.getvalue())
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    rgb = decode_domain("rgb", data.getvalue())  # an image keeps its colours
    assert rgb.shape == (2, 3, 3) and tuple(rgb[0, 1]) == (13, 7, 200)


def test_register_domain_refuses_a_clash() -> None:
    from taskonomy.datamodules.domains import DOMAINS, Domain, register_domain

    novel = Domain("my_labels", "my_labels", "png", "gray8")
    try:
        register_domain(novel)
        register_domain(novel)  # the same definition again is fine
        with pytest.raises(ValueError, match="already registered"):
            register_domain(Domain("my_labels", "my_labels", "png", "gray16"))
    finally:
        DOMAINS.pop("my_labels", None)
    with pytest.raises(ValueError, match="letters, digits"):
        register_domain(Domain("flow.v2", "flow", "npy", "npy"))  # would split as flow + v2
    assert "flow.v2" not in DOMAINS
