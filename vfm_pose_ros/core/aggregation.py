"""From per-instance errors to report numbers: accuracy curves (AUC), BOP's thresholded matching and
recalls, the per-instance record and the summary of a set of instances (one object, or all pooled)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .symmetry import MAX_SYM_DISC_STEP
from .vsd import VSD_DELTA_M

ADD_THRESHOLD = 0.1  # accuracy threshold: k times the object diameter (LineMOD protocol, k = 0.1)
MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # BOP 2019: fractions of the object diameter
MSPD_THRESHOLDS_PX = np.arange(5, 51, 5)  # BOP 2019: pixels at 640 px width (scaled by width / 640)
BOP_REFERENCE_WIDTH = 640.0
AUC_MAX_THRESHOLD_M = 0.1  # YCB-Video / PoseCNN: accuracy-threshold curve from 0 to 10 cm


def auc_posecnn(errors, max_threshold: float = AUC_MAX_THRESHOLD_M) -> float:
    """Area under the accuracy-vs-threshold curve from 0 to ``max_threshold``, normalised to [0, 1].

    This is the YCB-Video / PoseCNN definition (``VOCap`` in YCB_Video_toolbox's
    ``evaluate_poses_keyframe.m``, as ported to Python by DenseFusion, PVN3D, FFB6D), so numbers
    compare with published tables: errors above the threshold (and missing predictions: NaN or inf)
    count as failures; with the finite errors d_1 <= ... <= d_K of n instances, the curve is given
    the accuracy k/n on (d_{k-1}, d_k] and K/n on (d_K, max]. That credits each step with its right
    end, so it exceeds the exact area under the step function (:func:`auc_exact`) by d_K / (n max).
    """
    d = np.sort(np.asarray(errors, dtype=float).reshape(-1))  # NaN sorts last
    n = len(d)
    if n == 0:
        return float("nan")
    acc = np.arange(1, n + 1) / n
    keep = np.isfinite(d) & (d <= max_threshold)
    d, acc = d[keep], acc[keep]
    if len(d) == 0:
        return 0.0
    mrec = np.concatenate(([0.0], d, [max_threshold]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], acc, [acc[-1]])))
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]) / max_threshold)


def auc_exact(errors, max_threshold: float = AUC_MAX_THRESHOLD_M) -> float:
    """The exact area under the step curve acc(x) = #{d_i <= x} / n on [0, max], normalised: mean(1 - d/max)^+."""
    d = np.asarray(errors, dtype=float).reshape(-1)
    if len(d) == 0:
        return float("nan")
    d = np.where(np.isfinite(d), d, np.inf)
    return float(np.mean(np.clip(1.0 - d / max_threshold, 0.0, 1.0)))


def bop_match(errors: np.ndarray, threshold: float) -> np.ndarray:
    """BOP's greedy matching at one threshold: which ground truths (G,) get an estimate.

    ``errors`` is (P, G) with estimates already in decreasing score; each estimate takes the
    unmatched ground truth with the lowest error strictly below ``threshold`` (``pose_matching.match_poses``).
    """
    errors = np.asarray(errors, float)
    matched = np.zeros(errors.shape[1], dtype=bool)
    for row in errors:
        cand = np.where(matched, np.inf, row)
        g = int(np.argmin(cand)) if len(cand) else -1
        if g >= 0 and cand[g] < threshold:
            matched[g] = True
    return matched


def _threshold_hits(errors: np.ndarray, thresholds: np.ndarray, hits: list[np.ndarray]) -> None:
    """Set ``hits[g][k]`` where :func:`bop_match` at ``thresholds[k]`` matches ground truth g. With one
    estimate or one ground truth (most frames) the greedy matching is a plain threshold test on the best
    pair, done for all thresholds at once; otherwise bop_match runs per threshold."""
    P, G = errors.shape
    if P == 1 or G == 1:
        p, g = np.unravel_index(int(np.argmin(errors)), errors.shape) if P == 1 else (int(np.argmin(errors[:, 0])), 0)
        hits[g] |= errors[p, g] < thresholds
        return
    for k, th in enumerate(thresholds):
        for g in np.nonzero(bop_match(errors, th))[0]:
            hits[g][k] = True



@dataclass
class InstanceResult:
    """The scores of one ground-truth instance (errors in metres / degrees / pixels; NaN: no prediction)."""

    name: str
    obj_id: int
    diameter: float  # metres
    symmetric: bool
    scene_id: int | None = None
    im_id: int | None = None
    gt_id: int = -1
    predicted: bool = False
    score: float = float("nan")
    add: float = float("nan")
    adi: float = float("nan")
    re: float = float("nan")  # degrees
    te: float = float("nan")
    mssd: float = float("nan")
    mspd: float = float("nan")  # pixels
    image_width: float = BOP_REFERENCE_WIDTH
    vsd: float = float("nan")  # mean over BOP's taus of the VSD errors
    mssd_hits: np.ndarray = field(default_factory=lambda: np.zeros(len(MSSD_THRESHOLDS), bool))
    mspd_hits: np.ndarray | None = None  # None where no camera matrix was given
    vsd_hits: np.ndarray | None = None  # (taus, thresholds); None where VSD was not computed ...
    vsd_missing: str = ""  # ... and why

    @property
    def add_s(self) -> float:
        return self.adi if self.symmetric else self.add

    def correct(self, k: float = ADD_THRESHOLD) -> bool:
        """ADD(-S) below k times the diameter (BOP uses a strict inequality)."""
        return bool(self.predicted and self.add_s < k * self.diameter)

    def to_dict(self) -> dict:
        """A flat row (mm, degrees, pixels) for per-instance CSV files."""
        mm = (lambda v: None if math.isnan(v) else v * 1000.0)
        num = (lambda v: None if math.isnan(v) else v)
        return {
            "scene_id": self.scene_id, "im_id": self.im_id, "obj_id": self.obj_id, "name": self.name,
            "gt_id": self.gt_id, "predicted": self.predicted, "score": num(self.score),
            "add_mm": mm(self.add), "adds_mm": mm(self.adi), "add_s_mm": mm(self.add_s),
            "rot_err_deg": num(self.re), "trans_err_mm": mm(self.te), "mssd_mm": mm(self.mssd),
            "mspd_px": num(self.mspd), "vsd_mean": num(self.vsd), "add_s_01d": self.correct(),
            "diameter_mm": self.diameter * 1000.0,
        }


def report_settings(max_points=None, vsd_delta: float = VSD_DELTA_M) -> dict:
    """How the numbers were computed, stored with every report."""
    return {
        "units": "errors in mm, degrees and pixels; fractions in 0..1",
        "add_threshold": f"{ADD_THRESHOLD} x diameter, strict (<), ADD-S for catalogue-symmetric objects in add_s",
        "acc_5cm5deg": "rotation error < 5 deg and translation error < 50 mm",
        "auc": f"YCB-Video/PoseCNN VOCap, thresholds 0..{AUC_MAX_THRESHOLD_M * 1000:.0f} mm, normalised to 1",
        "mssd_thresholds": "0.05..0.50 x diameter, step 0.05 (BOP 2019)",
        "mspd_thresholds": "5..50 px, step 5, scaled by image width / 640 (BOP 2019)",
        "vsd": f"BOP pose_error.vsd: cost step, delta {vsd_delta * 1000:g} mm, taus 0.05..0.50 x diameter, "
               "normalized by diameter, visibility 'bop19'; thresholds 0.05..0.50, step 0.05; 1 where the "
               "bounding-sphere projections do not overlap",
        "bop19_average_recall": "mean of the VSD (over 10 taus x 10 thresholds), MSSD and MSPD recalls, each "
                                "recall = matched / ground truth with BOP's per-threshold greedy matching "
                                "(eval_bop19_pose.py); not available (None) without depth",
        "symmetries": f"BOP get_symmetry_transformations, max_sym_disc_step={MAX_SYM_DISC_STEP}",
        "matching": "per object and frame; top n_gt predictions by score; each takes the unmatched ground truth "
                    "with the lowest ADD(-S); MSSD/MSPD recalls use BOP's thresholded greedy matching",
        "missing_prediction": "failure in every accuracy, recall and AUC; excluded from error means and medians",
        "model_points": "all vertices" if max_points is None else f"at most {max_points} vertices",
    }


def summarise(results: list[InstanceResult], false_positives: int = 0) -> dict:
    """The report keys for a set of instances (one object, or all of them pooled)."""
    n_gt = len(results)
    scored = [r for r in results if r.predicted]

    def stat(attr, fn, scale=1.0):
        vals = np.array([getattr(r, attr) for r in scored], dtype=float)
        return float(fn(vals)) * scale if len(vals) else None

    def frac(count):
        return float(count) / n_gt if n_gt else None

    inf_if_missing = (lambda attr: [getattr(r, attr) if r.predicted else np.inf for r in results])
    out = {
        "n_gt": n_gt,
        "n_predicted": len(scored),
        "n_false_positives": int(false_positives),
        "add_mean_mm": stat("add", np.mean, 1000.0),
        "add_median_mm": stat("add", np.median, 1000.0),
        "adds_mean_mm": stat("adi", np.mean, 1000.0),
        "adds_median_mm": stat("adi", np.median, 1000.0),
        "rot_err_mean_deg": stat("re", np.mean),
        "rot_err_median_deg": stat("re", np.median),
        "trans_err_mean_mm": stat("te", np.mean, 1000.0),
        "trans_err_median_mm": stat("te", np.median, 1000.0),
        "mssd_mean_mm": stat("mssd", np.mean, 1000.0),
        "add_01d_acc": frac(sum(r.predicted and r.add < ADD_THRESHOLD * r.diameter for r in results)),
        "adds_01d_acc": frac(sum(r.predicted and r.adi < ADD_THRESHOLD * r.diameter for r in results)),
        "add_s_01d_acc": frac(sum(r.correct() for r in results)),
        "auc_add": auc_posecnn(inf_if_missing("add")) if n_gt else None,
        "auc_adds": auc_posecnn(inf_if_missing("adi")) if n_gt else None,
        "acc_5cm5deg": frac(sum(r.predicted and r.re < 5.0 and r.te < 0.05 for r in results)),
        "mssd_recall": (float(np.mean(np.sum([r.mssd_hits for r in results], axis=0) / n_gt)) if n_gt else None),
    }
    with_k = [r for r in results if r.mspd_hits is not None]
    out["mspd_recall"] = float(np.mean(np.sum([r.mspd_hits for r in with_k], axis=0) / len(with_k))) if with_k else None
    scored_k = [r.mspd for r in with_k if r.predicted]
    out["mspd_mean_px"] = float(np.mean(scored_k)) if scored_k else None
    out.update(bop19_recalls(results))
    return out


def bop19_recalls(results: list[InstanceResult]) -> dict:
    """BOP 2019's average recalls over a set of ground-truth instances (eval_bop19_pose.py).

    Each recall is (ground truth matched below the threshold) / (ground truth), averaged over the
    thresholds (and for VSD over the taus too); ``bop19_average_recall`` is the mean of the three. A
    recall that cannot be computed for every instance (VSD without depth, MSPD without K) is None, as
    is the average, and ``bop19_unavailable_reason`` says why.
    """
    n_gt = len(results)

    def mean_recall(attr):
        hits = [getattr(r, attr) for r in results]
        if not n_gt or any(h is None for h in hits):
            return None
        return float(np.mean(np.sum(hits, axis=0) / n_gt))

    out = {
        "bop19_average_recall_vsd": mean_recall("vsd_hits"),
        "bop19_average_recall_mssd": mean_recall("mssd_hits"),
        "bop19_average_recall_mspd": mean_recall("mspd_hits"),
    }
    parts = list(out.values())
    out["bop19_average_recall"] = float(np.mean(parts)) if all(v is not None for v in parts) else None
    reason = None
    if not n_gt:
        reason = "no ground truth"
    elif out["bop19_average_recall"] is None:
        why = defaultdict(int)
        for r in results:
            if r.vsd_hits is None:
                why[f"VSD: {r.vsd_missing or 'not computed'}"] += 1
            if r.mspd_hits is None:
                why["MSPD: no camera matrix"] += 1
        reason = "; ".join(f"{k} for {v} of {n_gt} ground-truth instances" for k, v in sorted(why.items()))
    out["bop19_unavailable_reason"] = reason
    return out
