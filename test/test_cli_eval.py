"""`vfm-pose eval` end to end: a BOP dataset written by BopWriter, results with known errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vfm_pose_ros import cli
from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel, Symmetry
from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.types import GroundTruthPose
from vfm_pose_ros.data.bop import BopDataset, BopResult, BopWriter, write_models_info, write_results_csv

CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)]) * 0.04
CUBE_FACES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]) * 0.03
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])
AXIS = np.array([1.0, 2.0, 2.0]) / 3.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bop") / "tiny"
    quarter = np.eye(4)
    quarter[:3, :3] = axis_angle_to_matrix([0, 0, math.pi / 2])
    cat = Catalogue([ObjectModel("cube", 1, CUBE, faces=CUBE_FACES, symmetry=Symmetry("discrete", [quarter])),
                     ObjectModel("tetra", 2, TETRA, faces=TETRA_FACES)])
    rng = np.random.default_rng(1)
    with BopWriter(root, "test", K_default=K) as w:
        for scene in (0, 1):
            for im in range(3):
                gts = []
                for obj_id, name in ((1, "cube"), (2, "tetra")):
                    t = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.6, 1.2)])
                    R = axis_angle_to_matrix(rng.normal(size=3))
                    gts.append(GroundTruthPose(obj_id, name, R, t, visib_fract=float(rng.uniform(0.3, 1.0))))
                if scene == 1 and im == 2:  # a second, barely visible tetra: not a BOP 2019 target
                    gts.append(GroundTruthPose(2, "tetra", np.eye(3), np.array([0.0, 0.0, 1.5]), visib_fract=0.05))
                w.add_frame(scene, im, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), None, None, gts)
    write_models_info(root / "models", cat)
    return root


def gt_results(root, R_fn=lambda R: R, t_fn=lambda t: t, drop=0):
    ds = BopDataset(root, "test")
    out = []
    for f in ds.iter_frames(load_images=False):
        for g in f.gts:
            out.append(BopResult(f.scene_id, f.im_id, g.obj_id, 1.0, R_fn(g.R), t_fn(g.t), 0.05))
    return out[drop:]


def run_eval(root, results, tmp_path, *extra):
    csv_path = write_results_csv(tmp_path / "results.csv", results)
    out = tmp_path / "report.json"
    rc = cli.main(["eval", "--dataset", str(root), "--results", str(csv_path), "--out", str(out), "--quiet", *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_ground_truth_results_score_perfectly(dataset, tmp_path, capsys):
    rep = run_eval(dataset, gt_results(dataset), tmp_path, "--instances-csv", str(tmp_path / "inst.csv"))
    o = rep["overall"]
    # --targets auto: the dataset's test_targets_bop19.json leaves out the 5 %-visible tetra
    assert o["n_gt"] == o["n_predicted"] == 12 and rep["dataset"]["targets"]
    for key in ("add_mean_mm", "adds_mean_mm", "add_median_mm", "adds_median_mm", "rot_err_mean_deg",
                "rot_err_median_deg", "trans_err_mean_mm", "trans_err_median_mm"):
        assert o[key] == pytest.approx(0.0, abs=1e-4), key
    for key in ("add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "auc_add", "auc_adds", "acc_5cm5deg",
                "mssd_recall", "mspd_recall"):
        assert o[key] == pytest.approx(1.0), key
    assert set(rep["objects"]) == {"cube", "tetra"}
    assert rep["objects"]["tetra"]["n_gt"] == 6
    assert rep["dataset"]["mean_time_per_image_s"] == pytest.approx(0.05)
    assert o["bop19_average_time_per_image"] == pytest.approx(0.05)
    printed = capsys.readouterr().out
    assert "overall" in printed and "cube" in printed and "12 ground-truth instances" in printed
    assert len((tmp_path / "inst.csv").read_text().splitlines()) == 13
    rep = run_eval(dataset, gt_results(dataset), tmp_path, "--targets", "none")  # all ground truth
    assert rep["overall"]["n_gt"] == 13 and rep["objects"]["tetra"]["n_gt"] == 7 and not rep["dataset"]["targets"]


def test_ten_degrees_about_a_fixed_axis(dataset, tmp_path):
    Rp = axis_angle_to_matrix(AXIS * math.radians(10.0))
    rep = run_eval(dataset, gt_results(dataset, R_fn=lambda R: Rp @ R), tmp_path)
    for name in ("cube", "tetra", None):
        o = rep["overall"] if name is None else rep["objects"][name]
        assert o["rot_err_mean_deg"] == pytest.approx(10.0, abs=1e-5)
        assert o["rot_err_median_deg"] == pytest.approx(10.0, abs=1e-5)
        assert o["trans_err_mean_mm"] == pytest.approx(0.0, abs=1e-4)
        assert o["acc_5cm5deg"] == 0.0


def test_twenty_millimetres_along_x(dataset, tmp_path):
    rep = run_eval(dataset, gt_results(dataset, t_fn=lambda t: t + [0.02, 0.0, 0.0]), tmp_path)
    o = rep["overall"]
    assert o["trans_err_mean_mm"] == pytest.approx(20.0, abs=1e-4)
    assert o["trans_err_median_mm"] == pytest.approx(20.0, abs=1e-4)
    assert o["add_mean_mm"] == pytest.approx(20.0, abs=1e-4)  # a pure shift moves every point 20 mm
    assert o["rot_err_mean_deg"] == pytest.approx(0.0, abs=1e-5)
    assert o["acc_5cm5deg"] == 1.0
    # 0.1 d: cube 0.1 * 80 sqrt3 = 13.9 mm < 20 mm, tetra 0.1 * 30 sqrt13 = 10.8 mm: all fail.
    assert o["add_01d_acc"] == 0.0
    # MSSD is the 20 mm shift. Cube: 0.15 d = 20.8 mm > 20 -> thresholds 0.15..0.50 pass, 8/10.
    # Tetra: 0.15 d = 16.2 mm < 20 < 0.2 d = 21.6 mm -> 0.20..0.50 pass, 7/10.
    assert rep["objects"]["cube"]["mssd_recall"] == pytest.approx(0.8)
    assert rep["objects"]["tetra"]["mssd_recall"] == pytest.approx(0.7)
    # MSPD: about 11 px at 1 m in a 64 px wide image counts 10 times (640 / 64): above every threshold.
    assert o["mspd_recall"] == 0.0


def test_missing_results_count_as_failures_and_bop19_targets(dataset, tmp_path):
    rep = run_eval(dataset, gt_results(dataset, drop=1), tmp_path)  # the first cube has no result
    c = rep["objects"]["cube"]
    assert (c["n_gt"], c["n_predicted"]) == (6, 5)
    assert c["add_s_01d_acc"] == pytest.approx(5 / 6) and c["mssd_recall"] == pytest.approx(5 / 6)
    assert c["add_mean_mm"] == pytest.approx(0.0, abs=1e-4)
    # BOP 2019 targets leave out the 5 %-visible tetra (its result then counts as a false positive).
    rep = run_eval(dataset, gt_results(dataset), tmp_path, "--targets", "bop19")
    assert rep["overall"]["n_gt"] == 12 and rep["overall"]["add_s_01d_acc"] == 1.0
    assert rep["objects"]["tetra"]["n_false_positives"] == 1


def test_invalid_rows_are_counted_apart_and_never_scored(dataset, tmp_path, capsys):
    """NaN, a scaled matrix (2 I) and a reflection are not poses: counted as invalid, their instances missed."""
    res = gt_results(dataset)
    res[0].R = res[0].R * 2.0
    res[1].R = res[1].R @ np.diag([1.0, 1.0, -1.0])
    res[2].t = np.array([np.nan, 0.0, 1.0])
    rep = run_eval(dataset, res, tmp_path)
    assert rep["dataset"]["n_results_invalid"] == 3
    assert rep["dataset"]["n_results_scored"] == len(res) - 3
    assert rep["overall"]["n_predicted"] == rep["overall"]["n_gt"] - 3
    assert "3 invalid" in capsys.readouterr().out
    res = gt_results(dataset)  # a rotation written with 4 decimals, as results files hold them, is still one
    res[0].R = np.round(res[0].R, 4)
    assert run_eval(dataset, res, tmp_path)["dataset"]["n_results_invalid"] == 0


def test_bad_input_is_reported(dataset, tmp_path, capsys):
    assert cli.main(["eval", "--dataset", str(tmp_path / "nope"), "--results", "x.csv"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert cli.main(["eval", "--dataset", str(dataset), "--results", str(tmp_path / "none.csv")]) == 2
    assert "results file not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def depth_dataset(tmp_path_factory):
    """The cube and the tetrahedron rendered with depth (160 x 120): what VSD, and so BOP AR, needs."""
    from vfm_pose_ros.data.render import Renderer

    root = tmp_path_factory.mktemp("bop_depth") / "tiny"
    cat = Catalogue([ObjectModel("cube", 1, CUBE, faces=CUBE_FACES), ObjectModel("tetra", 2, TETRA, faces=TETRA_FACES)])
    Ks = K * np.array([[0.25], [0.25], [1.0]])
    ren = Renderer(160, 120, K=Ks)
    rng = np.random.default_rng(2)
    with BopWriter(root, "test", K_default=Ks) as w:
        for im in range(4):
            gts = [GroundTruthPose(o.class_id, o.name, axis_angle_to_matrix(rng.normal(size=3)),
                                   np.array([(-0.06, 0.06)[i], 0.0, rng.uniform(0.5, 0.7)])) for i, o in enumerate(cat)]
            out = ren.render([(cat[g.name], g.R, g.t) for g in gts])
            for g, f in zip(gts, out.visib_fract):
                g.visib_fract = f
            w.add_frame(0, im, out.rgb, out.depth, None, gts)
    write_models_info(root / "models", cat)
    return root


def test_bop_average_recall_with_depth(depth_dataset, tmp_path, capsys):
    rep = run_eval(depth_dataset, gt_results(depth_dataset), tmp_path)
    o = rep["overall"]
    for key in ("bop19_average_recall", "bop19_average_recall_vsd", "bop19_average_recall_mssd",
                "bop19_average_recall_mspd"):
        assert o[key] == 1.0, key
        assert rep["objects"]["cube"][key] == rep["objects"]["tetra"][key] == 1.0, key
    assert o["bop19_average_time_per_image"] == pytest.approx(0.05) and o["bop19_unavailable_reason"] is None
    assert "BOP AR 1.000 (VSD 1.000, MSSD 1.000, MSPD 1.000)" in capsys.readouterr().out
    # 1 m off: every recall 0 (and VSD 1 without rendering: the sphere projections do not overlap)
    rep = run_eval(depth_dataset, gt_results(depth_dataset, t_fn=lambda t: t + [1.0, 0.0, 0.0]), tmp_path)
    assert rep["overall"]["bop19_average_recall"] == 0.0 and rep["overall"]["bop19_average_recall_vsd"] == 0.0
    # --no-vsd: not available, never 0
    rep = run_eval(depth_dataset, gt_results(depth_dataset), tmp_path, "--no-vsd")
    assert rep["overall"]["bop19_average_recall"] is None and rep["overall"]["bop19_average_recall_vsd"] is None
    assert rep["overall"]["bop19_average_recall_mssd"] == 1.0
    assert "BOP AR not available: VSD" in capsys.readouterr().out


def test_without_depth_bop_ar_is_not_available(dataset, tmp_path, capsys):
    rep = run_eval(dataset, gt_results(dataset), tmp_path)
    o = rep["overall"]
    assert o["bop19_average_recall"] is None and o["bop19_average_recall_vsd"] is None
    assert "no depth image" in o["bop19_unavailable_reason"]
    assert o["bop19_average_recall_mssd"] == 1.0 and o["bop19_average_recall_mspd"] == 1.0
    assert "BOP AR not available" in capsys.readouterr().out
