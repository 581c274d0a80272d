"""Pose-error metrics, matching and aggregation: the one definition the CLI, the ROS evaluator and reports use.

This module gathers the public names of four: ``pose_error`` (per-instance errors), ``vsd`` (Visible Surface
Discrepancy), ``aggregation`` (curves, recalls, summaries) and ``evaluator`` (:class:`PoseEvaluator`), so
callers import one place.

Per-instance errors follow the BOP toolkit (``bop_toolkit_lib/pose_error.py``, Hodan et al.):

* ``add``  ADD, mean distance of corresponding model points (Hinterstoisser et al. 2012);
* ``adi``  ADD-S / ADI, mean distance from each ground-truth point to the *nearest* estimated point
  (KD-tree, as the toolkit does with ``scipy.spatial.cKDTree``);
* ``re``   rotation error in degrees, ``arccos((tr(R_est inv(R_gt)) - 1) / 2)`` (BOP's inverse, not the
  transpose: annotated rotations are not exactly orthonormal); ``te`` translation error;
* ``mssd`` the smallest, over the object's symmetry transforms, of the largest 3D vertex distance;
* ``mspd`` the same with 2D projections (pixels);
* ``vsd``  Visible Surface Discrepancy against the test depth image (one error per tolerance tau), with
  BOP's 'bop19' visibility masks; the model's depth is rendered only on the pixels it covers.

The BOP toolkit takes the *minimum* over symmetry transforms of the per-transform maximum distance
(the pose is as good as its best symmetric equivalent); so do we. Symmetry transforms are BOP's
``misc.get_symmetry_transformations(model_info, max_sym_disc_step=0.01)``: the identity, the discrete
ones, and each continuous axis discretised into ``ceil(pi / 0.01) = 315`` rotations.

Aggregation (:class:`PoseEvaluator`): a frame's predictions are matched to its ground truth per object;
for several instances of one object, predictions in decreasing score take the unmatched ground truth
with the lowest ADD(-S) error, each ground truth getting at most one prediction, and only the
``n_gt`` highest-scored predictions of an object count (BOP's ``n_top = -1``). A ground-truth instance
without a prediction is a failure for every accuracy, recall and AUC (denominator: all ground truth);
means and medians of errors are over the instances that have a prediction. BOP's MSSD and MSPD
recalls re-run the toolkit's thresholded greedy matching (``pose_matching.match_poses``: an estimate
takes the unmatched ground truth with the lowest error *below* the threshold) at every threshold, and
so do the VSD recalls at every (tau, threshold); BOP's average recall (``bop19_average_recall``) is the
mean of the VSD, MSSD and MSPD average recalls (``scripts/eval_bop19_pose.py``). Without a depth image
there is no VSD, and the average recall is None with ``bop19_unavailable_reason``, never 0.

Units: metres and radians inside, like the rest of the package; the report gives millimetres,
degrees and pixels.
"""
from __future__ import annotations

from .aggregation import (
    ADD_THRESHOLD,
    AUC_MAX_THRESHOLD_M,
    BOP_REFERENCE_WIDTH,
    MSPD_THRESHOLDS_PX,
    MSSD_THRESHOLDS,
    InstanceResult,
    _threshold_hits,
    auc_exact,
    auc_posecnn,
    bop19_recalls,
    bop_match,
    report_settings,
    summarise,
)
from .evaluator import ROTATION_TOLERANCE, PoseEvaluator, evaluate_pairs, valid_pose
from .pose_error import (
    NearestModelPoints,
    add,
    add_batch,
    add_s,
    adi,
    adi_batch,
    mspd,
    mspd_batch,
    mssd,
    mssd_batch,
    re,
    re_batch,
    te,
    te_batch,
)
from .symmetry import MAX_SYM_DISC_STEP, symmetric_points, symmetry_transformations
from .vsd import (
    VSD_DELTA_ITODD_M,
    VSD_DELTA_M,
    VSD_TAUS,
    VSD_THRESHOLDS,
    depth_to_distance,
    overlapping_sphere_projections,
    visib_mask,
    visib_mask_est,
    vsd,
    vsd_from_depths,
    vsd_from_patches,
)

__all__ = [
    "ADD_THRESHOLD", "AUC_MAX_THRESHOLD_M", "BOP_REFERENCE_WIDTH", "MAX_SYM_DISC_STEP", "MSPD_THRESHOLDS_PX",
    "MSSD_THRESHOLDS", "ROTATION_TOLERANCE", "VSD_DELTA_ITODD_M", "VSD_DELTA_M", "VSD_TAUS", "VSD_THRESHOLDS",
    "InstanceResult", "NearestModelPoints", "PoseEvaluator", "_threshold_hits", "add", "add_batch", "add_s", "adi",
    "adi_batch", "auc_exact", "auc_posecnn", "bop19_recalls", "bop_match", "depth_to_distance", "evaluate_pairs",
    "mspd", "mspd_batch", "mssd", "mssd_batch", "overlapping_sphere_projections", "re", "re_batch", "report_settings",
    "summarise", "symmetric_points", "symmetry_transformations", "te", "te_batch", "valid_pose", "visib_mask",
    "visib_mask_est", "vsd", "vsd_from_depths", "vsd_from_patches",
]
