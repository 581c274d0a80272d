"""Your own objects end to end (issue 23): a BOP models folder made here (a mesh in millimetres, models_info.json
and a sidecar with a name and aliases) -> onboard (synth, train a few steps, predict, eval) -> make-bag -> the
pose node loads the checkpoint and answers a frame. Also: eval --objects leaves the other objects out and says
so, and eval --max-frames takes the frames predict --max-frames takes."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from vfm_pose_ros.cli import main
from vfm_pose_ros.data.bop import BopDataset, BopResult, write_results_csv

from .core.test_catalogue_loader import write_bop_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = write_bop_models(tmp_path_factory.mktemp("mine") / "models", ids=(1, 2))
    (d / "vfm_catalogue.yaml").write_text("objects:\n  1: {name: widget, aliases: [gizmo], description: a box}\n"
                                          "  2: {name: brick}\n")
    return d


def _synth(out, models, *extra):
    assert main(["synth", "--objects-dir", str(models), "--out", str(out), "--width", "160", "--height", "120",
                 "--no-progress", *extra]) == 0


def test_eval_objects_and_max_frames(models, tmp_path, capsys):
    data = tmp_path / "data"
    _synth(data, models, "--split", "test", "--test-frames", "3")
    ds = BopDataset(data, "test")
    results = [BopResult(f.scene_id, f.im_id, g.obj_id, 1.0, g.R, g.t, 0.01) for f in map(
        lambda k: ds.frame(*k, load_images=False), ds.keys()) for g in f.gts]
    assert {r.obj_id for r in results} == {1, 2}
    csv = write_results_csv(tmp_path / "gt.csv", results)
    out = tmp_path / "eval.json"
    base = ["eval", "--dataset", str(data), "--results", str(csv), "--no-vsd", "--quiet", "--out", str(out)]
    assert main(base + ["--objects", "widget", "--max-frames", "2"]) == 0
    rep = json.loads(out.read_text())
    assert "scoring only widget; left out: brick" in capsys.readouterr().out
    assert rep["dataset"]["objects_left_out"] == ["brick"] and rep["n_frames"] == 2
    assert set(rep["objects"]) == {"widget"} and rep["overall"]["add_s_01d_acc"] == 1.0
    assert main(base) == 0 and set(json.loads(out.read_text())["objects"]) == {"widget", "brick"}
    assert main(base + ["--objects", "sprocket"]) == 2
    assert "sprocket" in capsys.readouterr().err


def test_evaluator_node_scorer_scores_only_named_objects(models):
    pytest.importorskip("rclpy", reason="ROS 2 is not installed")
    from vfm_pose_ros.core.catalogue_loader import load_catalogue
    from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose
    from vfm_pose_ros.ros.evaluator_node import Scorer

    cat = load_catalogue(models)
    R, t = np.eye(3), np.array([0.0, 0.0, 0.6])
    s = Scorer(cat, objects=["widget"], max_points=100)
    s.add_ground_truth(1, [GroundTruthPose(obj_id=1, name="widget", R=R, t=t),
                           GroundTruthPose(obj_id=2, name="brick", R=R, t=t + 0.1)])
    s.add_detections(1, [ObjectPose(name="widget", R=R, t=t, score=1.0), ObjectPose(name="brick", R=R, t=t)])
    rep = s.report()
    assert rep["overall"]["n_gt"] == 1 and rep["dataset"]["objects_left_out"] == ["brick"]
    with pytest.raises(ValueError, match="not in the catalogue"):
        Scorer(cat, objects=["sprocket"])


def test_bop_folder_to_a_running_pose_node(models, tmp_path, capsys):
    pytest.importorskip("torch", reason="torch is not installed (requirements/ml.txt)")
    run = tmp_path / "run"
    t0 = time.perf_counter()
    assert main(["onboard", "--objects-dir", str(models), "--objects", "widget", "--frames", "4", "--test-frames",
                 "2", "--max-steps", "2", "--width", "160", "--height", "120", "--no-vsd", "--quiet", "--device",
                 "cpu", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "ETA: about" in out and out.index("ETA") < out.index("[2/6]")  # before the long part
    assert "vfm-pose launch pose checkpoint:=" in out
    report = json.loads((run / "report.json").read_text())
    assert report["objects"] == ["widget"] and report["held_back"]["n_gt"] == 2
    assert [c.split()[1] for c in report["commands"]] == ["synth", "synth", "train", "calibrate", "predict", "eval"]
    bag = tmp_path / "bag"
    assert main(["make-bag", "--dataset", str(run / "data"), "--objects-dir", str(models), "--out", str(bag),
                 "--quiet"]) == 0
    assert bag.is_dir()
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
    answer = _pose_node_answers(run / "dinov2.pt", models, BopDataset(run / "data", "test"))
    assert answer.header.frame_id == "cam" and all(d.results[0].hypothesis.class_id == "widget"
                                                   for d in answer.detections)
    print(f"end to end in {time.perf_counter() - t0:.1f} s")


def _pose_node_answers(checkpoint, catalogue_dir, dataset):
    """The pose node (in this process) loads the checkpoint and the BOP folder as its catalogue and answers one
    frame of the held-back split; returns the Detection3DArray it published."""
    import rclpy
    from rclpy.parameter import Parameter

    from vfm_pose_ros.ros import convert
    from vfm_pose_ros.ros.pose_node import PoseNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = PoseNode(context=ctx, parameter_overrides=[
            Parameter("checkpoint", value=str(checkpoint)), Parameter("backend", value="dinov2"),
            Parameter("device", value="cpu"), Parameter("catalogue_dir", value=str(catalogue_dir))])
        try:
            assert node.catalogue.names == ["widget", "brick"] and node.catalogue["widget"].aliases == ["gizmo"]
            frame = dataset.frame(*dataset.keys()[0])
            header = convert.make_header(1_000_000, "cam")
            node._camera_info = convert.K_to_camera_info(frame.K, frame.width, frame.height, header)
            node._info_event.set()
            published = []
            node.pub_det.publish = published.append
            node._process(convert.rgb_to_image(frame.rgb, header),
                          convert.depth_to_image(frame.depth.astype(np.float32), header), time.monotonic())
            assert len(published) == 1
            return published[0]
        finally:
            node.stop()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
