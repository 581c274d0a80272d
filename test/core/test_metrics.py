"""Every metric against values worked out by hand on a cube and an asymmetric tetrahedron."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from vfm_pose_ros.core import metrics as M
from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel, Symmetry
from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose
from vfm_pose_ros.report.tables import format_report

# Corners of a cube of side 2 centred at the origin, and a tetrahedron with no symmetry.
CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
I3, ZERO = np.eye(3), np.zeros(3)


def rot_z(deg: float) -> np.ndarray:
    return axis_angle_to_matrix([0.0, 0.0, math.radians(deg)])


def z_quarter_turns() -> list[np.ndarray]:
    """The cube's discrete symmetries about z (identity excluded, as in BOP's models_info)."""
    out = []
    for deg in (90, 180, 270):
        T = np.eye(4)
        T[:3, :3] = rot_z(deg)
        out.append(T)
    return out


# ------------------------------------------------------------------ per-instance errors


def test_pure_translation():
    t = np.array([0.02, 0.0, 0.0])  # 20 mm along x
    assert M.add(I3, t, I3, ZERO, TETRA) == pytest.approx(0.02)
    assert M.te(t, ZERO) == pytest.approx(0.02)
    assert M.re(I3, I3) == pytest.approx(0.0, abs=1e-9)
    assert M.mssd(I3, t, I3, ZERO, TETRA, None) == pytest.approx(0.02)


def test_rotation_error_is_exact():
    for deg in (1.0, 10.0, 45.0, 170.0):
        R_gt = axis_angle_to_matrix([0.1, 0.2, -0.3])
        R_est = R_gt @ axis_angle_to_matrix(np.array([2.0, -1.0, 2.0]) / 3.0 * math.radians(deg))
        assert M.re(R_est, R_gt) == pytest.approx(deg, abs=1e-6)


def test_add_of_a_rotation_about_z():
    # A point at distance r from the axis moves 2 r sin(theta / 2): r = 0, 1, 2, 0 for the tetrahedron.
    assert M.add(rot_z(90), ZERO, I3, ZERO, TETRA) == pytest.approx((1 + 2) / 4 * 2 * math.sin(math.radians(45)))


def test_adi_by_hand():
    # Tetrahedron shifted by 1 along x: nearest estimated vertex of (0,0,0), (1,0,0), (0,2,0), (0,0,3)
    # is 1, 0, 1, 1 away -> ADD-S = 0.75, while ADD = 1.
    t = np.array([1.0, 0.0, 0.0])
    assert M.adi(I3, t, I3, ZERO, TETRA) == pytest.approx(0.75)
    assert M.add(I3, t, I3, ZERO, TETRA) == pytest.approx(1.0)
    assert M.add_s(I3, t, I3, ZERO, TETRA, symmetric=True) == pytest.approx(0.75)
    assert M.add_s(I3, t, I3, ZERO, TETRA, symmetric=False) == pytest.approx(1.0)


def test_cube_quarter_turn_adds_zero_add_two():
    # Every corner lands on another corner: ADD-S = 0; each corner (r = sqrt 2) moves 2 sqrt2 sin 45 = 2.
    assert M.adi(rot_z(90), ZERO, I3, ZERO, CUBE) == pytest.approx(0.0, abs=1e-12)
    assert M.add(rot_z(90), ZERO, I3, ZERO, CUBE) == pytest.approx(2.0)
    assert M.re(rot_z(90), I3) == pytest.approx(90.0)


def test_mssd_uses_the_best_symmetry():
    syms = M.symmetry_transformations(Symmetry("discrete", z_quarter_turns()))
    assert syms.shape == (4, 4, 4)
    np.testing.assert_allclose(syms[0], np.eye(4))
    R_gt = axis_angle_to_matrix([0.3, 0.1, 0.2])
    assert M.mssd(R_gt @ rot_z(90), ZERO, R_gt, ZERO, CUBE, syms) == pytest.approx(0.0, abs=1e-12)
    assert M.mssd(R_gt @ rot_z(90), ZERO, R_gt, ZERO, CUBE, None) == pytest.approx(2.0)
    # BOP's dict form of the symmetries gives the same answer.
    bop_syms = [{"R": S[:3, :3], "t": S[:3, 3:]} for S in syms]
    assert M.mssd(R_gt @ rot_z(90), ZERO, R_gt, ZERO, CUBE, bop_syms) == pytest.approx(0.0, abs=1e-12)


def test_mspd_by_hand():
    K = np.array([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 1.0]])
    flat = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # all at depth 10
    t_gt = np.array([0.0, 0.0, 10.0])
    # A shift of 1 along x at depth 10 moves every projection by f * 1 / 10 = 10 px.
    assert M.mspd(I3, t_gt + [1.0, 0, 0], I3, t_gt, K, flat, None) == pytest.approx(10.0)
    # The cube seen at depth 10: the nearest face (z = 9) moves most, 100 / 9 px.
    assert M.mspd(I3, t_gt + [1.0, 0, 0], I3, t_gt, K, CUBE, None) == pytest.approx(100.0 / 9.0)


def test_continuous_symmetry_discretisation_follows_bop():
    sym = Symmetry("continuous", axis=np.array([0.0, 0.0, 2.0]), offset=np.array([0.0, 0.0, 0.0]))
    syms = M.symmetry_transformations(sym)
    assert len(syms) == math.ceil(math.pi / 0.01) == 315
    np.testing.assert_allclose(syms[0], np.eye(4))
    # All are rotations about z: the z axis stays put.
    np.testing.assert_allclose(syms[:, :3, 2], np.tile([0.0, 0.0, 1.0], (315, 1)), atol=1e-12)
    # With a discrete flip too: 2 x 315 combined transforms (BOP combines every pair).
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    assert len(M.symmetry_transformations(Symmetry("continuous", [flip], np.array([0, 0, 1.0])))) == 630
    # A ring about the axis rotated by any angle has MSSD within one discretisation step.
    ang = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], axis=1)
    e = M.mssd(rot_z(33.3), ZERO, I3, ZERO, ring, syms)
    assert e < 2 * math.sin(math.pi / 315 / 2) + 1e-9
    # An offset axis: rotating about the line x = 1 keeps points on that line fixed.
    off = M.symmetry_transformations(Symmetry("continuous", axis=np.array([0, 0, 1.0]), offset=np.array([1.0, 0, 0])))
    np.testing.assert_allclose(off[:, :3, :3] @ [1.0, 0, 0] + off[:, :3, 3], np.tile([1.0, 0, 0], (315, 1)), atol=1e-12)


def test_bop_models_info_symmetries_stay_in_millimetres():
    info = {"symmetries_discrete": [list(np.array([[-1, 0, 0, 10], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
                                         .reshape(-1))]}
    syms = M.symmetry_transformations(info)
    assert syms.shape == (2, 4, 4)
    assert syms[1][0, 3] == 10.0


def test_batched_forms_match_the_single_ones():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(300, 3))
    R_e = np.stack([axis_angle_to_matrix(v) for v in rng.normal(size=(7, 3))])
    R_g = np.stack([axis_angle_to_matrix(v) for v in rng.normal(size=(7, 3))])
    t_e, t_g = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    np.testing.assert_allclose(M.add_batch(R_e, t_e, R_g, t_g, pts),
                               [M.add(R_e[i], t_e[i], R_g[i], t_g[i], pts) for i in range(7)])
    # ADD-S straight from the definition (KD-tree on the estimated points, one query per ground-truth point).
    from scipy.spatial import cKDTree

    direct = [cKDTree(pts @ R_e[i].T + t_e[i]).query(pts @ R_g[i].T + t_g[i])[0].mean() for i in range(7)]
    np.testing.assert_allclose(M.adi_batch(R_e, t_e, R_g, t_g, pts), direct, rtol=1e-12)
    np.testing.assert_allclose(M.re_batch(R_e, R_g), [M.re(R_e[i], R_g[i]) for i in range(7)])


# ------------------------------------------------------------------ AUC and BOP matching


def test_auc_posecnn_by_hand():
    # Errors 2 cm, 5 cm and a miss: accuracy 1/3 on (0, 2], 2/3 on (2, 5] and (5, 10] (VOCap credits each
    # step with its right end): (2 * 1/3 + 3 * 2/3 + 5 * 2/3) / 10 = 0.6.
    assert M.auc_posecnn([0.02, 0.05, np.inf]) == pytest.approx(0.6)
    assert M.auc_posecnn([0.02, 0.05, np.nan]) == pytest.approx(0.6)
    # The exact area under the step curve is mean(1 - d / 10 cm) = (0.8 + 0.5 + 0) / 3; the difference is d_K / (n max).
    assert M.auc_exact([0.02, 0.05, np.inf]) == pytest.approx(1.3 / 3)
    assert M.auc_posecnn([0.02, 0.05, np.inf]) - M.auc_exact([0.02, 0.05, np.inf]) == pytest.approx(0.05 / 0.3)
    assert M.auc_posecnn([0.0, 0.0]) == pytest.approx(1.0)
    assert M.auc_posecnn([0.2, np.inf]) == 0.0
    # Errors beyond 10 cm are failures: (1 * 1/2 + 9 * 1/2) / 10.
    assert M.auc_posecnn([0.01, 0.5]) == pytest.approx(0.5)


def test_bop_match_is_thresholded_greedy():
    errors = np.array([[0.5, 0.1], [0.05, 0.6]])  # rows: estimates by decreasing score
    np.testing.assert_array_equal(M.bop_match(errors, 0.2), [True, True])
    # At 0.08 the first estimate matches nothing, so it cannot steal a ground truth.
    np.testing.assert_array_equal(M.bop_match(errors, 0.08), [True, False])
    # Two estimates wanting the same ground truth: the higher score wins, the other takes what is left.
    np.testing.assert_array_equal(M.bop_match(np.array([[0.1, 0.3], [0.05, 0.15]]), 0.2), [True, True])


# ------------------------------------------------------------------ the evaluator


def catalogue() -> Catalogue:
    side = 0.1  # metres
    cube = ObjectModel("cube", 1, CUBE * side / 2, symmetry=Symmetry("discrete", z_quarter_turns()))
    tetra = ObjectModel("tetra", 2, TETRA * 0.05)
    return Catalogue([cube, tetra])


K640 = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
T0 = np.array([0.0, 0.0, 1.0])


def gt(name, t=T0, R=I3, obj_id=None):
    return GroundTruthPose(obj_id=obj_id or {"cube": 1, "tetra": 2}[name], name=name, R=R, t=np.asarray(t, float))


def test_ground_truth_scores_zero():
    ev = M.PoseEvaluator(catalogue())
    ev.add_frame([gt("cube"), gt("tetra")], [ObjectPose("cube", I3, T0), ObjectPose("tetra", I3, T0)], K=K640)
    rep = ev.report()
    o = rep["overall"]
    assert o["n_gt"] == o["n_predicted"] == 2
    for key in ("add_mean_mm", "adds_mean_mm", "rot_err_mean_deg", "trans_err_mean_mm", "add_median_mm"):
        assert o[key] == pytest.approx(0.0, abs=1e-6)
    for key in ("add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "auc_add", "auc_adds", "acc_5cm5deg",
                "mssd_recall", "mspd_recall"):
        assert o[key] == pytest.approx(1.0)
    assert set(rep["objects"]) == {"cube", "tetra"}


def test_units_and_the_symmetric_rule():
    cat = catalogue()
    ev = M.PoseEvaluator(cat)
    # cube turned 90 deg about z (a symmetry) and shifted 20 mm along x.
    shift = np.array([0.02, 0.0, 0.0])
    ev.add_frame([gt("cube")], [ObjectPose("cube", rot_z(90), T0 + shift)], K=K640)
    c = ev.report()["objects"]["cube"]
    assert c["trans_err_mean_mm"] == pytest.approx(20.0)
    assert c["rot_err_mean_deg"] == pytest.approx(90.0)
    assert c["adds_mean_mm"] == pytest.approx(20.0)  # corners land on corners, then the 20 mm shift
    # ADD: each corner moves 2 * (0.05 sqrt2) sin45 = 0.1 in xy plus the shift: hand-computed below.
    corners = cat["cube"].vertices
    expected_add = np.linalg.norm(corners @ rot_z(90).T + shift - corners, axis=1).mean() * 1000
    assert c["add_mean_mm"] == pytest.approx(expected_add)
    d = cat["cube"].diameter  # 0.1 sqrt3 = 173 mm; 0.1 d = 17.3 mm < 20 mm: not correct even with ADD-S
    assert d == pytest.approx(0.1 * math.sqrt(3))
    assert c["add_s_01d_acc"] == 0.0
    # Without the shift: ADD-S = 0 -> correct by ADD(-S) for the symmetric cube, wrong by ADD.
    ev2 = M.PoseEvaluator(cat)
    ev2.add_frame([gt("cube")], [ObjectPose("cube", rot_z(90), T0)], K=K640)
    c2 = ev2.report()["objects"]["cube"]
    assert (c2["add_01d_acc"], c2["adds_01d_acc"], c2["add_s_01d_acc"]) == (0.0, 1.0, 1.0)
    assert c2["mssd_recall"] == 1.0  # the quarter turn is a declared symmetry
    # The same error on the asymmetric tetra uses ADD: ADD-S alone would pass, ADD(-S) does not.
    ev3 = M.PoseEvaluator(cat)
    tetra = cat["tetra"].vertices
    ev3.add_frame([gt("tetra")], [ObjectPose("tetra", rot_z(90), T0)], K=K640)
    tr = ev3.report()["objects"]["tetra"]
    assert tr["add_s_01d_acc"] == tr["add_01d_acc"]
    assert tr["add_mean_mm"] == pytest.approx(np.linalg.norm(tetra @ rot_z(90).T - tetra, axis=1).mean() * 1000)


def test_missing_prediction_is_a_failure():
    ev = M.PoseEvaluator(catalogue())
    ev.add_frame([gt("tetra")], [ObjectPose("tetra", I3, T0 + [0.001, 0, 0])], K=K640)
    ev.add_frame([gt("tetra")], [], K=K640)
    o = ev.report()["objects"]["tetra"]
    assert (o["n_gt"], o["n_predicted"]) == (2, 1)
    assert o["add_mean_mm"] == pytest.approx(1.0)  # mean over the scored instance only
    for key in ("add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "acc_5cm5deg", "mssd_recall", "mspd_recall"):
        assert o[key] == pytest.approx(0.5), key
    assert o["auc_add"] == pytest.approx(M.auc_posecnn([0.001, np.inf]))


def test_nothing_predicted_gives_none_errors_and_zero_accuracy():
    ev = M.PoseEvaluator(catalogue())
    ev.add_frame([gt("cube")], [ObjectPose("tetra", I3, T0)], K=K640)  # wrong object: a false positive
    rep = ev.report()
    c = rep["objects"]["cube"]
    assert c["n_predicted"] == 0 and c["add_mean_mm"] is None and c["add_s_01d_acc"] == 0.0 and c["auc_add"] == 0.0
    assert rep["overall"]["n_false_positives"] == 1


def test_accuracy_thresholds_5cm5deg():
    ev = M.PoseEvaluator(catalogue())
    ev.add_frame([gt("tetra")], [ObjectPose("tetra", rot_z(4.9), T0 + [0.049, 0, 0])], K=K640)
    ev.add_frame([gt("tetra")], [ObjectPose("tetra", rot_z(4.9), T0 + [0.051, 0, 0])], K=K640)
    ev.add_frame([gt("tetra")], [ObjectPose("tetra", rot_z(5.1), T0)], K=K640)
    assert ev.report()["overall"]["acc_5cm5deg"] == pytest.approx(1 / 3)


def test_mssd_and_mspd_recall_by_hand():
    cat = catalogue()
    d = cat["cube"].diameter
    # Pure shift of 0.12 d: MSSD = 0.12 d, below the thresholds 0.15 .. 0.50 -> 8 of 10.
    ev = M.PoseEvaluator(cat)
    ev.add_frame([gt("cube")], [ObjectPose("cube", I3, T0 + [0.12 * d, 0, 0])], K=K640)
    assert ev.report()["overall"]["mssd_recall"] == pytest.approx(0.8)
    # A 20 mm x shift at 1 m: the nearest face (z = 0.95) moves 500 * 0.02 / 0.95 = 10.53 px -> 15 .. 50 px: 8/10.
    ev = M.PoseEvaluator(cat)
    res = ev.add_frame([gt("cube")], [ObjectPose("cube", I3, T0 + [0.02, 0, 0])], K=K640, image_width=640)
    assert res[0].mspd == pytest.approx(500 * 0.02 / 0.95)
    assert ev.report()["overall"]["mspd_recall"] == pytest.approx(0.8)
    # The same error in a 1280 px image counts half as much (BOP scales by 640 / width): 10 .. 50 px -> 9/10.
    ev = M.PoseEvaluator(cat)
    ev.add_frame([gt("cube")], [ObjectPose("cube", I3, T0 + [0.02, 0, 0])], K=K640, image_width=1280)
    assert ev.report()["overall"]["mspd_recall"] == pytest.approx(0.9)
    # No camera matrix: no MSPD at all.
    ev = M.PoseEvaluator(cat)
    ev.add_frame([gt("cube")], [ObjectPose("cube", I3, T0)])
    assert ev.report()["overall"]["mspd_recall"] is None


def test_several_instances_match_greedily_by_score():
    ev = M.PoseEvaluator(catalogue())
    a, b = T0 + [-0.2, 0, 0], T0 + [0.2, 0, 0]
    preds = [
        ObjectPose("tetra", I3, b + [0.003, 0, 0], score=0.9),  # near b
        ObjectPose("tetra", I3, a + [0.001, 0, 0], score=0.8),  # near a
        ObjectPose("tetra", I3, a, score=0.1),  # a third estimate for two instances: not scored
    ]
    res = ev.add_frame([gt("tetra", a), gt("tetra", b)], preds, K=K640)
    assert [r.te * 1000 for r in res] == pytest.approx([1.0, 3.0])
    assert [r.score for r in res] == [0.8, 0.9]
    rep = ev.report()["objects"]["tetra"]
    assert (rep["n_gt"], rep["n_predicted"], rep["n_false_positives"]) == (2, 2, 1)


def test_invalid_predictions_are_dropped_and_unknown_objects_raise():
    ev = M.PoseEvaluator(catalogue())
    ev.add_frame([gt("tetra")], [ObjectPose("tetra", np.full((3, 3), np.nan), T0)])
    rep = ev.report()
    assert rep["n_invalid_predictions"] == 1 and rep["overall"]["n_predicted"] == 0
    with pytest.raises(KeyError, match="unknown object 'ghost'"):
        ev.add_frame([GroundTruthPose(9, "ghost", I3, T0)], [])


def test_overall_pools_instances_and_mean_over_objects_averages_objects():
    ev = M.PoseEvaluator(catalogue())
    ev.add_frame([gt("cube"), gt("tetra")], [ObjectPose("cube", I3, T0)], K=K640)
    ev.add_frame([gt("cube")], [ObjectPose("cube", I3, T0)], K=K640)
    rep = ev.report()
    assert rep["overall"]["add_s_01d_acc"] == pytest.approx(2 / 3)
    assert rep["mean_over_objects"]["add_s_01d_acc"] == pytest.approx(0.5)
    assert rep["n_frames"] == 2
    table = format_report(rep)
    assert "cube" in table and "overall" in table and "ADD(-S).1d" in table


def test_instance_rows_are_in_millimetres():
    ev = M.PoseEvaluator(catalogue())
    (r,) = ev.add_frame([gt("tetra")], [ObjectPose("tetra", I3, T0 + [0.02, 0, 0])], K=K640, scene_id=3, im_id=7)
    row = r.to_dict()
    assert row["add_mm"] == pytest.approx(20.0) and row["trans_err_mm"] == pytest.approx(20.0)
    assert (row["scene_id"], row["im_id"], row["name"]) == (3, 7, "tetra")


def test_evaluate_pairs_takes_matched_instances():
    pairs = [(ObjectPose("tetra", I3, T0 + [0.02, 0, 0]), gt("tetra")), (None, gt("tetra")),
             (ObjectPose("whatever", I3, T0), gt("cube"))]
    rep = M.evaluate_pairs(pairs, catalogue(), K=K640)
    t = rep["objects"]["tetra"]
    assert (t["n_gt"], t["n_predicted"]) == (2, 1) and t["trans_err_mean_mm"] == pytest.approx(20.0)
    assert rep["objects"]["cube"]["add_mean_mm"] == pytest.approx(0.0)
    assert rep["overall"]["n_gt"] == 3 and rep["overall"]["n_predicted"] == 2


LMO = Path(os.environ["VFM_SHARED_DATA"]) if os.environ.get("VFM_SHARED_DATA") else \
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
LMO = LMO / "lmo_models"


@pytest.mark.skipif(not (LMO / "models_eval" / "models_info.json").is_file(),
                    reason=f"LM-O models not found at {LMO} (set VFM_SHARED_DATA to the folder holding lmo_models)")
def test_lmo_eggbox_flip_is_a_symmetry():
    cat = Catalogue.from_bop_models(LMO / "models_eval", names=["eggbox", "driller"])
    S = cat["eggbox"].symmetry.transforms[0]  # BOP's 180 deg flip of the eggbox
    R_g, t_g = axis_angle_to_matrix([0.3, -0.2, 0.1]), np.array([0.05, 0.02, 0.9])
    K = np.array([[572.4114, 0, 325.2611], [0, 573.57043, 242.04899], [0, 0, 1.0]])
    ev = M.PoseEvaluator(cat)
    egg, drill = ev.add_frame(
        [GroundTruthPose(10, "eggbox", R_g, t_g), GroundTruthPose(8, "driller", R_g, t_g)],
        [ObjectPose("eggbox", R_g @ S[:3, :3], R_g @ S[:3, 3] + t_g), ObjectPose("driller", R_g, t_g + [0.01, 0, 0])],
        K=K)
    assert egg.mssd == pytest.approx(0.0, abs=1e-9) and egg.mspd == pytest.approx(0.0, abs=1e-6)
    assert egg.re > 179.0 and egg.add > 0.05  # far off by ADD ...
    assert egg.adi < 0.005  # ... but the mesh is (almost) symmetric: ADD-S of a few mm
    assert egg.correct() and drill.add == pytest.approx(0.01) and drill.mssd == pytest.approx(0.01)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 1), (3, 3), (2, 5)])
def test_threshold_hits_equals_bop_matching_per_threshold(shape):
    """The vectorised recall matching (one estimate or one instance) gives exactly bop_match's answers."""
    from vfm_pose_ros.core.metrics import _threshold_hits, bop_match

    rng = np.random.default_rng(sum(shape))
    thresholds = np.linspace(0.05, 0.5, 10)
    for _ in range(50):
        errors = rng.uniform(0.0, 0.6, shape)
        hits = [np.zeros(len(thresholds), bool) for _ in range(shape[1])]
        _threshold_hits(errors, thresholds, hits)
        expected = np.array([bop_match(errors, th) for th in thresholds]).T  # (G, thresholds)
        assert np.array_equal(np.array(hits), expected)
