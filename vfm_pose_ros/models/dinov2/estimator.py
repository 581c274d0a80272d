"""The DINOv2 estimator: stage 1 (detection on the letterboxed image), stage 2 (keypoint votes, or dense model
coordinates, in a crop per instance), PnP and the depth stage; tracking by warm-started ICP (see the package
docstring)."""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from ...core.affine import (
    apply_affine,
    as_boxes,
    crop_affine,
    in_box,
    invert_affine,
    letterbox_affine,
    out_affine,
    out_grid,
)
from ...core.catalogue import Catalogue
from ...core.pnp import solve_pnp
from ...core.transforms import project, transform_points
from ...core.types import Frame, ObjectPose, Prediction
from .. import estimator as _est
from .config import OUT_STRIDE, InferenceConfig
from .network import PoseNet, build_net, to_tensor
from .voting import ransac_vote

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CropJob:
    """One stage-2 crop: an instance found by stage 1 (or given as a box) in one frame of the batch."""

    frame: int  # index of the frame in the batch
    name: str  # the object
    affine: np.ndarray  # image -> crop, 2x3
    box: np.ndarray  # [x0, y0, x1, y1], image pixels
    det_score: float
    side: float  # crop side, image pixels
    several: bool  # other instances of the object in this frame: votes and ICP points stay inside the box


@dataclasses.dataclass
class _Votes:
    """Representation "votes": a crop's keypoints voted in the image, with what the pose's score takes from it."""

    points_3d: np.ndarray  # (Kp, 3) the model keypoints, metres
    points_2d: np.ndarray  # (Kp, 2) their voted image positions, pixels
    confidence: np.ndarray  # (Kp,) the vote's inlier fractions
    mask_score: float

    def support(self, pnp) -> float:
        """The keypoints' share of the score: the PnP inliers' mean confidence; without PnP they did not vouch
        for the pose and count half."""
        conf = self.confidence
        return float(np.mean(conf[pnp.inliers])) if pnp is not None else 0.5 * float(np.mean(conf))

    def keypoints_2d(self, R, t, K) -> np.ndarray:
        return self.points_2d


@dataclasses.dataclass
class _Coords:
    """Representation "coords": a crop's mask cells as 2D-3D correspondences (cell centre in the image, the
    predicted model coordinates there), uniform confidence."""

    points_3d: np.ndarray  # (P, 3) predicted model coordinates, metres
    points_2d: np.ndarray  # (P, 2) the cell centres, image pixels
    confidence: np.ndarray  # (P,) ones
    mask_score: float
    keypoints: np.ndarray  # (Kp, 3) the model keypoints, drawn with the pose

    def support(self, pnp) -> float:
        """The PnP inlier fraction; without PnP (the depth stage alone) a half, as for votes."""
        return len(pnp.inliers) / max(1, len(self.points_3d)) if pnp is not None else 0.5

    def keypoints_2d(self, R, t, K) -> np.ndarray | None:
        return None if R is None else project(K, transform_points(R, t, self.keypoints))


class Estimator(_est.Estimator):
    """DINOv2 keypoint estimator: ``predict(frame) -> Prediction`` (see the package docstring)."""

    backend = "dinov2"

    def __init__(self, net: PoseNet, catalogue: Catalogue, device="auto", precision: str | None = None, **overrides):
        cfg = {**net.config, **overrides}
        super().__init__(catalogue, device=device, precision=precision or cfg.get("precision", "auto"), config=cfg)
        self.settings = InferenceConfig.from_config(cfg)
        self.net = net.to(self.device).eval()
        self.compile_backbone("features")
        self.names = net.object_names
        self.keypoints = net.keypoints_3d.cpu().numpy()
        # the strategy that turns a crop's head output into 2D-3D correspondences for PnP
        self.field_key = net.field_key
        self._correspondences = self._coords if net.representation == "coords" else self._vote
        self._gen = torch.Generator().manual_seed(0)

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", **overrides) -> Estimator:
        from ..checkpoint import catalogue_from_dict, load_checkpoint, release_memory

        ckpt = load_checkpoint(path, expected_backend=cls.backend, as_stored=True)
        catalogue = catalogue_from_dict(ckpt["catalogue"])
        cfg = {**ckpt["config"], **overrides}
        build_cfg = dict(cfg)
        stored_backbone = any(k.startswith("backbone.") for k in ckpt["state_dict"])
        if stored_backbone:  # the weights come from the checkpoint: do not fetch pretrained ones
            build_cfg["weights"] = "random"
        net = build_net(build_cfg, catalogue)
        missing, unexpected = net.load_state_dict(ckpt["state_dict"], strict=False)
        missing = [k for k in missing if not (k.startswith("backbone.") and not stored_backbone)]
        if missing or unexpected:
            raise ValueError(f"checkpoint {path} does not match the dinov2 network: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        net.config = cfg
        est = cls(net, catalogue, device=device)
        est.checkpoint_meta = {k: ckpt.get(k) for k in ("epoch", "metrics", "data_hash")}
        del ckpt
        release_memory()
        return est

    @classmethod
    def from_net(cls, net: PoseNet, catalogue: Catalogue, device="auto", **overrides) -> Estimator:
        return cls(net, catalogue, device=device, **overrides)

    # -- the network -----------------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, crops: list[np.ndarray], timer, affines=None, frames=None) -> dict[str, torch.Tensor]:
        """Backbone + head on a list of SxS uint8 crops, in batches; returns class probabilities and the raw
        field: vote vectors "vec" (B, objects, keypoints, 2, h, w) or normalised model coordinates "coord"
        (B, objects, 3, h, w). Only the mask pixels' vectors are used, so only those are normalised
        (normalising whole maps was a quarter of the head stage).

        ``affines`` (image -> crop) and ``frames`` (the frame of each crop) are unused here; they let the
        oracle (oracle.OracleEstimator) substitute perfect outputs for the network's.
        """
        segs, fields = [], []
        key, per_object = self.field_key, (3,) if self.field_key == "coord" else (self.net.n_keypoints, 2)
        mb = self.settings.max_batch
        for k in range(0, len(crops), mb):
            with timer("preprocess"):
                x = torch.stack([to_tensor(c) for c in crops[k:k + mb]]).to(self.device)
            with self.autocast():
                with timer("backbone"):
                    f = self.net.features(x)
                with timer("head"):
                    out = self.net.head(f, x)
            with timer("head"):
                segs.append(out["seg"].float().softmax(1).cpu())
                v = out[key].float().cpu()
                B, _, h, w = v.shape
                fields.append(v.view(B, self.net.n_objects, *per_object, h, w))
        return {"seg": torch.cat(segs), key: torch.cat(fields)}

    # -- stage 1 ---------------------------------------------------------------------------------
    def detect(self, frames: list[Frame], timer=None) -> list[dict[str, list[tuple[np.ndarray, float]]]]:
        """Stage 1 per frame: name -> [(box [x0, y0, x1, y1], score), ...], one entry per instance, best first.

        Frames with ``boxes_2d`` keep those boxes (score 1); the others go through the network.
        """
        import cv2

        timer = timer or self.timer()
        size = int(self.settings.det_img_size or self.config["img_size"])
        out: list[dict] = [dict() for _ in frames]
        todo = []
        for fi, fr in enumerate(frames):
            if fr.boxes_2d:
                out[fi] = {n: [(b, 1.0) for b in as_boxes(bx)] for n, bx in fr.boxes_2d.items() if n in self.names}
            else:
                todo.append(fi)
        if not todo:
            return out
        with timer("preprocess"):
            As = [letterbox_affine(*frames[fi].shape, size) for fi in todo]
            imgs = [cv2.warpAffine(frames[fi].rgb, A, (size, size), flags=cv2.INTER_LINEAR) for fi, A in zip(todo, As)]
        res = self._run(imgs, timer, As, [frames[fi] for fi in todo])
        with timer("head"):
            labels = res["seg"].argmax(1).numpy()
            for b, fi in enumerate(todo):
                inv = invert_affine(out_affine(As[b], OUT_STRIDE))
                for ci, name in enumerate(self.names):
                    found = self._components(labels[b] == ci + 1, res["seg"][b, ci + 1].numpy(), inv)
                    if found:
                        out[fi][name] = found
        return out

    def _components(self, cells: np.ndarray, prob: np.ndarray, inv: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """The instances in one object's output cells: each connected component of at least ``min_det_cells``
        cells and ``min_instance_frac`` of the largest, as (image box, mean probability), best first."""
        import cv2

        s = self.settings
        n, comp, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8), connectivity=8)
        if n <= 1:
            return []
        areas = stats[1:, cv2.CC_STAT_AREA]
        floor = max(s.min_det_cells, s.min_instance_frac * float(areas.max()))
        found = []
        for k in 1 + np.flatnonzero(areas >= floor):
            x, y, w, h = stats[k, :4]
            corners = apply_affine(inv, [[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]])
            found.append((np.concatenate([corners[0], corners[1]]), float(prob[comp == k].mean())))
        found.sort(key=lambda f: (-f[1], f[0][0]))  # best score first, then left to right
        return found[: max(1, s.max_instances)]

    # -- stage 2 and the pose --------------------------------------------------------------------
    def predict(self, frame: Frame) -> Prediction:
        return self.predict_batch([frame])[0]

    def _crop_jobs(self, frames, dets, timer) -> tuple[list[CropJob], list[np.ndarray]]:
        """A square crop around each detected instance (side ``crop_margin`` x the box's longer side)."""
        import cv2

        S = int(self.config["img_size"])
        jobs, crops = [], []
        with timer("preprocess"):
            for fi, d in enumerate(dets):
                for name, found in d.items():
                    for box, score in found:
                        x0, y0, x1, y1 = box
                        side = max(x1 - x0, y1 - y0, 4.0) * self.settings.crop_margin
                        A = crop_affine(((x0 + x1) / 2, (y0 + y1) / 2), side, S)
                        crops.append(cv2.warpAffine(frames[fi].rgb, A, (S, S), flags=cv2.INTER_LINEAR))
                        jobs.append(CropJob(fi, name, A, np.asarray(box, float), score, side, len(found) > 1))
        return jobs, crops

    def _cells(self, job: CropJob, seg: torch.Tensor, grid_np: np.ndarray) -> torch.Tensor | None:
        """The object's mask cells (h, w) bool (inside the box when the object has several instances); None
        when there are too few to use."""
        sel = seg.argmax(0) == self.names.index(job.name) + 1
        if job.several:  # other instances of this object may show in the crop: keep to this box
            inv = invert_affine(job.affine)
            inside = in_box(apply_affine(inv, grid_np.reshape(-1, 2)), job.box, self.settings.instance_box_margin)
            sel &= torch.from_numpy(inside.reshape(grid_np.shape[:2]))
        return None if int(sel.sum()) < self.settings.min_mask_pixels else sel

    def _vote(self, job: CropJob, seg: torch.Tensor, vec: torch.Tensor, grid_np: np.ndarray) -> _Votes | None:
        """The crop's keypoints by RANSAC voting over the object's mask cells; None when the mask is too small
        to vote."""
        sel = self._cells(job, seg, grid_np)
        if sel is None:
            return None
        ci = self.names.index(job.name)
        coords = torch.from_numpy(grid_np).float()[sel]
        vecs = vec[ci][:, :, sel].permute(0, 2, 1)  # (Kp, P, 2)
        vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        kp_crop, conf = ransac_vote(coords, vecs, self.settings.vote_hypotheses, self.settings.vote_cos, self._gen,
                                    self.settings.vote_score_pixels)
        return _Votes(self.keypoints[ci], apply_affine(invert_affine(job.affine), kp_crop.numpy()),
                      conf.numpy().astype(float), float(seg[ci + 1][sel].mean()))

    def _coords(self, job: CropJob, seg: torch.Tensor, coord: torch.Tensor, grid_np: np.ndarray) -> _Coords | None:
        """The object's mask cells as correspondences: cell centres mapped back to the image, the predicted
        model coordinates de-normalised; None when the mask is too small."""
        sel = self._cells(job, seg, grid_np)
        if sel is None:
            return None
        ci = self.names.index(job.name)
        mask = sel.numpy()
        xyz = coord[ci][:, sel].T.double().numpy()  # (P, 3) normalised
        xyz = xyz * self.net.coord_scale[ci].cpu().double().numpy() + self.net.coord_centre[ci].cpu().double().numpy()
        uv = apply_affine(invert_affine(job.affine), grid_np[mask])
        return _Coords(xyz, uv, np.ones(len(xyz)), float(seg[ci + 1][sel].mean()), self.keypoints[ci])

    def _pnp(self, job: CropJob, corr: _Votes | _Coords, K):
        s = self.settings
        thr = max(2.0, s.pnp_threshold_frac * job.side)
        return solve_pnp(corr.points_3d, corr.points_2d, K, corr.confidence,
                         method=s.pnp_method, min_confidence=s.pnp_min_confidence, ransac_threshold_px=thr,
                         max_reproj_error_px=2.5 * thr)

    def _instance_mask(self, job: CropJob, seg: torch.Tensor, shape) -> np.ndarray:
        """The object's image mask for the depth stage, kept off neighbouring instances of the same object."""
        mask = self._image_mask(seg, self.names.index(job.name), job.affine, job.side, shape)
        if job.several:
            x0, y0, x1, y1 = job.box
            m = self.settings.instance_box_margin
            mx, my = m * (x1 - x0), m * (y1 - y0)
            keep = np.zeros_like(mask)
            keep[max(0, int(np.ceil(y0 - my))): max(0, int(np.floor(y1 + my)) + 1),
                 max(0, int(np.ceil(x0 - mx))): max(0, int(np.floor(x1 + mx)) + 1)] = True
            mask &= keep
        return mask

    def _pose(self, job: CropJob, corr: _Votes | _Coords, seg: torch.Tensor, fr: Frame, stage_ms: dict
              ) -> ObjectPose | None:
        """PnP on the correspondences, then the depth stage; None when neither gives a pose. Adds to
        ``stage_ms``."""
        t0 = time.perf_counter()
        pnp, why = self._pnp(job, corr, fr.K)
        stage_ms["pnp"] += (time.perf_counter() - t0) * 1e3
        use_depth = fr.depth is not None and self.depth_stage.use_depth
        if pnp is None and not use_depth:
            log.debug("dinov2: %s dropped: %s", job.name, why)
            return None
        R, t = (pnp.R, pnp.t) if pnp is not None else (None, None)  # no PnP: the depth search alone
        mask_img = self._instance_mask(job, seg, fr.shape)
        fitness = None
        if use_depth:
            t0 = time.perf_counter()
            R, t, fitness = self.refine_depth(job.name, R, t, fr, mask_img)
            stage_ms["icp"] += (time.perf_counter() - t0) * 1e3
        if pnp is None and fitness is None:
            log.debug("dinov2: %s dropped: %s, and the depth does not fit", job.name, why)
            return None
        score = job.det_score * corr.mask_score * corr.support(pnp) * (
            _est.depth_support(fitness) if use_depth else 1.0)
        kp2d = corr.keypoints_2d(*((pnp.R, pnp.t) if pnp is not None else (R, t)), fr.K)
        return ObjectPose(name=job.name, R=R, t=t, score=score, keypoints_2d=kp2d, box_2d=job.box,
                          mask=mask_img, icp_fitness=fitness)

    def predict_batch(self, frames) -> list[Prediction]:
        """Poses per frame; each frame's timings hold the batch's shared stages and its own pnp and icp."""
        frames = list(frames)
        t_start = time.perf_counter()
        timer = self.timer()
        jobs, crops = self._crop_jobs(frames, self.detect(frames, timer), timer)
        if not jobs:
            timings = {**timer.ms, "total": (time.perf_counter() - t_start) * 1e3}
            return [Prediction(timings_ms=timings) for _ in frames]
        res = self._run(crops, timer, [j.affine for j in jobs], [frames[j.frame] for j in jobs])
        grid_np = out_grid(int(self.config["img_size"]), OUT_STRIDE)
        results: list[list[ObjectPose]] = [[] for _ in frames]
        stage_ms = [{"pnp": 0.0, "icp": 0.0} for _ in frames]
        for b, job in enumerate(jobs):
            with timer("head"):
                corr = self._correspondences(job, res["seg"][b], res[self.field_key][b], grid_np)
            if corr is None:
                continue
            pose = self._pose(job, corr, res["seg"][b], frames[job.frame], stage_ms[job.frame])
            if pose is not None:
                results[job.frame].append(pose)
        predictions = []
        for fi, poses in enumerate(results):
            timings = {**timer.ms, **stage_ms[fi], "total": (time.perf_counter() - t_start) * 1e3}
            for p in poses:
                p.timings_ms = dict(timings)
            predictions.append(Prediction(self.number_instances(poses), timings))
        return predictions
    def number_instances(self, poses: list[ObjectPose]) -> list[ObjectPose]:
        """Drop duplicate instances (centres within ``instance_nms`` diameters of a better-scoring one: an
        object whose mask fell apart) and number the rest per object by score: ``instance`` = 0, 1, ..."""
        nms = self.settings.instance_nms
        kept: list[ObjectPose] = []
        for p in sorted(poses, key=lambda p: -p.score):
            obj = self.catalogue[p.name]
            c = p.R @ obj.bbox_center + p.t
            if any(q.name == p.name and np.linalg.norm(q.R @ obj.bbox_center + q.t - c) < nms * obj.diameter
                   for q in kept):
                continue
            kept.append(p)
        counts: dict[str, int] = {}
        for p in kept:
            p.instance = counts.get(p.name, 0)
            counts[p.name] = p.instance + 1
        order = {n: i for i, n in enumerate(self.names)}
        return sorted(kept, key=lambda p: (order.get(p.name, len(order)), p.instance))

    def track(self, frame: Frame, previous: list[ObjectPose], min_fitness: float | None = None
              ) -> Prediction | None:
        """Tracking mode: each previous (or predicted) pose refined by ICP against this frame's depth, from that
        pose, skipping detection, keypoints and PnP. Returns None (run :meth:`predict`) when there is no depth,
        no previous pose, or some object's fit falls below ``min_fitness`` (the share of its camera-facing
        surface the depth confirms, core.tracking.WarmStart.coverage: the track is lost)."""
        from ...core.tracking import warm_start_icp

        if frame.depth is None or not previous or not self.depth_stage.use_depth:
            return None
        thr = float(self.depth_stage.min_fitness if min_fitness is None else min_fitness)
        t_start = time.perf_counter()
        out = []
        for p in previous:
            if p.name not in self.catalogue:
                return None
            obj = self.catalogue[p.name]
            pts, normals = self.surface(p.name)
            t0 = time.perf_counter()
            res = warm_start_icp(p.R, p.t, pts, normals, obj.diameter, frame.depth, frame.K,
                                 max_observed=self.depth_stage.max_observed)
            icp_ms = (time.perf_counter() - t0) * 1e3
            if res is None or res.coverage < thr:
                log.debug("dinov2: track of %s lost (coverage %s)", p.name, None if res is None else res.coverage)
                return None
            uv = project(frame.K, transform_points(res.R, res.t, pts))
            box = np.concatenate([uv.min(0), uv.max(0)])
            out.append(dataclasses.replace(p, R=res.R, t=res.t, icp_fitness=res.fitness, box_2d=box,
                                           keypoints_2d=None, mask=None, timings_ms={"icp": icp_ms}))
        total = (time.perf_counter() - t_start) * 1e3
        timings = {"icp": sum(q.timings_ms["icp"] for q in out), "total": total}
        for p in out:
            p.timings_ms = dict(timings)
        return Prediction(out, timings)

    @staticmethod
    def _image_mask(seg: torch.Tensor, ci: int, A, side: float, shape) -> np.ndarray:
        """The object's mask in the image: its stride-4 probability warped back bilinearly, thresholded at the
        class-argmax boundary and eroded by a quarter output cell so depth edges (table, background) stay out."""
        import cv2

        others = torch.cat([seg[: ci + 1], seg[ci + 2:]]).amax(0)
        margin = (seg[ci + 1] - others).numpy().astype(np.float32)  # > 0 where the object wins the argmax
        m = cv2.warpAffine(margin, out_affine(A, OUT_STRIDE), (shape[1], shape[0]),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=-1.0) > 0
        r = int(round(0.25 * side / seg.shape[-1]))
        if r >= 1:
            m = cv2.erode(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        return m.astype(bool)
