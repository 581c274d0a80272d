"""`vfm-pose calibrate` end to end, and a calibration beside a checkpoint applied by load_estimator + the pipeline."""
import json

import numpy as np
import pytest

from vfm_pose_ros import cli
from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.score_calibration import LogisticModel, ScoreCalibration, fingerprint, save_calibration
from vfm_pose_ros.core.types import ObjectPose, Prediction
from vfm_pose_ros.paths import default_catalogue_dir


class KnowingEstimator:
    """Knows the calibration frames' ground truth (by image): poses the first object right with score 0.9 and
    the others 8 cm off with score 0.5, and puts a pose on every empty frame with score 0.6."""

    backend = "dinov2"
    score_calibration = "not reset"

    def __init__(self, catalogue, frames, seed, path):
        from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator

        self.catalogue, self.source_files = catalogue, [path]
        gen = SceneGenerator(list(catalogue), SceneConfig(), seed=seed)
        self.truth = {gen.frame(i).rgb.tobytes(): gen.frame(i).gts for i in range(frames)}

    def predict(self, frame):
        gts = self.truth.get(frame.rgb.tobytes())
        if gts is None:
            return Prediction([ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 0.8]), score=0.6)])
        return Prediction([ObjectPose(g.name, g.R, g.t + (0 if k == 0 else np.array([0.08, 0, 0])),
                                      score=0.9 if k == 0 else 0.5) for k, g in enumerate(gts)])


def test_calibrate_fits_writes_and_plots(tmp_path, monkeypatch, capsys):
    import vfm_pose_ros.models as models

    catalogue = Catalogue.from_dir(default_catalogue_dir())
    ckpt = tmp_path / "knowing.pt"
    ckpt.write_bytes(b"stand-in weights")
    est = KnowingEstimator(catalogue, 12, 5, ckpt)
    monkeypatch.setattr(models, "load_estimator", lambda *a, **k: est)
    assert cli.main(["calibrate", "--checkpoint", str(ckpt), "--frames", "12", "--quiet"]) == 0
    side = json.loads((tmp_path / "knowing.pt.calibration.json").read_text())
    assert (tmp_path / "knowing.pt.calibration.png").stat().st_size > 10_000
    assert side["fingerprint"] == fingerprint([ckpt]) and set(side["models"]) == {"rgbd", "rgb"}
    assert side["fitted_on"]["rgbd"]["right"] >= 10  # one right pose per frame with objects
    model = LogisticModel(tuple(side["models"]["rgbd"]["features"]), tuple(side["models"]["rgbd"]["weights"]),
                          side["models"]["rgbd"]["bias"])
    w = dict(zip(model.names, model.weights))
    assert w["score_logit"] > 0  # the scores ranked right above wrong
    assert side["fitted_on"]["rgbd"]["brier_calibrated"] < side["fitted_on"]["rgbd"]["brier_raw"]
    assert "Brier score raw" in capsys.readouterr().out


def test_an_estimator_never_right_scores_its_base_rate(tmp_path, monkeypatch, capsys):
    """Every pose wrong (as RGB-only poses are today): no feature can be weighed, so every pose scores the
    smoothed base rate instead of keeping a raw score that means nothing."""
    import vfm_pose_ros.models as models

    catalogue = Catalogue.from_dir(default_catalogue_dir())
    ckpt = tmp_path / "wrong.pt"
    ckpt.write_bytes(b"stand-in weights")
    est = KnowingEstimator(catalogue, 0, 5, ckpt)  # knows no frame: one wrong pose on every frame
    monkeypatch.setattr(models, "load_estimator", lambda *a, **k: est)
    assert cli.main(["calibrate", "--checkpoint", str(ckpt), "--frames", "10", "--quiet"]) == 0
    side = json.loads((tmp_path / "wrong.pt.calibration.json").read_text())
    for mode in ("rgbd", "rgb"):
        m = side["models"][mode]
        assert m["features"] == [] and side["fitted_on"][mode]["right"] == 0
        n = side["fitted_on"][mode]["poses"]
        assert n > 0 and 1 / (1 + np.exp(-m["bias"])) == pytest.approx(0.5 / (n + 1))
    assert "nothing tells right from wrong" in capsys.readouterr().out


def test_load_estimator_applies_the_calibration_beside_the_checkpoint(tiny_clip_checkpoint, tmp_path):
    import shutil

    from vfm_pose_ros.models import load_estimator
    from vfm_pose_ros.pipeline import CameraFrame, FramePipeline

    ckpt = tmp_path / "tiny.pt"
    shutil.copy(tiny_clip_checkpoint, ckpt)
    assert load_estimator(str(ckpt), device="cpu").score_calibration is None
    cal = ScoreCalibration("clip", fingerprint([ckpt]), {"rgb": LogisticModel(("score_logit",), (0.0,), 2.0)})
    save_calibration(cal, ckpt)
    est = load_estimator(str(ckpt), device="cpu")
    assert est.score_calibration == cal
    rng = np.random.default_rng(0)
    result = FramePipeline(est).process(CameraFrame(rgb=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
                                                    K=np.array([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]])))
    assert result.poses, "the tiny random CLIP finds something in noise at threshold 0"
    for p in result.poses:
        assert p.score == pytest.approx(1 / (1 + np.exp(-2.0))) and p.raw_score is not None
    from vfm_pose_ros.models import _calibration

    # other backbone weights than the checkpoint's own (weights:=...): the calibration does not hold for them
    assert _calibration(est, ckpt, {"weights": "vit_b.safetensors"}) is None
    assert _calibration(est, ckpt, {"dinov2_weights": "vit_b.safetensors"}) is None
