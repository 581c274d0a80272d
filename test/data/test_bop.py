"""BOP I/O: write a tiny dataset with BopWriter, read it back with BopDataset; results CSV; models folder."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel, Symmetry
from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose
from vfm_pose_ros.data.bop import (
    BopDataset,
    BopResult,
    BopWriter,
    bbox_from_mask,
    read_results_csv,
    write_models_info,
    write_results_csv,
)

CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)]) * 0.05
CUBE_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]) * 0.02
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
K = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
H, W = 48, 64


def catalogue() -> Catalogue:
    quarter = np.eye(4)
    quarter[:3, :3] = axis_angle_to_matrix([0, 0, math.pi / 2])
    cube = ObjectModel("cube", 1, CUBE, faces=CUBE_FACES, symmetry=Symmetry("discrete", [quarter]),
                       description="a box", keypoint_spec="fps:4")
    tetra = ObjectModel("tetra", 2, TETRA, faces=TETRA_FACES,
                        symmetry=Symmetry("continuous", axis=np.array([0, 0, 1.0]), offset=np.array([0, 0.01, 0])))
    return Catalogue([cube, tetra])


def box_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def pose(obj_id, name, t, rv=(0.1, 0.2, 0.3)):
    return GroundTruthPose(obj_id, name, axis_angle_to_matrix(rv), np.asarray(t, float))


def write_dataset(root, split="test"):
    rng = np.random.default_rng(0)
    frames = {}
    with BopWriter(root, split, K_default=K, catalogue=catalogue()) as w:
        # scene 0 image 0: cube and tetra, visible masks inside full masks.
        gts = [pose(1, "cube", [0.0, 0.0, 0.8]), pose(2, "tetra", [0.05, -0.02, 0.9], (0.0, 0.5, 0.0))]
        full = [box_mask(10, 5, 30, 25), box_mask(40, 10, 50, 40)]
        visib = [box_mask(10, 5, 30, 15), box_mask(40, 10, 50, 40)]  # the cube half hidden
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.uniform(0.5, 1.5, (H, W)).astype(np.float32)
        depth[0, :5] = 0.0
        w.add_frame(0, 0, rgb, depth, K, gts, masks_visib=visib, masks=full)
        frames[(0, 0)] = (rgb, depth, gts)
        # scene 0 image 1: one cube, two tetras, one of them 5 % visible; no full masks: visib_fract from gts.
        gts = [pose(1, "cube", [0.0, 0.0, 0.7]), pose(2, "tetra", [0.1, 0, 1.0]), pose(2, "tetra", [-0.1, 0, 1.0])]
        gts[1].visib_fract, gts[2].visib_fract = 0.9, 0.05
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        w.add_frame(0, 1, rgb, None, None, gts)
        frames[(0, 1)] = (rgb, None, gts)
    # A second session adds scene 3 (and must keep scene 0).
    with BopWriter(root, split, K_default=K) as w:
        gts = [pose(2, "tetra", [0.0, 0.0, 0.5])]
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        w.add_frame(3, 5, rgb, np.full((H, W), 0.5, np.float32), K, gts, depth_scale=1.0)
        frames[(3, 5)] = (rgb, None, gts)
    write_models_info(root / "models", catalogue())
    return frames


@pytest.fixture
def dataset_dir(tmp_path):
    root = tmp_path / "tiny"
    frames = write_dataset(root)
    return root, frames


def test_layout_and_json(dataset_dir):
    root, _ = dataset_dir
    s0 = root / "test" / "000000"
    for rel in ("rgb/000000.png", "depth/000000.png", "mask_visib/000000_000001.png", "mask/000000_000000.png",
                "scene_camera.json", "scene_gt.json", "scene_gt_info.json"):
        assert (s0 / rel).is_file(), rel
    gt = json.loads((s0 / "scene_gt.json").read_text())
    assert gt["0"][0]["cam_t_m2c"] == pytest.approx([0.0, 0.0, 800.0])  # millimetres in the file
    assert gt["0"][1]["obj_id"] == 2
    cam = json.loads((s0 / "scene_camera.json").read_text())
    assert cam["0"]["cam_K"] == pytest.approx(K.reshape(-1).tolist()) and cam["0"]["depth_scale"] == 0.1
    info = json.loads((s0 / "scene_gt_info.json").read_text())["0"]
    # BOP boxes: [x, y, x_max - x_min, y_max - y_min]; the cube is 200 of 400 pixels visible.
    assert info[0]["bbox_visib"] == [10, 5, 19, 9] and info[0]["bbox_obj"] == [10, 5, 19, 19]
    assert (info[0]["px_count_all"], info[0]["px_count_visib"]) == (400, 200)
    assert info[0]["visib_fract"] == pytest.approx(0.5)
    assert info[0]["px_count_valid"] == 400  # depth is valid over the whole full mask
    info1 = json.loads((s0 / "scene_gt_info.json").read_text())["1"]
    assert info1[2]["visib_fract"] == pytest.approx(0.05) and info1[2]["px_count_all"] == -1
    assert info1[0]["bbox_obj"][2] > 0  # from the projected catalogue model
    targets = json.loads((root / "test_targets_bop19.json").read_text())
    # Image 1 has two tetras but only one is at least 10 % visible; scene 3 came from the second session.
    assert {"scene_id": 0, "im_id": 1, "obj_id": 2, "inst_count": 1} in targets
    assert {"scene_id": 3, "im_id": 5, "obj_id": 2, "inst_count": 1} in targets
    assert len(targets) == 5
    camera = json.loads((root / "camera.json").read_text())
    assert (camera["width"], camera["height"], camera["fx"]) == (W, H, 50.0)


def test_read_back_frames(dataset_dir):
    root, frames = dataset_dir
    ds = BopDataset(root, "test", load_masks=True)
    assert ds.scene_ids() == [0, 3]
    assert ds.keys() == [(0, 0), (0, 1), (3, 5)] and len(ds) == 3
    f = ds.frame(0, 0)
    rgb, depth, gts = frames[(0, 0)]
    np.testing.assert_array_equal(f.rgb, rgb)  # PNG is lossless, RGB order kept
    assert f.depth.dtype == np.float32
    np.testing.assert_allclose(f.depth, depth, atol=0.5e-4 + 1e-7)  # 0.1 mm steps
    assert f.depth[0, 0] == 0.0
    np.testing.assert_allclose(f.K, K)
    assert (f.width, f.height) == (W, H)
    assert [g.name for g in f.gts] == ["cube", "tetra"]  # names from models/catalogue.json
    np.testing.assert_allclose(f.gts[1].t, [0.05, -0.02, 0.9])  # metres again
    np.testing.assert_allclose(f.gts[0].R, gts[0].R, atol=1e-12)
    assert f.gts[0].visib_fract == pytest.approx(0.5)
    np.testing.assert_array_equal(f.gts[0].mask, box_mask(10, 5, 30, 15))
    np.testing.assert_array_equal(f.gts[0].bbox_visib, [10, 5, 19, 9])
    frame = f.to_frame(prompt="the cube")
    assert frame.prompt == "the cube" and frame.rgb.shape == (H, W, 3)
    f35 = ds.frame(3, 5)
    np.testing.assert_allclose(f35.depth, 0.5)  # depth_scale 1.0 this time
    # Annotations only: no decoding, size from camera.json.
    light = ds.frame(0, 1, load_images=False)
    assert light.rgb is None and (light.width, light.height) == (W, H) and len(light.gts) == 3
    with pytest.raises(ValueError, match="load_images=False"):
        light.to_frame()
    assert [fr.im_id for fr in ds] == [0, 1, 5]


def test_targets_keep_the_most_visible_instances(dataset_dir):
    root, _ = dataset_dir
    ds = BopDataset(root, "test", targets="bop19")
    f = ds.frame(0, 1, load_images=False)
    assert [(g.name, g.visib_fract) for g in f.gts] == [("cube", 1.0), ("tetra", 0.9)]
    (root / "test_targets_bop19.json").write_text(json.dumps([{"scene_id": 3, "im_id": 5, "obj_id": 2,
                                                                "inst_count": 1}]))
    assert BopDataset(root, "test", targets="bop19").keys() == [(3, 5)]
    (root / "test_targets_bop19.json").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(BopDataset(root, "test", targets="bop19")) == 3
    assert any("test_targets_bop19.json not found" in str(c.message) for c in caught)


def test_names_from_the_catalogue_override_the_dataset_mapping(dataset_dir):
    root, _ = dataset_dir
    renamed = Catalogue([ObjectModel("box", 1, CUBE), ObjectModel("pyramid", 2, TETRA)])
    f = BopDataset(root, "test", catalogue=renamed).frame(0, 0, load_images=False)
    assert [g.name for g in f.gts] == ["box", "pyramid"]
    (root / "models" / "catalogue.json").unlink()
    f = BopDataset(root, "test").frame(0, 0, load_images=False)
    assert [g.name for g in f.gts] == ["obj_000001", "obj_000002"]


def test_gray_images_become_three_channels(tmp_path):
    import cv2

    root = tmp_path / "g"
    with BopWriter(root, "val", K_default=K) as w:
        w.add_frame(1, 2, np.zeros((H, W, 3), np.uint8), None, None, [])
    sdir = root / "val" / "000001"
    gray = (np.arange(H * W) % 256).astype(np.uint8).reshape(H, W)
    (sdir / "rgb" / "000002.png").unlink()
    (sdir / "gray").mkdir()
    cv2.imwrite(str(sdir / "gray" / "000002.png"), gray)
    f = BopDataset(root, "val").frame(1, 2)
    assert f.rgb.shape == (H, W, 3)
    np.testing.assert_array_equal(f.rgb[:, :, 0], gray)
    np.testing.assert_array_equal(f.rgb[:, :, 2], gray)
    assert f.depth is None and f.gts == []
    assert not (root / "test_targets_bop19.json").exists()  # not a test split


def test_clear_errors(tmp_path, dataset_dir):
    root, _ = dataset_dir
    with pytest.raises(FileNotFoundError, match="split folder not found.*this dataset has: test"):
        BopDataset(root, "train")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        BopDataset(tmp_path / "nowhere")
    (root / "test" / "000003" / "scene_camera.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing scene_camera.json.*cam_K"):
        BopDataset(root, "test").keys()
    (root / "test" / "000000" / "rgb" / "000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="no image for scene 000000 image 1"):
        BopDataset(root, "test").frame(0, 1)
    with pytest.raises(KeyError, match="scene 7 not in"):
        BopDataset(root, "test").frame(7, 0)
    w = BopWriter(tmp_path / "w", "train")
    with pytest.raises(ValueError, match="no camera matrix"):
        w.add_frame(0, 0, np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="rgb must be HxWx3 uint8"):
        w.add_frame(0, 0, np.zeros((H, W), np.uint8), K=K)
    with pytest.raises(ValueError, match="1 masks for 2 ground-truth poses"):
        w.add_frame(0, 0, np.zeros((H, W, 3), np.uint8), None, K, [pose(1, "a", [0, 0, 1])] * 2,
                    masks_visib=[box_mask(0, 0, 1, 1)])


def test_models_folder_round_trip(dataset_dir):
    root, _ = dataset_dir
    cat = Catalogue.from_bop_models(root / "models")
    assert cat.names == ["cube", "tetra"]
    cube, tetra = cat["cube"], cat["tetra"]
    np.testing.assert_allclose(cube.vertices, CUBE, atol=1e-9)  # written in mm, read back in m
    assert cube.faces.shape == (12, 3)
    assert cube.diameter == pytest.approx(0.1 * math.sqrt(3))
    assert cube.symmetry.kind == "discrete" and len(cube.symmetry.transforms) == 1
    assert cube.description == "a box" and cube.keypoint_spec == "fps:4"
    assert tetra.symmetry.kind == "continuous"
    np.testing.assert_allclose(tetra.symmetry.offset, [0, 0.01, 0])
    info = json.loads((root / "models" / "models_info.json").read_text())
    assert info["1"]["diameter"] == pytest.approx(100 * math.sqrt(3))
    assert info["2"]["symmetries_continuous"][0]["offset"] == pytest.approx([0, 10.0, 0])
    assert info["1"]["size_x"] == pytest.approx(100.0) and info["1"]["min_x"] == pytest.approx(-50.0)


def test_results_csv_round_trip(tmp_path):
    R = axis_angle_to_matrix([0.1, -0.2, 0.3])
    results = [BopResult(0, 1, 2, 0.75, R, np.array([0.01, -0.02, 0.8]), 0.123),
               BopResult.from_pose(3, 4, ObjectPose("cube", np.eye(3), np.array([0, 0, 1.0]), score=0.5), obj_id=1)]
    path = write_results_csv(tmp_path / "r.csv", results)
    lines = path.read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time"
    assert lines[1].split(",")[5].split() == ["10.0", "-20.0", "800.0"]  # millimetres in the file
    back = read_results_csv(path)
    assert [(r.scene_id, r.im_id, r.obj_id, r.score, r.time) for r in back] == [(0, 1, 2, 0.75, 0.123),
                                                                                 (3, 4, 1, 0.5, -1.0)]
    np.testing.assert_allclose(back[0].R, R, rtol=0, atol=1e-15)
    np.testing.assert_allclose(back[0].t, [0.01, -0.02, 0.8])
    assert back[1].to_pose("cube").name == "cube"
    # Header-less BOP files read too; bad rows name the line.
    (tmp_path / "nohead.csv").write_text("1,2,3,0.9," + " ".join(["1", "0", "0", "0", "1", "0", "0", "0", "1"])
                                         + ",0 0 500,-1\n")
    (r,) = read_results_csv(tmp_path / "nohead.csv")
    assert r.t[2] == pytest.approx(0.5)
    (tmp_path / "bad.csv").write_text("scene_id,im_id,obj_id,score,R,t,time\n1,2,3,0.9,1 0 0,0 0 1,-1\n")
    with pytest.raises(ValueError, match="bad.csv:2: malformed"):
        read_results_csv(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="results file not found"):
        read_results_csv(tmp_path / "none.csv")


def test_bbox_from_mask_matches_bop():
    assert bbox_from_mask(box_mask(3, 4, 4, 5)) == [3, 4, 0, 0]  # a single pixel: w = h = 0 as in BOP
    assert bbox_from_mask(np.zeros((H, W), bool)) == [-1, -1, -1, -1]
