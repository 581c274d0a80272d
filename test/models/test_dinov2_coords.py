"""DINOv2 backend, representation "coords": model-coordinate targets, the network and loss, the inference path
(PnP-RANSAC on the mask cells) with the real head and with an oracle head, and --init from a votes checkpoint."""
import numpy as np
import pytest
import torch

from vfm_pose_ros.core.affine import apply_affine, crop_affine, invert_affine, letterbox_affine, out_affine
from vfm_pose_ros.core.metrics import add, adi
from vfm_pose_ros.core.symmetry import canonical_pose
from vfm_pose_ros.core.transforms import project, transform_points
from vfm_pose_ros.core.types import Frame, ObjectPose
from vfm_pose_ros.data.render import Renderer
from vfm_pose_ros.models import dinov2
from vfm_pose_ros.models.dinov2 import estimator as dinov2_estimator
from vfm_pose_ros.models.dinov2.data import coord_targets
from vfm_pose_ros.models.training import fit

from .test_half_precision import gt_boxes

TINY = {
    **dinov2.SMALL_CONFIG,
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 56, "head_channels": 16, "detail_channels": [8, 16], "vote_hypotheses": 32, "icp_starts": 1,
    "icp_global_rotations": 20, "icp_global_starts": 1, "min_mask_pixels": 1, "representation": "coords",
}


class _Frames(list):
    """A stand-in dataset: a list of frames with .gts/.rgb/.K (what KeypointDataset reads)."""


def test_coord_targets_project_onto_their_cells(catalogue, scene):
    """The target coordinates, moved by the canonical pose and projected, land on their cell's centre (mapped
    back to the image): within 1 px for at least 95 % of the valid cells, in object crops and the whole frame."""
    H, W = scene.rgb.shape[:2]
    renderer = Renderer(W, H, K=np.eye(3))
    names = catalogue.names
    affines = [letterbox_affine(H, W, 112)]
    for box in gt_boxes(scene).values():
        side = 1.3 * max(box[2] - box[0], box[3] - box[1])
        affines.append(crop_affine(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), side, 112))
    for A in affines:
        Ao = out_affine(A, dinov2.OUT_STRIDE)
        coord, valid = coord_targets(scene.gts, scene.K, Ao, 28, names, catalogue, renderer)
        assert coord.shape == (2, 3, 28, 28) and valid.shape == (2, 28, 28)
        for g in scene.gts:
            ci = names.index(g.name)
            R, t = canonical_pose(catalogue[g.name], g.R, g.t)
            rows, cols = np.nonzero(valid[ci])
            assert len(rows) >= 4, (g.name, len(rows))
            uv = project(scene.K, transform_points(R, t, coord[ci][:, rows, cols].T.astype(float)))
            centres = apply_affine(invert_affine(Ao), np.stack([cols, rows], 1))
            err = np.linalg.norm(uv - centres, axis=1)
            assert np.mean(err <= 1.0) >= 0.95, (g.name, np.percentile(err, [50, 95]))
            # and the valid cells are the object's: its visible mask covers (nearly) all of them
            label = (np.asarray(g.mask, np.uint8))
            seen = label[np.clip(np.round(centres[:, 1]).astype(int), 0, H - 1),
                         np.clip(np.round(centres[:, 0]).astype(int), 0, W - 1)]
            assert seen.mean() > 0.7


def test_coords_network_loss_and_inference(catalogue, scene, monkeypatch):
    torch.manual_seed(0)
    net = dinov2.build_net(TINY, catalogue)
    assert net.representation == "coords" and net.field_key == "coord"
    ds = dinov2.make_dataset(_Frames([scene]), catalogue, TINY, train=True)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    C, n = 2, 56 // 4
    assert batch["coord"].shape == (2, C, 3, n, n) and batch["coord_valid"].shape == (2, C, n, n)
    assert "vec" not in batch
    out = net(batch)
    assert out["seg"].shape == (2, C + 1, n, n) and out["coord"].shape == (2, C * 3, n, n)
    assert net.out.out_channels == C + 1 + C * 3
    loss, logs = net.loss(batch)
    loss.backward()
    assert np.isfinite(logs["loss"]) and {"loss", "seg", "coord", "fg_acc"} <= set(logs) and "vote" not in logs
    assert net.out.weight.grad is not None
    # normalised targets of the labelled valid cells lie within the bounding box: about [-1, 1]
    sel = batch["coord_valid"] & (batch["label"].unsqueeze(1) == torch.arange(1, C + 1).view(1, C, 1, 1))
    norm = net.normalise_coords(batch["coord"]).permute(0, 1, 3, 4, 2)[sel]
    assert len(norm) and norm.abs().max() <= 1.05
    # the state dict holds no coordinate-frame buffers (rebuilt from the catalogue)
    assert not any(k.startswith("coord_") for k in net.state_dict())

    frames = [Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth, boxes_2d=gt_boxes(scene)),
              Frame(rgb=scene.rgb, K=scene.K, depth=None, boxes_2d=gt_boxes(scene)),
              Frame(rgb=scene.rgb, K=scene.K)]  # its own detection
    pnp_points = []  # what reaches PnP: the mask cells' correspondences, float64 numpy
    real_pnp = dinov2_estimator.solve_pnp

    def spy_pnp(p3, p2, K, conf, **kwargs):
        pnp_points.append((p3, p2, conf))
        return real_pnp(p3, p2, K, conf, **kwargs)

    monkeypatch.setattr(dinov2_estimator, "solve_pnp", spy_pnp)
    for precision in ("fp32", "fp16"):
        est = dinov2.Estimator(net, catalogue, device="cpu", precision=precision)
        pnp_points.clear()
        preds = est.predict_batch(frames)
        assert len(preds) == 3 and isinstance(est.predict(frames[0]), list)
        assert pnp_points, "no crop reached PnP"
        for p3, p2, conf in pnp_points:
            assert p3.dtype == p2.dtype == np.float64 and p3.shape[1] == 3 and len(p3) == len(p2) == len(conf)
            assert np.all(conf == 1.0)
        for p in [q for pred in preds for q in pred]:
            assert p.R.dtype == np.float64 and np.isfinite(p.t).all() and np.isfinite(p.score)
            assert p.keypoints_2d is None or p.keypoints_2d.shape == (9, 2)
        previous = [ObjectPose(name=g.name, R=np.asarray(g.R, float), t=np.asarray(g.t, float)) for g in scene.gts]
        assert est.track(Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth), previous, min_fitness=0.0) is not None


def test_coords_oracle_poses_through_pnp_on_the_cells(catalogue, scene):
    """Perfect coordinates and masks (the oracle) give the ground-truth pose, RGB only, with keypoints drawn
    from the pose and a score that carries the inlier fraction."""
    est = dinov2.OracleEstimator(dinov2.build_net({**TINY, "img_size": 112}, catalogue), catalogue, device="cpu",
                                 use_depth=False, min_mask_pixels=12)
    fr = Frame(rgb=scene.rgb, K=scene.K, boxes_2d=gt_boxes(scene))
    fr.gts = scene.gts
    pred = est.predict(fr)
    assert {p.name for p in pred} == {g.name for g in scene.gts}
    for p in pred:
        g = next(g for g in scene.gts if g.name == p.name)
        obj = catalogue[g.name]
        err = (adi if obj.symmetric else add)(p.R, p.t, g.R, g.t, obj.eval_points(500))
        assert err < 0.02 * obj.diameter, (p.name, err)
        kp = est.keypoints[est.names.index(p.name)]
        assert np.allclose(p.keypoints_2d, project(scene.K, transform_points(p.R, p.t, kp)))
        assert 0.5 < p.score <= 1.0


def test_init_starts_a_coords_network_from_a_votes_checkpoint(catalogue, scene, tmp_path, capsys):
    votes_cfg = {**TINY, "representation": "votes", "full_frame_prob": 0.0}
    first = tmp_path / "votes.pt"
    fit("dinov2", votes_cfg, _Frames([scene]), None, catalogue, first, epochs=1, lr=3e-3, batch_size=2,
        progress=False, max_steps=1)
    capsys.readouterr()
    s = fit("dinov2", {**votes_cfg, "representation": "coords"}, _Frames([scene]), None, catalogue,
            tmp_path / "coords.pt", epochs=1, lr=0.0, batch_size=2, progress=False, max_steps=1, init=first)
    printed = capsys.readouterr().out
    assert "left at their initial values" in printed and "): out.bias, out.weight\n" in printed, printed
    from vfm_pose_ros.models.checkpoint import load_checkpoint

    want = load_checkpoint(first)["state_dict"]
    got = s["net"].state_dict()
    assert set(got) == set(want)
    same = [k for k in want if k.split(".")[0] != "out"]
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=1e-3) for k in same)  # lr 0: as loaded
    assert got["out.weight"].shape[0] == 3 + 2 * 3 != want["out.weight"].shape[0]
    # a shape mismatch outside the head's final layer stays an error
    with pytest.raises(ValueError, match="does not match"):
        fit("dinov2", {**votes_cfg, "representation": "coords", "head_channels": 8}, _Frames([scene]), None,
            catalogue, tmp_path / "bad.pt", epochs=1, batch_size=2, progress=False, max_steps=1, init=first)
