"""`vfm-pose synth` end to end: a tiny dataset is written in BOP format and reads back consistently."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vfm_pose_ros.cli import main
from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.transforms import depth_to_points, transform_points
from vfm_pose_ros.data.bop import BopDataset

SHARED = Path(os.environ.get("VFM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LMO_MODELS = SHARED / "lmo_models" / "models"


def _surface_distance(obj, R, t, pts):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(transform_points(R, t, obj.vertices).astype(np.float32), obj.faces.astype(np.uint32))
    return scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()


def test_synth_writes_a_bop_dataset_that_reads_back(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["synth", "--frames", "3", "--test-frames", "2", "--seed", "4", "--out", str(out), "--no-progress",
               "--width", "320", "--height", "240", "--fx", "286.2", "--fy", "286.8"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "test" in printed and "total" in printed
    for rel in ("models/models_info.json", "models/obj_000001.ply", "models/obj_000002.ply",
                "train/000000/scene_gt.json", "train/000000/scene_gt_info.json", "train/000000/scene_camera.json",
                "train/000000/rgb/000002.png", "train/000000/depth/000002.png",
                "train/000000/mask_visib/000002_000001.png",
                "train/000000/mask/000000_000000.png", "test/000000/rgb/000001.png", "test_targets_bop19.json"):
        assert (out / rel).is_file(), rel
    assert not (out / "train/000000/rgb/000003.png").exists()

    models = Catalogue.from_bop_models(out / "models")
    assert sorted(models.names) == ["can_like", "driller_like"]
    for split, n in (("train", 3), ("test", 2)):
        ds = BopDataset(out, split, load_masks=True)
        assert len(ds) == n
        for scene_id, im_id in ds.keys():
            fr = ds.frame(scene_id, im_id)
            assert fr.rgb.shape == (240, 320, 3)
            assert np.allclose(fr.K, [[286.2, 0, 325.2611 / 2], [0, 286.8, 242.04899 / 2], [0, 0, 1]])
            assert sorted(g.name for g in fr.gts) == ["can_like", "driller_like"]
            for g in fr.gts:
                assert g.visib_fract >= 0.1
                pts = depth_to_points(fr.depth, fr.K, g.mask)
                assert len(pts) >= 100
                # depth stored at 0.1 mm steps and poses in mm: the cloud still lies on the posed model
                assert np.median(_surface_distance(models[g.name], g.R, g.t, pts)) < 1e-3

    # the same command again refuses to mix datasets, unless told to overwrite
    assert main(["synth", "--frames", "1", "--split", "train", "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--frames", "1", "--split", "train", "--out", str(out), "--no-progress",
                 "--overwrite", "--width", "320", "--height", "240"]) == 0
    assert len(BopDataset(out, "train")) == 1


def test_synth_reports_unknown_objects(tmp_path, capsys):
    assert main(["synth", "--objects", "toaster", "--frames", "1", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "toaster" in capsys.readouterr().err


@pytest.mark.skipif(not (LMO_MODELS / "models_info.json").is_file(),
                    reason=f"LM-O models not found at {LMO_MODELS} (set VFM_SHARED_DATA)")
def test_synth_from_a_bop_models_folder(tmp_path):
    out = tmp_path / "lmo_synth"
    rc = main(["synth", "--objects-dir", str(LMO_MODELS), "--objects", "driller,duck", "--frames", "1",
               "--split", "train", "--out", str(out), "--no-progress", "--width", "320", "--height", "240"])
    assert rc == 0
    fr = BopDataset(out, "train").frame(0, 0)
    assert sorted(g.obj_id for g in fr.gts) == [8, 9]
