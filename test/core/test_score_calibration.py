"""Score calibration: the logistic fit, its application to poses, its features and its file beside a checkpoint."""
import json
import logging

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.score_calibration import (
    Context,
    LogisticModel,
    ScoreCalibration,
    feature_names,
    features,
    fingerprint,
    fit_logistic,
    load_calibration,
    save_calibration,
)
from vfm_pose_ros.core.types import ObjectPose
from vfm_pose_ros.paths import default_catalogue_dir


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def test_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=20000), rng.uniform(size=20000), np.ones(20000)])
    p = 1 / (1 + np.exp(-(2.0 * X[:, 0] - 3.0 * X[:, 1] + 0.5)))
    y = (rng.uniform(size=len(p)) < p).astype(int)
    m = fit_logistic(X, y, ["a", "b", "const"], l2=1e-4)
    np.testing.assert_allclose(m.weights[:2], [2.0, -3.0], atol=0.15)
    assert m.weights[2] == 0.0  # a constant feature carries no evidence
    assert abs(m.bias - 0.5) < 0.15


def test_fit_refuses_one_class():
    with pytest.raises(ValueError, match="right and wrong"):
        fit_logistic(np.zeros((5, 1)), np.zeros(5), ["a"])


def _pose(score, fitness=None):
    return ObjectPose(name="driller_like", R=np.eye(3), t=np.array([0.0, 0.0, 0.8]), score=score, icp_fitness=fitness)


def test_apply_picks_the_input_model_and_keeps_the_raw_score(catalogue):
    cal = ScoreCalibration("dinov2", "x", {
        "rgb": LogisticModel(("score_logit",), (1.0,), 0.0),
        "rgbd": LogisticModel(("icp_fitness",), (10.0,), -5.0)})
    rgb, rgbd = [_pose(0.2)], [_pose(0.2, fitness=0.9)]
    cal.apply(rgb, Context(catalogue))
    cal.apply(rgbd, Context(catalogue, np.eye(3), np.zeros((4, 4))))
    assert rgb[0].raw_score == pytest.approx(0.2) and rgb[0].score == pytest.approx(0.2)  # logit then sigmoid
    assert rgbd[0].score == pytest.approx(1 / (1 + np.exp(-4.0)))
    cal.apply(rgbd, Context(catalogue, np.eye(3), np.zeros((4, 4))))  # already calibrated: left alone
    assert rgbd[0].score == pytest.approx(1 / (1 + np.exp(-4.0))) and rgbd[0].raw_score == pytest.approx(0.2)
    stranger = [ObjectPose(name="sprocket", R=np.eye(3), t=np.array([0.0, 0.0, 0.8]), score=0.2)]
    cal.apply(stranger, Context(catalogue))  # not in the catalogue: the selection drops and counts it
    assert stranger[0].score == 0.2 and stranger[0].raw_score is None


def test_box_and_depth_features_tell_a_right_pose_from_a_displaced_one(catalogue):
    """At the true pose the model's projection fills the detected box and meets the depth; 0.3 m behind it,
    neither holds; 0.1 m in front of it, the model would hide what the camera measured."""
    from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator

    sf = SceneGenerator(list(catalogue), SceneConfig(), seed=2).frame(0)
    g = sf.gts[0]
    obj = catalogue[g.name]
    pts = obj.vertices @ g.R.T + g.t
    uv = pts @ sf.K.T
    uv = uv[:, :2] / uv[:, 2:]
    box = np.array([*uv.min(0), *uv.max(0)])
    right = ObjectPose(name=g.name, R=g.R, t=g.t, box_2d=box)
    behind = ObjectPose(name=g.name, R=g.R, t=g.t * (1 + 0.3 / np.linalg.norm(g.t)), box_2d=box)
    in_front = ObjectPose(name=g.name, R=g.R, t=g.t * (1 - 0.1 / np.linalg.norm(g.t)), box_2d=box)
    ctx = Context(catalogue, sf.K, sf.depth.astype(np.float32))
    names = ["box_iou", "depth_inliers", "free_space_violations"]
    (b_right, d_right, v_right), (b_behind, d_behind, v_behind), (_, _, v_front) = features(
        [right, behind, in_front], names, ctx)
    assert b_right > 0.95 and b_behind < 0.8
    assert d_right > 0.25 and d_behind < 0.05
    # in front of the measured surface: the camera would have seen the model there (behind is occlusion-like)
    assert v_right < 0.1 and v_behind < 0.1 and v_front > 0.5  # (silhouette pixels: a few per cent)


@pytest.mark.parametrize("k", [0, 1])  # the can, the driller (it hides part of itself: the handle)
def test_visible_surface_features_see_through_occlusion(catalogue, k):
    """An instance the scene hides in part (about 30 % of its pixels): at the right pose the model's surface
    not hidden agrees with the depth, the hidden share is the scene's, and the box of the samples not hidden is
    the visible mask's box (what a detector sees); 0.1 m in front, the model stands before the measured surface;
    0.3 m behind, it is all hidden and agrees nowhere."""
    from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator

    sf = SceneGenerator(list(catalogue), SceneConfig(), seed=2).frame(0)
    g = sf.gts[k]
    hidden_truth = 1.0 - sf.masks_visib[k].sum() / sf.masks_full[k].sum()
    assert 0.2 < hidden_truth < 0.5  # the premise: a partly hidden instance
    ys, xs = np.nonzero(sf.masks_visib[k])
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
    right = ObjectPose(name=g.name, R=g.R, t=g.t, box_2d=box)
    behind = ObjectPose(name=g.name, R=g.R, t=g.t * (1 + 0.3 / np.linalg.norm(g.t)), box_2d=box)
    in_front = ObjectPose(name=g.name, R=g.R, t=g.t * (1 - 0.1 / np.linalg.norm(g.t)), box_2d=box)
    names = ["visible_agreement", "visible_hidden", "visible_in_front", "visible_box_iou", "box_iou"]
    ctx = Context(catalogue, sf.K, sf.depth.astype(np.float32))
    (a_r, h_r, f_r, vb_r, b_r), (a_b, h_b, *_), (a_f, _, f_f, *_) = features([right, behind, in_front], names, ctx)
    assert a_r > 0.95 and f_r < 0.05 and abs(h_r - hidden_truth) < 0.1
    assert vb_r > 0.85
    if k == 0:  # the can is hidden at its edge: the whole model's projected box is larger than what is seen
        assert vb_r > b_r + 0.1
    assert h_b > 0.9 and a_b < 0.1
    assert f_f > 0.5 and a_f < 0.5


def test_feature_sets_per_backend_and_input():
    assert "icp_fitness" in feature_names("dinov2", "rgbd") and "icp_fitness" not in feature_names("dinov2", "rgb")
    assert "clip_logit" in feature_names("hybrid", "rgb") and "score_logit" not in feature_names("hybrid", "rgb")


def test_sidecar_round_trip_and_stale_fingerprint(tmp_path, caplog):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights v1")
    cal = ScoreCalibration("clip", fingerprint([ckpt]), {"rgb": LogisticModel(("score_logit",), (2.0,), -1.0)},
                           {"poses": 3})
    path = save_calibration(cal, ckpt)
    assert path.name == "m.pt.calibration.json"
    assert load_calibration(ckpt, [ckpt]) == cal
    ckpt.write_bytes(b"weights v2")  # retrained in place: the old calibration must not be applied
    with caplog.at_level(logging.WARNING):
        assert load_calibration(ckpt, [ckpt]) is None
    assert "fitted for other weights" in caplog.text
    d = json.loads(path.read_text())
    d["models"]["rgb"]["features"] = ["no_such_feature"]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="vfm-pose calibrate"):
        load_calibration(ckpt, [ckpt])
