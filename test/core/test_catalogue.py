"""The object catalogue: geometry helpers, YAML entries, BOP models folders (and the real LM-O models when present)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import (
    LINEMOD_NAMES,
    Catalogue,
    ObjectModel,
    Symmetry,
    box_corners,
    compute_diameter,
    farthest_point_sampling,
    load_object_yaml,
    make_keypoints,
)

CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
CUBE_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def shared_data() -> Path:
    env = os.environ.get("VFM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_box_corners_and_keypoints():
    v = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    corners = box_corners(v.min(0), v.max(0))
    assert corners.shape == (8, 3)
    assert {tuple(c) for c in corners} == {(x, y, z) for x in (0, 1) for y in (0, 2) for z in (0, 3)}
    kp = make_keypoints(v, "box")
    assert kp.shape == (9, 3)
    np.testing.assert_allclose(kp[-1], [0.5, 1.0, 1.5])  # the box centre last
    np.testing.assert_allclose(make_keypoints(v, [[1, 2, 3]]), [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="keypoints must be"):
        make_keypoints(v, [1, 2])


def test_farthest_point_sampling_picks_the_cube_corners():
    # A dense cube surface sample plus its corners: 8 farthest points from any start are the 8 corners.
    rng = np.random.default_rng(0)
    inner = rng.uniform(-0.9, 0.9, size=(500, 3))
    pts = np.vstack([inner, CUBE])
    # Seeded with the box centre (PVNet style), the first 8 picks are the 8 corners.
    fps = farthest_point_sampling(pts, 8)
    assert {tuple(p) for p in fps} == {tuple(c) for c in CUBE}
    np.testing.assert_array_equal(farthest_point_sampling(pts, 8), fps)  # deterministic
    rnd = farthest_point_sampling(pts, 9, seed=0, start="random")  # a random start is itself returned
    assert len({tuple(p) for p in rnd}) == 9
    with pytest.raises(ValueError, match="start must be"):
        farthest_point_sampling(pts, 3, start="middle")
    kp = make_keypoints(pts, "fps:8")
    assert kp.shape == (9, 3)


def test_diameter_is_exact():
    assert compute_diameter(CUBE) == pytest.approx(2 * math.sqrt(3))
    flat = np.array([[0.0, 0, 0], [3.0, 0, 0], [0, 4.0, 0], [1.0, 1.0, 0], [2.0, 1.0, 0]])  # degenerate hull
    assert compute_diameter(flat) == pytest.approx(5.0)
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(400, 3))
    brute = np.max(np.linalg.norm(pts[:, None] - pts[None], axis=-1))
    assert compute_diameter(pts) == pytest.approx(brute)
    assert ObjectModel("c", 1, CUBE).diameter == pytest.approx(2 * math.sqrt(3))


def test_yaml_entry_in_millimetres(tmp_path):
    import trimesh

    trimesh.Trimesh(CUBE * 50.0, CUBE_FACES, process=False).export(tmp_path / "cube.ply")  # 100 mm cube
    (tmp_path / "cube.yaml").write_text(
        "name: cube\nclass_id: 3\nmesh: cube.ply\nunit: mm\n"
        "symmetry: {type: continuous, axis: [0, 0, 1], offset: [0, 0, 0]}\n"
        "keypoints: box\n"
        "grasp_frames:\n  top: {xyz: [0, 0, 0.05], quat: [0, 0, 0, 1], description: the top face}\n"
        "description: a test cube\n"
    )
    obj = load_object_yaml(tmp_path / "cube.yaml")
    np.testing.assert_allclose(obj.bbox_size, [0.1, 0.1, 0.1])
    assert obj.diameter == pytest.approx(0.1 * math.sqrt(3))
    assert obj.symmetric and obj.symmetry.kind == "continuous"
    np.testing.assert_allclose(obj.grasp_frames["top"].T[:3, 3], [0, 0, 0.05])
    assert obj.grasp_frames["top"].description == "the top face"
    cat = Catalogue.from_dir(tmp_path)
    assert cat.names == ["cube"] and cat.get_by_id(3) is cat["cube"]
    with pytest.raises(KeyError, match="the catalogue has: cube"):
        cat["sphere"]
    (tmp_path / "bad.yaml").write_text("name: bad\nclass_id: 4\nmesh: cube.ply\nsymmetry: {type: discrete}\n")
    with pytest.raises(ValueError, match="discrete symmetry needs 'transforms'"):
        Catalogue.from_dir(tmp_path)


def test_names_and_ids_must_be_unique():
    with pytest.raises(ValueError, match="named 'a'"):
        Catalogue([ObjectModel("a", 1, CUBE), ObjectModel("a", 2, CUBE)])
    with pytest.raises(ValueError, match="share class_id 1"):
        Catalogue([ObjectModel("a", 1, CUBE), ObjectModel("b", 1, CUBE)])


def test_symmetry_bop_round_trip_converts_millimetres():
    T = np.eye(4)
    T[:3, :3] = np.diag([-1.0, -1.0, 1.0])
    T[:3, 3] = [0.01, 0.0, 0.0]  # metres
    sym = Symmetry("continuous", [T], np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.002, 0.0]))
    info = sym.to_bop()
    assert info["symmetries_discrete"][0][3] == pytest.approx(10.0)  # mm in the file
    assert info["symmetries_continuous"][0]["offset"] == pytest.approx([0.0, 2.0, 0.0])
    back = Symmetry.from_bop(info)
    assert back.kind == "continuous"
    np.testing.assert_allclose(back.transforms[0], T)
    np.testing.assert_allclose(back.offset, [0.0, 0.002, 0.0])
    assert Symmetry.from_bop({}).kind == "none"
    assert Symmetry.from_bop({"symmetries_discrete": info["symmetries_discrete"]}).kind == "discrete"


def write_models(d: Path, infos: dict, mapping: dict | None = None) -> Path:
    import trimesh

    d.mkdir(parents=True)
    for obj_id in infos:
        trimesh.Trimesh(CUBE * 10.0 * int(obj_id), CUBE_FACES, process=False).export(d / f"obj_{int(obj_id):06d}.ply")
    (d / "models_info.json").write_text(json.dumps(infos))
    if mapping is not None:
        (d / "catalogue.json").write_text(json.dumps(mapping))
    return d


def test_from_bop_models_names_units_and_symmetry(tmp_path):
    infos = {"1": {"diameter": 34.641}, "2": {"diameter": 69.282, "symmetries_discrete": [
        [-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]]}}
    d = write_models(tmp_path / "mine" / "models", infos, {"objects": {"1": {"name": "small"}}})
    cat = Catalogue.from_bop_models(d)
    assert cat.names == ["small", "obj_000002"]  # catalogue.json name, else the BOP fallback
    small = cat["small"]
    np.testing.assert_allclose(small.bbox_size, [0.02, 0.02, 0.02])  # mm -> m
    assert small.diameter == pytest.approx(0.034641) and not small.symmetric
    assert cat["obj_000002"].symmetric and cat["obj_000002"].symmetry.kind == "discrete"
    # The dataset root works too, names can be given, and unknown names are reported.
    assert Catalogue.from_bop_models(tmp_path / "mine", id_names={2: "big"}).names == ["small", "big"]
    assert Catalogue.from_bop_models(d, names=["obj_000002"]).names == ["obj_000002"]
    with pytest.raises(KeyError, match="unknown object"):
        Catalogue.from_bop_models(d, names=["nope"])
    # An LM-like folder gets the LineMOD names.
    lm = write_models(tmp_path / "lmo" / "models", {"8": {"diameter": 1.0}, "10": {"diameter": 1.0}})
    assert Catalogue.from_bop_models(lm).names == [LINEMOD_NAMES[8], LINEMOD_NAMES[10]] == ["driller", "eggbox"]
    (lm / "obj_000008.ply").unlink()
    with pytest.raises(FileNotFoundError, match="obj_000008.ply"):
        Catalogue.from_bop_models(lm)
    with pytest.raises(FileNotFoundError, match="no models_info.json"):
        Catalogue.from_bop_models(tmp_path)


LMO = shared_data() / "lmo_models"


@pytest.mark.skipif(not (LMO / "models" / "models_info.json").is_file(),
                    reason=f"LM-O models not found at {LMO} (set VFM_SHARED_DATA to the folder holding lmo_models)")
def test_lmo_driller_diameter_and_symmetries():
    info = json.loads((LMO / "models" / "models_info.json").read_text())
    cat = Catalogue.from_bop_models(LMO / "models", names=["driller", "eggbox", "glue", "ape"])
    driller = cat["driller"]
    assert driller.class_id == 8
    assert info["8"]["diameter"] == pytest.approx(261.472)
    assert compute_diameter(driller.vertices) * 1000 == pytest.approx(261.472, abs=0.1)
    assert driller.diameter * 1000 == pytest.approx(261.472)
    assert cat["eggbox"].symmetric and cat["glue"].symmetric
    assert not driller.symmetric and not cat["ape"].symmetric
    # The eggbox's 180 deg flip, translation converted to metres.
    T = cat["eggbox"].symmetry.transforms[0]
    assert T[0, 3] == pytest.approx(0.232611e-3)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0, abs=1e-3)
