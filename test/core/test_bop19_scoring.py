"""BOP 2019 scoring worked out by hand: matching (eval_calc_errors n_top, pose_matching.match_poses), symmetries
(misc.get_symmetry_transformations), recalls and their averages (score.calc_localization_scores, eval_bop19_pose)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vfm_pose_ros.core import metrics as M
from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel, Symmetry
from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
I3 = np.eye(3)
TETRA = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]) * 0.03
A = np.array([0.0, 0.0, 1.0])
B = np.array([0.5, 0.0, 1.0])


def rot_z(deg):
    return axis_angle_to_matrix([0.0, 0.0, math.radians(deg)])


def score(model, gts, preds):
    ev = M.PoseEvaluator(Catalogue([model]))
    ev.add_frame([GroundTruthPose(model.class_id, model.name, R, t) for R, t in gts],
                 [ObjectPose(model.name, R, np.asarray(t, float), score=s) for R, t, s in preds], K=K, image_width=640)
    return ev.report()


def test_missed_instance_halves_every_recall():
    tetra = ObjectModel("tetra", 1, TETRA)
    o = score(tetra, [(I3, A), (I3, B)], [(I3, A, 1.0)])["objects"]["tetra"]
    assert o["n_gt"] == 2 and o["n_predicted"] == 1
    assert o["bop19_average_recall_mssd"] == 0.5 and o["bop19_average_recall_mspd"] == 0.5
    assert o["bop19_average_recall_vsd"] is None and o["bop19_average_recall"] is None  # no depth: not 0


def test_more_estimates_than_ground_truth_only_the_top_scored_count():
    tetra = ObjectModel("tetra", 1, TETRA)
    # one instance: the best-scored estimate is 1 m off; the perfect ones scored lower are not considered
    rep = score(tetra, [(I3, A)], [(I3, A + [1.0, 0, 0], 0.9), (I3, A, 0.5), (I3, A, 0.1)])
    o = rep["overall"]
    assert o["bop19_average_recall_mssd"] == 0.0 and o["bop19_average_recall_mspd"] == 0.0
    assert o["n_false_positives"] == 2
    # two instances, three estimates: the two best take A and B, the third is dropped
    rep = score(tetra, [(I3, A), (I3, B)], [(I3, B, 0.9), (I3, A, 0.8), (I3, A, 0.7)])
    assert rep["overall"]["bop19_average_recall_mssd"] == 1.0 and rep["overall"]["n_false_positives"] == 1


def test_thresholded_greedy_matching_by_hand():
    tetra = ObjectModel("tetra", 1, TETRA)
    d = tetra.diameter
    # e1 (score 0.9) is 0.12 d from A, e2 (0.8) 0.06 d from A; B is far from both. MSSD of a shift = its length.
    preds = [(I3, A + [0.12 * d, 0, 0], 0.9), (I3, A + [0, 0.06 * d, 0], 0.8)]
    o = score(tetra, [(I3, A), (I3, B)], preds)["overall"]
    # 0.05 d: neither is below; 0.10 d: e1 is not, e2 takes A; 0.15 .. 0.50 d: e1 takes A first and e2, left
    # with B only, is too far. Recall per threshold: 0, 1/2, then 1/2 eight times.
    assert o["bop19_average_recall_mssd"] == pytest.approx((0 + 0.5 + 8 * 0.5) / 10)


def test_discrete_symmetry():
    quarter = np.eye(4)
    quarter[:3, :3] = rot_z(90)
    cube_pts = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * 0.04
    sym = ObjectModel("cube", 1, cube_pts, symmetry=Symmetry("discrete", [quarter]))
    plain = ObjectModel("cube", 1, cube_pts)
    R_gt = axis_angle_to_matrix([0.2, 0.1, 0.3])
    est = (R_gt @ rot_z(90), A, 1.0)
    o = score(sym, [(R_gt, A)], [est])["overall"]
    assert o["mssd_mean_mm"] == pytest.approx(0.0, abs=1e-9) and o["bop19_average_recall_mssd"] == 1.0
    assert o["bop19_average_recall_mspd"] == 1.0
    # without the symmetry the quarter turn moves each corner 2 r sin 45 deg, r = 0.04 sqrt 2: 80 mm = 0.577 d
    o = score(plain, [(R_gt, A)], [est])["overall"]
    assert o["mssd_mean_mm"] == pytest.approx(80.0) and o["bop19_average_recall_mssd"] == 0.0


def test_continuous_symmetry_is_discretised_as_bop():
    r = 0.05
    ring = np.array([[r * math.cos(a), r * math.sin(a), h] for a in np.linspace(0, 2 * math.pi, 36, endpoint=False)
                     for h in (-0.05, 0.05)])
    can = ObjectModel("can", 1, ring, symmetry=Symmetry("continuous", axis=np.array([0.0, 0.0, 1.0]),
                                                        offset=np.zeros(3)))
    syms = M.symmetry_transformations(can.symmetry)
    assert len(syms) == math.ceil(math.pi / 0.01) == 315
    # 37 deg about the axis; the nearest of BOP's 315 rotations (step 360/315 deg) is 32 steps = 36.571 deg,
    # leaving 0.4286 deg: every ring point is 2 r sin(0.2143 deg) from its symmetric counterpart.
    step = 360.0 / 315
    residual = abs(37.0 - round(37.0 / step) * step)
    expected = 2 * r * math.sin(math.radians(residual) / 2)
    assert M.mssd(rot_z(37), A, I3, A, ring, syms) == pytest.approx(expected, rel=1e-9)
    o = score(can, [(I3, A)], [(rot_z(37), A, 1.0)])["overall"]
    assert o["mssd_mean_mm"] == pytest.approx(expected * 1000, rel=1e-9)
    assert o["bop19_average_recall_mssd"] == 1.0 and o["bop19_average_recall_mspd"] == 1.0
    assert o["rot_err_mean_deg"] == pytest.approx(37.0)  # re is not symmetry-aware (BOP's re neither)


def test_mssd_is_infinite_for_bop_when_centres_are_a_diameter_apart():
    # a long thin object 0.2 m from its origin: half a turn about z plus a 0.4 m shift lands it nearly on itself
    # (MSSD 2.8 mm = 0.03 d), but the centres are 0.4 m > d apart, where eval_calc_errors sets MSSD to inf
    pts = np.array([[0.2 + a, b, c] for a in (-0.001, 0.001) for b in (-0.001, 0.001) for c in (-0.05, 0.05)])
    obj = ObjectModel("stick", 1, pts)
    est = (rot_z(180), A + [0.4, 0.0, 0.0], 1.0)
    assert M.mssd(est[0], est[1], I3, A, pts, None) == pytest.approx(2 * math.sqrt(2) * 0.001)
    o = score(obj, [(I3, A)], [est])["overall"]
    assert o["bop19_average_recall_mssd"] == 0.0


def test_non_orthonormal_ground_truth_scores_zero_rotation_error():
    tetra = ObjectModel("tetra", 1, TETRA)
    R_gt = axis_angle_to_matrix([0.3, -0.5, 0.4]) * 0.997 + 2e-3
    o = score(tetra, [(R_gt, A)], [(R_gt, A, 1.0)])["overall"]
    assert o["rot_err_mean_deg"] == pytest.approx(0.0, abs=1e-5) and o["acc_5cm5deg"] == 1.0
