import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from taskonomy.datamodules.cameras import (
    camera_from_point_info,
    camera_from_pose,
    relative_pose,
    room_box_world,
    vanishing_point_pixels,
    vanishing_points_gaussian_sphere,
    vanishing_points_image,
)

# A released point_info record (the authors' sample building, alexsax/taskonomy-sample-model-1),
# kept verbatim.
REAL_RECORD = json.loads("""{"vanishing_points_gaussian_sphere": {"x": [-0.38620969618188905,
-0.2689648356416762, 0.8823264632568486], "y": [0.9222998179569449, -0.09774904691866532,
0.3739093066815518], "z": [-0.014321884362022957, 0.9581769361734496, 0.28581784866166454]},
"nonfixated_points_in_view": [672, 293, 1418, 267, 171, 242, 627, 818, 631, 184, 507, 701, 831],
"point_pitch": -0.2938327034327646, "camera_rotation_from_original_to_final":
[0.0527973547577858, -0.3006133437156677, -1.4009325504302979], "camera_location":
[-2.125469923019409, -10.290050506591797, 1.5054166316986084], "camera_rotation_original":
[1.585587501525879, -0.0013757790438830853, 1.7914842367172241], "view_id": 0,
"point_location": [-2.7812304496765137, -8.742630004882812, 1.004150152206421],
"camera_distance": 1.753795951654532, "bounding_box_ranges": {"x": [-10.290050506591797,
-5.961729275487249], "y": [-3.5429351193291825, -1.4695079743873167], "z":
[-0.08235783459480928, 2.4245548768714027]}, "obliqueness_angle": 1.2030236721038818,
"resolution": 512, "point_uuid": "0", "point_normal": [0.9537898302078247, 0.08961056172847748,
0.2868010699748993], "camera_rotation_final": [1.2809059619903564, 0.014322374016046524,
0.396561861038208], "vanishing_points_image": {"x": [103.08628268721337, 362.4924398610168],
"y": [506.9953062649422, 282.60149280177126], "z": [252.30272771430504, 8.641416355786001]},
"camera_uuid": "2b230e47a809ba0986cefc4de1b011af", "field_of_view_rads": 1.0489180166567196,
"room": "856e4980d5eb3351797f528948f684e5"}""")


def test_real_record_fixated_point_projects_to_image_centre():
    camera = camera_from_point_info(REAL_RECORD)
    pixels, depth = camera.project(np.array(REAL_RECORD["point_location"]))
    assert np.allclose(pixels[0], [256.0, 256.0], atol=1e-3)
    assert depth[0] == pytest.approx(REAL_RECORD["camera_distance"], rel=1e-4)


def test_real_record_intrinsics():
    camera = camera_from_point_info(REAL_RECORD)
    focal = 256.0 / math.tan(REAL_RECORD["field_of_view_rads"] / 2)
    assert np.allclose(camera.K, [[focal, 0, 256], [0, focal, 256], [0, 0, 1]])
    assert camera.width == camera.height == 512


def test_real_record_vanishing_point_conventions():
    camera = camera_from_point_info(REAL_RECORD)
    sphere = vanishing_points_gaussian_sphere(camera)
    image = vanishing_points_image(camera)
    for axis in "xyz":
        assert np.allclose(sphere[axis], REAL_RECORD["vanishing_points_gaussian_sphere"][axis],
                           atol=1e-6)
        assert np.allclose(image[axis], REAL_RECORD["vanishing_points_image"][axis], atol=1e-4)
    # The released up direction really is the world z axis seen from the camera (+y up frame).
    assert sphere["z"][1] > 0.9


def test_world_up_projects_to_the_perspective_vanishing_point():
    camera = camera_from_point_info(REAL_RECORD)
    point = vanishing_point_pixels(camera)["z"]
    # Points far along world z (from any start) converge to the z vanishing point.
    start = np.array(REAL_RECORD["point_location"])
    far = camera.project(start - np.array([0, 0, 1e7]))[0][0]
    assert np.allclose(far, point, atol=1e-2)


def test_camera_to_world_inverts_world_to_camera_and_rays_invert_projection():
    camera = camera_from_point_info(REAL_RECORD)
    assert np.allclose(camera.camera_to_world @ camera.world_to_camera, np.eye(4), atol=1e-12)
    assert np.allclose(camera.centre, REAL_RECORD["camera_location"])
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 512, (20, 2))
    rays = camera.pixel_rays(pixels)
    back, depth = camera.project(camera.centre + 3.0 * rays)
    assert np.allclose(back, pixels, atol=1e-8)
    assert np.all(depth > 0)


def test_rotation_gl_is_the_released_euler_angle():
    camera = camera_from_point_info(REAL_RECORD)
    expected = Rotation.from_euler("xyz", REAL_RECORD["camera_rotation_final"]).as_matrix()
    assert np.allclose(camera.rotation_gl, expected)
    # Camera looks down its -z: the optical axis points at the fixated point.
    forward = -camera.rotation_gl[:, 2]
    target = np.array(REAL_RECORD["point_location"]) - camera.centre
    assert forward @ target / np.linalg.norm(target) == pytest.approx(1.0, abs=1e-9)


def test_relative_pose_maps_points_between_camera_frames():
    rng = np.random.default_rng(1)
    first = camera_from_pose(rng.normal(size=3), Rotation.random(random_state=2).as_matrix(),
                             1.0, 64)
    second = camera_from_pose(rng.normal(size=3), Rotation.random(random_state=3).as_matrix(),
                              1.0, 64)
    pose = relative_pose(first, second)
    points = rng.normal(size=(10, 3))
    in_first = (points - first.centre) @ first.rotation_gl  # OpenGL frame coordinates
    in_second = (points - second.centre) @ second.rotation_gl
    assert np.allclose(in_first @ pose.rotation.T + pose.translation, in_second, atol=1e-9)
    encoding = pose.encoding()
    assert encoding.shape == (6,)
    assert np.allclose(Rotation.from_euler("xyz", encoding[:3]).as_matrix(), pose.rotation)
    assert np.allclose(relative_pose(first, first).encoding(), 0.0, atol=1e-9)


def test_missing_fields_name_the_problem():
    record = {k: v for k, v in REAL_RECORD.items() if k != "camera_rotation_final"}
    with pytest.raises(ValueError, match="camera_rotation_final"):
        camera_from_point_info(record)
    with pytest.raises(ValueError, match="field of view"):
        camera_from_point_info({**REAL_RECORD, "field_of_view_rads": 4.0})



def test_room_box_swaps_x_and_y_and_holds_camera_and_point():
    lo, hi = room_box_world(REAL_RECORD)
    for key in ("camera_location", "point_location"):
        position = np.array(REAL_RECORD[key])
        assert np.all(position >= lo - 1e-6) and np.all(position <= hi + 1e-6), key
    ranges = REAL_RECORD["bounding_box_ranges"]
    raw_lo = np.array([ranges[a][0] for a in "xyz"])
    raw_hi = np.array([ranges[a][1] for a in "xyz"])
    point = np.array(REAL_RECORD["point_location"])
    assert not (np.all(point >= raw_lo) and np.all(point <= raw_hi))  # unswapped: outside
