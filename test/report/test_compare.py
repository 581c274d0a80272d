"""The comparison report's logic: files and keys, and that its numbers are the evaluator's on the written results.

Estimators here are fakes returning the ground truth perturbed (a fixed noise level per backend),
so the report logic is tested apart from any model; test/test_cli_compare.py runs real ones.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.metrics import PoseEvaluator
from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose, Prediction
from vfm_pose_ros.paths import default_catalogue_dir
from vfm_pose_ros.report import compare as C

pytest.importorskip("cv2")
pytest.importorskip("trimesh")

N_FRAMES = 4


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.from_dir(default_catalogue_dir())


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, catalogue):
    """A 4-frame synthetic BOP test split (160x120) of the default objects, with models/."""
    from vfm_pose_ros.data.bop import write_models_info
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator, write_split

    root = tmp_path_factory.mktemp("tiny_bop")
    K = LMO_K.copy()
    K[:2] *= 0.25
    gen = SceneGenerator(list(catalogue), SceneConfig(width=160, height=120, K=K, distance=(0.6, 0.9), distractors=0),
                         seed=7)
    write_split(gen, root, "test", frames=N_FRAMES, stream=1, progress=False)
    write_models_info(root / "models", catalogue)
    return root


class FakeEstimator:
    """Returns the ground truth of the frame (found by image hash), rotated and shifted by a seeded noise.

    ``miss`` drops that object's pose (a missed detection) on every other frame.
    """

    def __init__(self, backend, catalogue, gts_by_image, noise_deg, noise_m, seed, miss=None):
        self.backend, self.catalogue, self.gts = backend, catalogue, gts_by_image
        self.noise_deg, self.noise_m, self.miss = noise_deg, noise_m, miss
        self.rng = np.random.default_rng(seed)
        self.device, self.precision, self.config = "cpu", "fp32", {"fake": True, "noise_deg": noise_deg}
        self.calls = 0

    def predict(self, frame):
        self.calls += 1
        gts = self.gts[hashlib.sha1(frame.rgb.tobytes()).hexdigest()]
        out = []
        for k, g in enumerate(gts):
            if self.miss == g.name and self.calls % 2 == 0:
                continue
            dR = axis_angle_to_matrix(np.radians(self.noise_deg) * self.rng.normal(size=3) / np.sqrt(3))
            out.append(ObjectPose(g.name, dR @ g.R, g.t + self.rng.normal(0, self.noise_m, 3),
                                  score=0.9 - 0.1 * k, timings_ms={"backbone": 5.0, "total": 7.0}))
        return Prediction(out, {"backbone": 5.0, "total": 7.0})


def _fakes(dataset_root, catalogue):
    from vfm_pose_ros.data.bop import BopDataset

    gts = {}
    for sf in BopDataset(dataset_root, "test"):
        gts[hashlib.sha1(sf.rgb.tobytes()).hexdigest()] = C.rename_gts(sf.gts, catalogue)
    return {"clip": FakeEstimator("clip", catalogue, gts, 15.0, 0.02, 1, miss="can_like"),
            "dinov2": FakeEstimator("dinov2", catalogue, gts, 3.0, 0.004, 2)}


def _args(dataset, out, *extra):
    """The command's own parser, so the test follows its options."""
    from vfm_pose_ros.commands import compare as cmd

    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    return parser.parse_args(["--dataset", str(dataset), "--out", str(out), "--device", "cpu", "--figure-frames", "2",
                              "--renderer", "matplotlib", "--quiet", *extra])


@pytest.fixture(scope="module")
def dataset_run(tmp_path_factory, tiny_dataset, catalogue):
    """`vfm-pose compare --dataset` logic with fake estimators: (out folder, results.json)."""
    import vfm_pose_ros.models as models
    from vfm_pose_ros.commands import compare as cmd

    fakes = _fakes(tiny_dataset, catalogue)
    out = tmp_path_factory.mktemp("compare_out")
    mp = pytest.MonkeyPatch()
    mp.setattr(models, "load_estimator", lambda ckpt, device="auto", backend=None, **kw: fakes[backend])
    try:
        doc = cmd.run_dataset(_args(tiny_dataset, out), ["clip", "dinov2"],
                              {"clip": out / "clip.pt", "dinov2": out / "dinov2.pt"})
    finally:
        mp.undo()
    return out, doc


def test_report_files_and_keys(dataset_run, catalogue):
    out, doc = dataset_run
    for name in ("results.json", "table.csv", "report.md", "report.html", "targets.json",
                 "results_clip.csv", "results_dinov2.csv"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(doc["table"]))
    assert set(saved["backends"]) == {"clip", "dinov2"}
    metric_keys = {"n_gt", "n_predicted", "add_mean_mm", "adds_mean_mm", "add_median_mm", "adds_median_mm",
                   "rot_err_mean_deg", "rot_err_median_deg", "trans_err_mean_mm", "trans_err_median_mm",
                   "add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "auc_add", "auc_adds", "acc_5cm5deg",
                   "mssd_recall", "mspd_recall"}
    for entry in saved["backends"].values():
        assert set(entry["report"]["objects"]) == set(catalogue.names)
        for vals in list(entry["report"]["objects"].values()) + [entry["report"]["overall"]]:
            assert metric_keys <= set(vals)
        lat = entry["latency"]
        assert lat["n_frames"] == N_FRAMES and lat["latency_p95_ms"] >= lat["latency_median_ms"] > 0
        stages = lat["stages_mean_ms"]  # the estimator's own, and the pipeline's around it
        assert lat["throughput_fps"] > 0 and {"backbone": 5.0, "total": 7.0}.items() <= stages.items()
        assert set(stages) == {"backbone", "total", "validate", "select"}
    # the fake CLIP misses the can on every other call: fewer predictions, and it shows in the table
    clip_can = saved["backends"]["clip"]["report"]["objects"]["can_like"]
    assert clip_can["n_predicted"] < clip_can["n_gt"] == N_FRAMES
    # the noisier fake is worse: the comparison points the right way
    ov = {b: saved["backends"][b]["report"]["overall"] for b in ("clip", "dinov2")}
    assert ov["dinov2"]["add_mean_mm"] < ov["clip"]["add_mean_mm"]
    assert ov["dinov2"]["rot_err_mean_deg"] < ov["clip"]["rot_err_mean_deg"]

    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == C.TABLE_COLUMNS
    assert {(r["backend"], r["object"]) for r in rows} == {(b, o) for b in ("clip", "dinov2")
                                                           for o in catalogue.names + [C.ALL]}
    md = (out / "report.md").read_text()
    assert set(saved["figures"]) == {"panel_clip", "panel_dinov2", "pointcloud", "multi_object", "errors"}
    for f in saved["figures"].values():
        assert f"]({f})" in md and (out / f).stat().st_size > 10_000
    assert "Table 1" in md and "## Reading" in md and saved["reading"] in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="fig_errors.png"' in html
    assert saved["pointcloud_renderer"] == "matplotlib"
    assert saved["timings_s"]["report_total"] > 0


def test_numbers_equal_evaluator_on_written_results(dataset_run, tiny_dataset):
    """results.json is the core evaluator's report on results_<backend>.csv read back (what `vfm-pose eval` runs)."""
    from vfm_pose_ros.data.bop import BopDataset, read_results_csv
    from vfm_pose_ros.data.evaluation import evaluate, resolve_catalogue

    out, doc = dataset_run
    saved = json.loads((out / "results.json").read_text())
    ds = BopDataset(tiny_dataset, "test", targets=out / "targets.json")
    assert len(ds) == N_FRAMES
    cat = resolve_catalogue(ds)
    for b in ("clip", "dinov2"):
        rep = evaluate(ds, read_results_csv(out / f"results_{b}.csv"), cat, progress=False)
        rep = json.loads(json.dumps(C._jsonable(rep)))
        assert saved["backends"][b]["report"]["objects"] == rep["objects"]
        assert saved["backends"][b]["report"]["overall"] == rep["overall"]
        for row in saved["table"]:
            if row["backend"] == b:
                src = rep["overall"] if row["object"] == C.ALL else rep["objects"][row["object"]]
                assert all(row[k] == src[k] for k in C.METRIC_COLUMNS)


def test_eval_command_gives_the_same_numbers(dataset_run, tiny_dataset, tmp_path):
    from vfm_pose_ros.cli import main

    out, _ = dataset_run
    saved = json.loads((out / "results.json").read_text())
    for b in ("clip", "dinov2"):
        rc = main(["eval", "--dataset", str(tiny_dataset), "--results", str(out / f"results_{b}.csv"),
                   "--targets", str(out / "targets.json"), "--out", str(tmp_path / f"{b}.json"), "--quiet"])
        assert rc == 0
        rep = json.loads((tmp_path / f"{b}.json").read_text())
        assert saved["backends"][b]["report"]["overall"] == rep["overall"]
        assert saved["backends"][b]["report"]["objects"] == rep["objects"]


def test_compare_in_memory_runs(tmp_path, catalogue):
    """compare() on in-memory frames: scores through PoseEvaluator, latency stats, report files, no images needed."""
    rng = np.random.default_rng(0)
    frames, gt_preds = [], []
    for i in range(5):
        gts = [GroundTruthPose(1, "driller_like", axis_angle_to_matrix(rng.normal(size=3)),
                               np.array([0.0, 0.0, 0.8 + 0.01 * i]))]
        frames.append(C.FrameRecord(0, i, np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]), gts))
        gt_preds.append([ObjectPose(g.name, g.R, g.t + [0.003, 0, 0]) for g in gts])
    runs = {"dinov2": {"predictions": gt_preds, "latency_ms": [10, 20, 30, 40, 50]},
            "clip": {"predictions": [[] for _ in frames], "latency_ms": [5] * 5, "wall_s": 0.5}}
    doc = C.compare(frames, runs, catalogue, tmp_path, settings={"source": "unit test"})
    rep = doc["backends"]["dinov2"]["report"]
    assert rep["overall"]["add_mean_mm"] == pytest.approx(3.0, abs=1e-6)
    assert rep["overall"]["add_s_01d_acc"] == 1.0
    assert doc["backends"]["clip"]["report"]["overall"]["n_predicted"] == 0
    assert doc["backends"]["clip"]["report"]["overall"]["add_s_01d_acc"] == 0.0
    lat = doc["backends"]["dinov2"]["latency"]
    assert lat["latency_mean_ms"] == 30 and lat["latency_p95_ms"] == pytest.approx(48.0)
    assert lat["throughput_fps"] == pytest.approx(5 / 0.15)
    assert doc["backends"]["clip"]["latency"]["throughput_fps"] == pytest.approx(10.0)
    # one object only: no pooled row; no images: only the error figure
    assert [r["object"] for r in doc["table"]] == ["driller_like", "driller_like"]
    assert list(doc["figures"]) == ["errors"]
    assert "dinov2 is the more accurate backend" in doc["reading"]
    assert "clip missed 5 of 5" in doc["reading"]
    # direct evaluator on the same frames gives the same report
    ev = PoseEvaluator(catalogue)
    for fr, p in zip(frames, gt_preds):
        ev.add_frame(fr.gts, p, K=fr.K, image_width=fr.width, scene_id=fr.scene_id, im_id=fr.im_id)
    assert json.loads(json.dumps(C._jsonable(ev.report()["overall"]))) == rep["overall"]
    text = C.format_table(doc)
    assert "dinov2" in text and "clip" in text and "0/5" in text


def test_latency_and_frame_picking():
    s = C.latency_summary([1.0, 2.0, 3.0, float("nan")])
    assert s["n_frames"] == 3 and s["latency_mean_ms"] == 2.0 and s["throughput_fps"] == pytest.approx(500.0)
    assert C.latency_summary([])["latency_mean_ms"] is None
    assert C.pick_figure_frames(10, 3) == [0, 4, 9] or C.pick_figure_frames(10, 3) == [0, 5, 9]
    assert C.pick_figure_frames(2, 5) == [0, 1] and C.pick_figure_frames(0, 3) == []


def test_missing_default_checkpoint_names_train(monkeypatch):
    from vfm_pose_ros.commands import compare as cmd

    def missing(rel):
        raise FileNotFoundError(f"{rel} not found")

    monkeypatch.setattr("vfm_pose_ros.ros.env.find_package_file", missing)
    with pytest.raises(cmd.CompareError, match="vfm-pose train --backend dinov2"):
        cmd.default_checkpoint("dinov2")
    with pytest.raises(cmd.CompareError, match="unknown backend"):
        cmd.parse_backends("clip,sam")
