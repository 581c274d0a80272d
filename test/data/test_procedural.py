"""Procedural default objects: deterministic, committed as generated, sized and coloured as intended."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vfm_pose_ros.core.catalogue import Catalogue, load_mesh
from vfm_pose_ros.data.procedural import OBJECT_NAMES, make_object, to_object_model, write_default_objects
from vfm_pose_ros.data.render import Light, Renderer
from vfm_pose_ros.data.scenes import LMO_K
from vfm_pose_ros.paths import default_catalogue_dir


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def test_regenerating_gives_the_committed_files(tmp_path):
    write_default_objects(tmp_path)
    committed = default_catalogue_dir()
    for name in OBJECT_NAMES:
        new_v, new_f, new_c = load_mesh(tmp_path / "meshes" / f"{name}.ply")
        old_v, old_f, old_c = load_mesh(committed / "meshes" / f"{name}.ply")
        hint = f"{name}: the committed mesh differs from the generator; run `python -m vfm_pose_ros.data.procedural`"
        assert np.array_equal(new_f, old_f) and np.array_equal(new_c, old_c), hint
        # float32 in the PLY; 1 um allows for libm sin/cos differing in the last bit between machines
        assert new_v.shape == old_v.shape and np.abs(new_v - old_v).max() <= 1e-6, hint
        assert (tmp_path / f"{name}.yaml").read_text() == (committed / f"{name}.yaml").read_text()
        assert (committed / "meshes" / f"{name}.ply").stat().st_size < 1_000_000


def test_catalogue_entries(catalogue):
    d, c = catalogue["driller_like"], catalogue["can_like"]
    assert (d.class_id, c.class_id) == (1, 2)
    assert 0.20 <= d.diameter <= 0.26 and 0.20 <= d.bbox_size.max() <= 0.26
    assert 0.12 <= c.diameter <= 0.15
    assert not d.symmetric
    assert c.symmetry.kind == "continuous" and np.allclose(c.symmetry.axis, [0, 0, 1])
    # the words people use: each grasp frame is named by its own aliases, and its description names its part
    assert list(d.grasp_frames) == ["handle", "body", "chuck"] and list(c.grasp_frames) == ["body", "top"]
    for obj in (d, c):
        for name, g in obj.grasp_frames.items():
            assert name in g.aliases and g.description.startswith("the ")
    assert "drill" in d.aliases and "can" in c.aliases and not set(d.aliases) & set(c.aliases)
    assert "grip" in d.grasp_frames["handle"].aliases and "lid" in c.grasp_frames["top"].aliases
    assert all(w in d.description for w in ("green", "orange", "blue", "drill"))
    assert all(w in c.description for w in ("red", "white", "cylinder"))
    for obj in (d, c):
        assert obj.keypoints.shape == (9, 3)
        assert np.allclose(obj.bbox_center, 0, atol=1e-9), "object frame centred on its box, as BOP models are"
        assert obj.vertex_colors is not None and len(np.unique(obj.vertex_colors, axis=0)) >= 4
        for g in obj.grasp_frames.values():
            assert (np.abs(g.T[:3, 3]) <= obj.bbox_max + 1e-9).all()
    # the handle frame sits below the body, the lid frame at the top
    assert d.grasp_frames["handle"].T[2, 3] < d.grasp_frames["body"].T[2, 3]
    assert np.isclose(c.grasp_frames["top"].T[2, 3], c.bbox_max[2], atol=0.005)


def test_face_count_option():
    for name in OBJECT_NAMES:
        obj = make_object(name, faces=10_000)
        assert 8_500 <= len(obj.faces) <= 11_500
        assert np.allclose(obj.vertices.min(0), make_object(name).vertices.min(0), atol=2e-3)


def _render(obj, R):
    r = Renderer(640, 480, LMO_K)
    return r.render([(obj, R, np.array([0.0, 0.0, 0.5]))], light=Light(direction=(0.0, 0.0, -1.0)))


def test_can_symmetry_is_real_and_driller_is_not(catalogue):
    """Turning the can about its axis leaves the image unchanged (shape and colours); the driller changes."""
    base = Rotation.from_euler("x", -60, degrees=True).as_matrix()
    turn = Rotation.from_euler("z", 97, degrees=True).as_matrix()
    for name, same in (("can_like", True), ("driller_like", False)):
        obj = catalogue[name]
        a, b = _render(obj, base), _render(obj, base @ turn)
        inter = (a.masks_full[0] & b.masks_full[0]).sum()
        iou = inter / (a.masks_full[0] | b.masks_full[0]).sum()
        both = a.masks_full[0] & b.masks_full[0]
        diff = np.abs(a.rgb[both].astype(int) - b.rgb[both].astype(int)).mean()
        if same:
            assert iou > 0.98 and diff < 6, (iou, diff)
        else:
            assert iou < 0.9 or diff > 20, (iou, diff)


def test_in_memory_model_matches_file(catalogue):
    m = to_object_model(make_object("driller_like"))
    assert np.allclose(m.vertices, catalogue["driller_like"].vertices, atol=1e-6)  # PLY stores float32
    assert set(m.grasp_frames) == set(catalogue["driller_like"].grasp_frames)
