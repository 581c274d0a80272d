"""Streaming pose evaluation: :class:`PoseEvaluator` matches each frame's predictions to its ground truth per
object and keeps the per-instance results; :meth:`PoseEvaluator.report` aggregates them (``aggregation``)."""
from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from .aggregation import (
    BOP_REFERENCE_WIDTH,
    MSPD_THRESHOLDS_PX,
    MSSD_THRESHOLDS,
    InstanceResult,
    _threshold_hits,
    report_settings,
    summarise,
)
from .pose_error import _CHUNK, NearestModelPoints, add_batch, adi_batch, mspd_batch, mssd_batch, re_batch, te_batch
from .symmetry import MAX_SYM_DISC_STEP, symmetric_points, symmetry_transformations
from .vsd import VSD_DELTA_M, VSD_TAUS, VSD_THRESHOLDS, overlapping_sphere_projections, vsd_from_patches


def _gt_index(g, i: int) -> int:
    gid = int(getattr(g, "gt_id", -1))
    return gid if gid >= 0 else i


class _ObjectData:
    """Per-object evaluation data, computed once: points, KD-tree, symmetry transforms."""

    def __init__(self, model, max_points: int | None, max_sym_disc_step: float):
        self.model = model
        self.pts = model.vertices if max_points is None else model.eval_points(max_points)
        self.syms = symmetry_transformations(model.symmetry, max_sym_disc_step)
        small = len(self.syms) * len(self.pts) <= 2 * _CHUNK  # else MSSD/MSPD make them block by block
        self.sym_pts = symmetric_points(self.pts, self.syms) if small else None
        self._tree = None

    @property
    def tree(self):
        if self._tree is None:
            self._tree = NearestModelPoints(self.pts)
        return self._tree


class PoseEvaluator:
    """Streaming scorer: feed frames with :meth:`add_frame`, read the totals with :meth:`report`.

    ``catalogue`` supplies meshes, diameters and symmetry for every object named in the ground
    truth; ``max_points`` subsamples model vertices (None: all of them, as BOP does with its
    ``models_eval`` meshes). VSD (and so BOP's average recall) is computed for frames given a depth
    image and a camera matrix, with ``renderer`` (see :func:`vsd`; e.g. ``data.render.DepthPatches()``)
    and visibility tolerance ``vsd_delta`` (metres).
    """

    def __init__(self, catalogue, max_points: int | None = None, max_sym_disc_step: float = MAX_SYM_DISC_STEP,
                 default_image_width: float = BOP_REFERENCE_WIDTH, renderer=None, vsd_delta: float = VSD_DELTA_M):
        self.catalogue = catalogue
        self.max_points = max_points
        self.max_sym_disc_step = max_sym_disc_step
        self.default_image_width = float(default_image_width)
        self.renderer = renderer
        self.vsd_delta = float(vsd_delta)
        self.instances: list[InstanceResult] = []
        self.n_frames = 0
        self.false_positives: dict[str, int] = defaultdict(int)  # predictions matched to no ground truth
        self.n_invalid_predictions = 0  # non-finite or malformed poses, dropped
        self._objects: dict[str, _ObjectData] = {}

    def _object(self, name: str) -> _ObjectData:
        if name not in self._objects:
            self._objects[name] = _ObjectData(self.catalogue[name], self.max_points, self.max_sym_disc_step)
        return self._objects[name]

    def add_frame(self, gts, predictions, K=None, image_width: float | None = None,
                  scene_id: int | None = None, im_id: int | None = None, depth=None) -> list[InstanceResult]:
        """Score one frame: ``gts`` (GroundTruthPose list), ``predictions`` (ObjectPose list), matched by name.

        ``K`` (3x3) enables MSPD; ``image_width`` scales the MSPD thresholds (default 640); ``depth``
        (HxW metres, 0 or non-finite = no measurement) with ``K`` and the evaluator's renderer enables
        VSD. Returns the frame's per-instance results (also kept for :meth:`report`).
        """
        self.n_frames += 1
        width = float(image_width or self.default_image_width)
        vsd_missing = ("off (the evaluator has no renderer)" if self.renderer is None else "no depth image"
                       if depth is None else "no camera matrix" if K is None else "")
        if not vsd_missing:
            depth = np.asarray(depth)
        gts_by_name: dict[str, list] = defaultdict(list)
        for g in gts:
            gts_by_name[g.name].append(g)
        preds_by_name: dict[str, list] = defaultdict(list)
        for p in predictions:
            if not valid_pose(p.R, p.t):
                self.n_invalid_predictions += 1
                continue
            preds_by_name[p.name].append(p)
        for name, preds in preds_by_name.items():
            if name not in gts_by_name:
                self.false_positives[name] += len(preds)

        frame_results = []
        for name, group in gts_by_name.items():
            obj = self._object(name)
            preds = sorted(preds_by_name.get(name, []), key=lambda p: -float(p.score))
            kept = preds[: len(group)]  # BOP n_top = -1: as many estimates as instances
            self.false_positives[name] += len(preds) - len(kept)
            # without estimates VSD needs no depth: every instance fails it
            missing = "" if not kept and self.renderer is not None else vsd_missing
            results = [
                InstanceResult(name=name, obj_id=int(g.obj_id), diameter=float(obj.model.diameter),
                               symmetric=bool(obj.model.symmetric), scene_id=scene_id, im_id=im_id,
                               gt_id=_gt_index(g, i), image_width=width,
                               mspd_hits=None if K is None else np.zeros(len(MSPD_THRESHOLDS_PX), bool),
                               vsd_hits=None if missing else np.zeros((len(VSD_TAUS), len(VSD_THRESHOLDS)), bool),
                               vsd_missing=missing)
                for i, g in enumerate(group)
            ]
            if kept:
                self._score_group(obj, group, kept, results, K, width, None if vsd_missing else depth)
            frame_results.extend(results)
        self.instances.extend(frame_results)
        return frame_results

    def _score_group(self, obj: _ObjectData, group, kept, results, K, width, depth=None):
        P, G = len(kept), len(group)
        ii, jj = np.meshgrid(np.arange(P), np.arange(G), indexing="ij")
        ii, jj = ii.ravel(), jj.ravel()
        R_e = np.stack([np.asarray(p.R, float) for p in kept])[ii]
        t_e = np.stack([np.asarray(p.t, float).reshape(3) for p in kept])[ii]
        R_g = np.stack([np.asarray(g.R, float) for g in group])[jj]
        t_g = np.stack([np.asarray(g.t, float).reshape(3) for g in group])[jj]
        err = {
            "add": add_batch(R_e, t_e, R_g, t_g, obj.pts),
            "adi": adi_batch(R_e, t_e, R_g, t_g, obj.pts, tree=obj.tree),
            "re": re_batch(R_e, R_g),
            "te": te_batch(t_e, t_g),
            "mssd": mssd_batch(R_e, t_e, R_g, t_g, obj.pts, obj.syms, sym_pts=obj.sym_pts),
        }
        if K is not None:
            err["mspd"] = mspd_batch(R_e, t_e, R_g, t_g, K, obj.pts, obj.syms, sym_pts=obj.sym_pts)
        err = {k: v.reshape(P, G) for k, v in err.items()}
        vsd_err = None if depth is None else self._vsd_errors(obj, R_e, t_e, R_g, t_g, K, depth).reshape(P, G, -1)
        # Primary matching (errors, accuracies, AUC): decreasing score, lowest ADD(-S) among unmatched.
        primary = err["adi"] if obj.model.symmetric else err["add"]
        taken = np.zeros(G, dtype=bool)
        for p in range(P):
            g = int(np.argmin(np.where(taken, np.inf, primary[p])))
            taken[g] = True
            r = results[g]
            r.predicted, r.score = True, float(kept[p].score)
            for key in err:
                setattr(r, key, float(err[key][p, g]))
            if vsd_err is not None:
                r.vsd = float(vsd_err[p, g].mean())
        # BOP recalls: the toolkit's thresholded matching, once per threshold. MSSD is infinite where the
        # centres are a diameter or more apart (eval_calc_errors' bounding-sphere test).
        d = obj.model.diameter
        mssd_bop = np.where(err["te"] < d, err["mssd"], np.inf)
        _threshold_hits(mssd_bop, np.asarray(MSSD_THRESHOLDS) * d, [r.mssd_hits for r in results])
        if K is not None:
            scaled = err["mspd"] * (BOP_REFERENCE_WIDTH / width)
            _threshold_hits(scaled, np.asarray(MSPD_THRESHOLDS_PX, float), [r.mspd_hits for r in results])
        if vsd_err is not None:
            for k in range(len(VSD_TAUS)):  # one matching per (tau, threshold), as eval_bop19_pose runs them
                _threshold_hits(vsd_err[:, :, k], np.asarray(VSD_THRESHOLDS), [r.vsd_hits[k] for r in results])

    def _vsd_errors(self, obj: _ObjectData, R_e, t_e, R_g, t_g, K, depth) -> np.ndarray:
        """VSD at BOP's taus (N, taus) for N pose pairs; each distinct pose is rendered once, and pairs whose
        bounding-sphere projections do not overlap are 1 without rendering (as eval_calc_errors does)."""
        model, diameter = obj.model, float(obj.model.diameter)
        patches: dict[bytes, object] = {}

        def patch(R, t):
            key = R.tobytes() + t.tobytes()
            if key not in patches:
                patches[key] = self.renderer(model, R, t, K, depth.shape)
            return patches[key]

        out = np.ones((len(R_e), len(VSD_TAUS)))
        for n in range(len(R_e)):
            if overlapping_sphere_projections(0.5 * diameter, t_e[n], t_g[n]):
                out[n] = vsd_from_patches(depth, patch(R_e[n], t_e[n]), patch(R_g[n], t_g[n]), K, self.vsd_delta,
                                          VSD_TAUS, True, diameter)
        return out

    def report(self) -> dict:
        """The report: per object (under "objects"), pooled over all instances ("overall"), and object means."""
        by_name: dict[str, list] = defaultdict(list)
        for r in self.instances:
            by_name[r.name].append(r)
        objects = {name: summarise(rs, self.false_positives.get(name, 0)) for name, rs in sorted(by_name.items())}
        overall = summarise(self.instances, sum(self.false_positives.values()))
        fractions = ("add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "auc_add", "auc_adds", "acc_5cm5deg",
                     "mssd_recall", "mspd_recall", "bop19_average_recall", "bop19_average_recall_vsd",
                     "bop19_average_recall_mssd", "bop19_average_recall_mspd")
        mean_over_objects = {}
        for key in fractions:
            vals = [o[key] for o in objects.values() if o[key] is not None]
            mean_over_objects[key] = float(np.mean(vals)) if vals else None
        return {
            "objects": objects,
            "overall": overall,
            "mean_over_objects": mean_over_objects,
            "n_frames": self.n_frames,
            "n_invalid_predictions": self.n_invalid_predictions,
            "settings": report_settings(self.max_points, self.vsd_delta),
        }


# How far an estimate's R may be from orthonormal (max |R R^T - I|, |det R - 1|) and still be scored: rotations
# written with a few decimals (BOP results files, real annotations) deviate by up to ~5e-3.
ROTATION_TOLERANCE = 1e-2


def valid_pose(R, t) -> bool:
    """Whether an estimate can be scored: a finite 3-vector t and a proper rotation R (orthonormal within
    ROTATION_TOLERANCE, det +1). A scaled matrix or a reflection is not a pose."""
    R, t = np.asarray(R, float), np.asarray(t, float)
    if R.shape != (3, 3) or t.size != 3 or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return False
    return (float(np.abs(R @ R.T - np.eye(3)).max()) <= ROTATION_TOLERANCE
            and abs(float(np.linalg.det(R)) - 1.0) <= ROTATION_TOLERANCE)


def evaluate_pairs(pairs, catalogue, K=None, image_width: float | None = None, max_points: int | None = None) -> dict:
    """The report for instances matched elsewhere: ``pairs`` of (prediction or None, ground truth).

    Each pair is scored as its own frame (so no re-matching happens); a prediction is scored as the
    ground truth's object whatever its name; None is a missed instance. ``K`` enables MSPD.
    """
    ev = PoseEvaluator(catalogue, max_points=max_points)
    for pred, gt in pairs:
        preds = [] if pred is None else [dataclasses.replace(pred, name=gt.name)]
        ev.add_frame([gt], preds, K=K, image_width=image_width)
    return ev.report()
