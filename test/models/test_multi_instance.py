"""Several instances of one object in one image: DINOv2 stage 1 splits an object's mask into instances.

The network is the instance-aware oracle (models/dinov2/oracle.py: perfect segmentation and vote
fields from the ground truth), so what is tested is the instance logic: connected components, one
crop per instance, votes and ICP points kept on their own instance, numbering, duplicate removal.
"""
import numpy as np
import pytest
import torch

from vfm_pose_ros.core.affine import in_box
from vfm_pose_ros.core.metrics import add
from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.types import Frame, GroundTruthPose, ObjectPose
from vfm_pose_ros.models import dinov2

TINY = {
    **dinov2.SMALL_CONFIG,
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 112, "det_img_size": 224, "head_channels": 16, "detail_channels": [8, 16], "vote_hypotheses": 64,
}


@pytest.fixture(scope="module")
def two_drillers(catalogue):
    """A 640x480 frame with two copies of driller_like side by side, one far and small, one near and large (so
    the large one fills part of the small one's crop), and the can; with depth and masks."""
    from vfm_pose_ros.data.render import Renderer
    from vfm_pose_ros.data.scenes import LMO_K, random_background

    drill, can = catalogue["driller_like"], catalogue["can_like"]
    poses = [
        (drill, axis_angle_to_matrix([0.3, -0.5, 0.2]), np.array([-0.26, 0.0, 1.3])),
        (drill, axis_angle_to_matrix([-0.2, 0.9, -0.1]), np.array([0.04, 0.03, 0.65])),
        (can, axis_angle_to_matrix([1.2, 0.0, 0.3]), np.array([0.0, -0.14, 0.95])),
    ]
    res = Renderer(640, 480, K=LMO_K).render(poses, background=random_background(np.random.default_rng(0), 480, 640))
    gts = [GroundTruthPose(obj_id=o.class_id, name=o.name, R=R, t=t, visib_fract=v, mask=m)
           for (o, R, t), v, m in zip(poses, res.visib_fract, res.masks_visib)]
    assert all(m.sum() > 500 for m in res.masks_visib)
    return res, gts, LMO_K


def _frame(res, gts, K, depth=True, boxes=None) -> Frame:
    fr = Frame(rgb=res.rgb, K=K, depth=res.depth if depth else None, boxes_2d=boxes)
    fr.gts = gts  # what the oracle reads
    return fr


@pytest.fixture(scope="module")
def oracle(catalogue):
    torch.manual_seed(0)
    return dinov2.OracleEstimator(dinov2.build_net(TINY, catalogue), catalogue, device="cpu")


def _check(poses, gts, catalogue, tol):
    drills = [p for p in poses if p.name == "driller_like"]
    assert len(drills) == 2, [(p.name, p.instance) for p in poses]
    assert sorted(p.instance for p in drills) == [0, 1]
    assert drills[0].score >= drills[1].score  # numbered by score
    gt_drills = [g for g in gts if g.name == "driller_like"]
    pts = catalogue["driller_like"].eval_points(500)
    # each ground-truth copy has its own estimate, near it (a one-to-one match)
    err = np.array([[add(p.R, p.t, g.R, g.t, pts) for g in gt_drills] for p in drills])
    assert err.min(1).max() < tol, err
    assert sorted(err.argmin(1).tolist()) == [0, 1], err
    assert len([p for p in poses if p.name == "can_like"]) == 1


@pytest.mark.parametrize("use_depth", [False, True])
def test_two_instances_of_one_object(oracle, two_drillers, catalogue, use_depth):
    res, gts, K = two_drillers
    poses = oracle.predict(_frame(res, gts, K, depth=use_depth))
    assert all(isinstance(p, ObjectPose) for p in poses)
    _check(poses, gts, catalogue, tol=0.004 if use_depth else 0.003)
    if use_depth:  # ICP points of one copy never come from the other: the fits are tight
        fits = [p.icp_fitness for p in poses if p.name == "driller_like"]
        assert all(f is not None and f > 0.75 for f in fits), fits


def test_detection_gives_one_box_per_instance(oracle, two_drillers):
    res, gts, K = two_drillers
    det = oracle.detect([_frame(res, gts, K)])[0]
    assert len(det["driller_like"]) == 2 and len(det["can_like"]) == 1
    scores = [s for _, s in det["driller_like"]]
    assert scores == sorted(scores, reverse=True)
    for g in (g for g in gts if g.name == "driller_like"):  # every copy's mask centre lies in one of the boxes
        ys, xs = np.nonzero(g.mask)
        c = np.array([[xs.mean(), ys.mean()]])
        assert sum(bool(in_box(c, b)[0]) for b, _ in det["driller_like"]) == 1


def test_external_boxes_array_of_instances(oracle, two_drillers, catalogue):
    """Frame.boxes_2d may hold an Nx4 array per object (one row per instance): stage 1 is skipped."""
    res, gts, K = two_drillers
    boxes = []
    for g in gts:
        ys, xs = np.nonzero(g.mask)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    frame = _frame(res, gts, K, boxes={"driller_like": np.array(boxes[:2], float), "can_like": boxes[2]})
    _check(oracle.predict(frame), gts, catalogue, tol=0.004)
    with pytest.raises(ValueError, match="Nx4"):
        oracle.predict(_frame(res, gts, K, boxes={"driller_like": np.zeros((2, 3))}))


def test_split_mask_gives_one_instance(oracle, two_drillers, catalogue):
    """A copy whose visible mask is cut in two (an occluding bar) is still one instance: duplicates are dropped."""
    res, gts, K = two_drillers
    g = gts[1]
    ys, xs = np.nonzero(g.mask)
    cut = g.mask.copy()
    mid = int(np.median(xs))
    cut[:, mid - 30: mid + 30] = False  # both halves remain, far larger than min_instance_frac
    one = [GroundTruthPose(g.obj_id, g.name, g.R, g.t, mask=cut), gts[2]]  # the other copy left out
    poses = oracle.predict(_frame(res, one, K))
    assert [p.name for p in poses].count("driller_like") == 1
    p = next(p for p in poses if p.name == "driller_like")
    # ICP on the cut cloud lands 2.0-8.5 mm off (ADD) depending on which points the depth stage thins the cloud
    # to (five hash salts of core.point_sampling, measured): well within a right pose (0.1 d = 25 mm)
    assert add(p.R, p.t, g.R, g.t, catalogue["driller_like"].eval_points(500)) < 0.012
