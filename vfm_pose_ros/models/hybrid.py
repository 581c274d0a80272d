"""Hybrid backend: CLIP finds the object the prompt names, DINOv2 pins its pose down.

The paper's proposed (unbuilt) two-stage pipeline (Sarowar and Kim, arXiv 2512.07215, conclusion):

1. *Semantic stage* (the CLIP estimator, models/clip.py): which object(s) the prompt names, the
   image region of each (a 2D box), the grasp frame the prompt asks for, and a presence score.
   Without a prompt CLIP looks for every catalogue object by its name and keeps those it finds.
2. *Geometric stage* (the DINOv2 estimator, models/dinov2.py): keypoint votes, PnP and ICP inside
   that region only; the region reaches DINOv2 as ``Frame.boxes_2d`` so its own detector is skipped.
   ``region: match`` (default) first runs DINOv2's dense segmentation on the whole frame and uses, for
   each CLIP choice, the DINOv2 component of the same object that overlaps CLIP's box best (tight
   boxes from dense features; CLIP's box, regressed from 32 px patches, is coarse); with a prompt that
   is one instance, without one every instance of each object CLIP found. When no component
   overlaps, CLIP's own box is used. ``region: clip`` always passes CLIP's box.
3. ``confirm: true`` (default): a CLIP choice is posed only where DINOv2's dense segmentation also finds
   that object (a component of the same object overlapping CLIP's box by ``match_iou``; without a prompt,
   any component of it; objects only CLIP knows are never confirmed). CLIP's presence score alone is
   confident on distractor shapes; DINOv2's segmentation is not, so the two must agree before anything
   reaches a grasp planner (issue 22; the A/B with calibrated scores is in docs/decisions.md). Frames that
   bring their own ``boxes_2d`` are not re-checked.
4. When the geometric stage yields nothing for a CLIP choice (too few mask cells, PnP failure), the
   CLIP pose is returned (``fallback: clip``; refined by CLIP's own ICP with depth), marked
   ``stage="clip"``.

Results are :class:`HybridPose` (an ObjectPose): the name and grasp frame are CLIP's, R and t
DINOv2's; ``clip_score`` and ``geometry_score`` keep both confidences, ``score`` is their geometric
mean.

"Checkpoint": the hybrid has no weights of its own. Its checkpoint references a CLIP and a DINOv2
checkpoint (paths relative to the file's folder): a small YAML or JSON file
(``backend: hybrid``, ``clip_checkpoint``, ``dinov2_checkpoint``, optional settings) or a ``.pt``
written by :func:`save_hybrid_checkpoint` (what ``models/hybrid_small.pt`` is: the shipped
``clip_small.pt`` + ``dinov2_small.pt``). ``Estimator.from_checkpoint(None)`` uses those defaults.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.detections import box_iou
from ..core.settings import config_items, settings_from
from ..core.types import Frame, ObjectPose, Prediction
from .estimator import DEPTH_STAGE_DEFAULTS
from .estimator import Estimator as BaseEstimator

BACKEND = "hybrid"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_CHECKPOINTS = {"clip": "models/clip_small.pt", "dinov2": "models/dinov2_small.pt"}



@dataclass(frozen=True)
class HybridConfig:
    """The hybrid's own settings (config keys of the same names), built once per estimator."""

    region: str = "match"  # match (DINOv2 component overlapping CLIP's box) | clip (CLIP's box as is)
    match_iou: float = 0.1  # least IoU between CLIP's box and a DINOv2 component for them to be the same object
    fallback: str = "clip"  # clip (CLIP's pose when DINOv2 finds nothing) | none
    confirm: bool = True  # pose a CLIP choice only where DINOv2's segmentation finds the same object

    @classmethod
    def from_config(cls, config) -> HybridConfig:
        settings = settings_from(cls, config)
        if settings.region not in ("match", "clip"):
            raise ValueError(f"hybrid region must be 'match' or 'clip'; got {settings.region!r}")
        if settings.fallback not in ("clip", "none"):
            raise ValueError(f"hybrid fallback must be 'clip' or 'none'; got {settings.fallback!r}")
        return settings


DEFAULT_CONFIG: dict = {
    "clip_checkpoint": "clip_small.pt",  # relative to the hybrid checkpoint's folder (or absolute)
    "dinov2_checkpoint": "dinov2_small.pt",
    **config_items(HybridConfig()),  # region, match_iou, fallback, confirm
    "precision": "auto",
}
# The hybrid has no network of its own: its "small" configuration is the one made of the small checkpoints.
SMALL_CONFIG: dict = copy.deepcopy(DEFAULT_CONFIG)
HYBRID_KEYS = set(DEFAULT_CONFIG)


def build_net(config: dict, catalogue: Catalogue):
    raise ValueError("the hybrid backend has no network of its own: train a clip and a dinov2 checkpoint "
                     "(vfm-pose train --backend clip|dinov2 ...) and combine them with a hybrid checkpoint "
                     "(a YAML file: backend: hybrid, clip_checkpoint: ..., dinov2_checkpoint: ...)")


def make_dataset(dataset, catalogue: Catalogue, config: dict, train: bool):
    return build_net(config, catalogue)


@dataclass
class HybridPose(ObjectPose):
    """An ObjectPose with the two stages' confidences and which stage produced the geometry."""

    clip_score: float | None = None  # CLIP's presence score of the chosen object
    geometry_score: float | None = None  # DINOv2's score (detection x mask x keypoint confidence)
    stage: str = "dinov2"  # dinov2 | clip (fallback) | track (warm-started ICP)


def _replace(frame: Frame, **changes) -> Frame:
    """dataclasses.replace that keeps attributes set on the frame beyond its fields (e.g. ground truth)."""
    new = dataclasses.replace(frame, **changes)
    names = {f.name for f in dataclasses.fields(frame)}
    for k, v in vars(frame).items():
        if k not in names:
            setattr(new, k, v)
    return new


# ---------------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------------


def batch_timings(predictions: list[Prediction]) -> dict[str, float]:
    """The stage times of one batched DINOv2 call from its per-frame answers: every frame carries the batch's
    shared stages, and its own pnp and icp, which add up."""
    timings = dict(predictions[0].timings_ms) if predictions else {}
    for pred in predictions[1:]:
        for k in ("pnp", "icp"):
            timings[k] = timings.get(k, 0.0) + pred.timings_ms.get(k, 0.0)
    return timings


def read_spec(path) -> dict:
    """The settings of a hybrid checkpoint (YAML, JSON or .pt), checked; paths left as written."""
    path = Path(path)
    if path.suffix.lower() in SPEC_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"hybrid checkpoint not found: {path}")
        text = path.read_text()
        if path.suffix.lower() == ".json":
            spec = json.loads(text)
        else:
            import yaml

            spec = yaml.safe_load(text)
        if not isinstance(spec, dict) or spec.get("backend", BACKEND) != BACKEND:
            raise ValueError(f"{path} is not a hybrid checkpoint: expected a mapping with backend: hybrid, "
                             "clip_checkpoint: ..., dinov2_checkpoint: ...")
        spec = {k: v for k, v in spec.items() if k != "backend"}
    else:
        from .checkpoint import load_checkpoint

        spec = dict(load_checkpoint(path, expected_backend=BACKEND, as_stored=True)["config"])
    unknown = set(spec) - HYBRID_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown hybrid settings {sorted(unknown)}; known: {sorted(HYBRID_KEYS)}")
    return spec


def save_hybrid_checkpoint(path, clip_checkpoint="clip_small.pt", dinov2_checkpoint="dinov2_small.pt",
                           **config) -> Path:
    """Write a hybrid checkpoint: YAML/JSON by suffix, else a .pt that ``load_estimator`` and the pose node read.

    The referenced checkpoints are stored as given (relative paths resolve against ``path``'s folder).
    """
    from .checkpoint import FORMAT, VERSION

    unknown = set(config) - HYBRID_KEYS
    if unknown:
        raise ValueError(f"unknown hybrid settings {sorted(unknown)}; known: {sorted(HYBRID_KEYS)}")
    spec = {**{k: v for k, v in DEFAULT_CONFIG.items() if k not in ("clip_checkpoint", "dinov2_checkpoint")},
            **config, "clip_checkpoint": str(clip_checkpoint), "dinov2_checkpoint": str(dinov2_checkpoint)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"backend": BACKEND, **spec}, indent=2) + "\n")
    elif path.suffix.lower() in SPEC_SUFFIXES:
        import yaml

        path.write_text(yaml.safe_dump({"backend": BACKEND, **spec}, sort_keys=False))
    else:
        import torch

        from .. import __version__

        torch.save({"format": FORMAT, "version": VERSION, "backend": BACKEND, "config": spec,
                    "catalogue": {"objects": []}, "data_hash": "", "epoch": 0, "metrics": {}, "state_dict": {},
                    "package_version": __version__, "created_unix": time.time()}, path)
    return path


def resolve_checkpoint(value, base: Path | None, backend: str) -> Path:
    """A referenced checkpoint: absolute; else relative to the hybrid file's folder, the working directory,
    or the package's own models/ (source tree or installed share)."""
    p = Path(str(value)).expanduser()
    candidates = [p] if p.is_absolute() else [c for c in ((base / p) if base else None, Path.cwd() / p) if c]
    for c in candidates:
        if c.is_file():
            return c
    if not p.is_absolute():
        from ..paths import find_package_file

        rel = p if p.parts[:1] == ("models",) else Path("models") / p
        try:
            return find_package_file(rel)
        except FileNotFoundError:
            pass
    from .checkpoint import CheckpointError

    raise CheckpointError(
        f"{backend} checkpoint for the hybrid backend not found: {value} (looked in "
        f"{', '.join(str(c) for c in candidates)} and the package's models/). Train it with `vfm-pose train "
        f"--backend {backend} --small ... --out {DEFAULT_CHECKPOINTS[backend]}`, or point the hybrid checkpoint's "
        f"{backend}_checkpoint at it")


# ---------------------------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------------------------


class Estimator(BaseEstimator):
    """CLIP (which object, where, which grasp) then DINOv2 (its 6D pose) -- see the module docstring."""

    backend = BACKEND

    def __init__(self, clip_estimator, dinov2_estimator, config: dict | None = None):
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        self.settings = HybridConfig.from_config(cfg)
        self.clip = clip_estimator
        self.dinov2 = dinov2_estimator
        common = [n for n in self.clip.catalogue.names if n in self.dinov2.catalogue]
        if not common:
            raise ValueError(f"the clip checkpoint's objects {self.clip.catalogue.names} and the dinov2 checkpoint's "
                             f"{self.dinov2.catalogue.names} have none in common")
        # DINOv2's object models (surface points for ICP) first, then objects only CLIP knows (fallback poses)
        objects = list(self.dinov2.catalogue) + [o for o in self.clip.catalogue if o.name not in self.dinov2.catalogue]
        super().__init__(Catalogue(objects), device=self.dinov2.device, precision=self.dinov2.precision, config=cfg)
        # the geometric stage does the ICP; CLIP's own ICP (its use_depth) serves only its fallback poses
        self.clip_icp = self.clip.depth_stage.use_depth

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, clip_checkpoint, dinov2_checkpoint, device: str = "auto", **overrides) -> Estimator:
        """From the two backends' checkpoints. Overrides: hybrid settings, ``precision`` and the depth stage's
        keys (``use_depth``, ``icp_*``) for both stages, ``clip_<key>`` or ``dinov2_<key>`` for one of them."""
        from . import clip, dinov2

        hybrid, to_clip, to_dino = {}, {}, {}
        for k, v in overrides.items():
            if k in HYBRID_KEYS - {"clip_checkpoint", "dinov2_checkpoint"}:
                hybrid[k] = v
                if k == "precision":
                    to_clip[k] = to_dino[k] = v
            elif k in DEPTH_STAGE_DEFAULTS:  # use_depth, icp_*: the depth stage both stages share
                to_clip[k] = to_dino[k] = v
            elif k.startswith("clip_"):
                to_clip[k[len("clip_"):]] = v
            elif k.startswith("dinov2_"):
                to_dino[k[len("dinov2_"):]] = v
            elif k == "weights":
                raise ValueError("the hybrid backend loads two backbones: give clip_weights=... and/or "
                                 "dinov2_weights=... instead of weights=...")
            else:
                raise ValueError(f"unknown hybrid setting {k!r}: use a hybrid setting ({sorted(HYBRID_KEYS)}), "
                                 "precision, use_depth, icp_<key>, or clip_<key> / dinov2_<key> for one stage")
        hybrid.setdefault("clip_checkpoint", str(clip_checkpoint))
        hybrid.setdefault("dinov2_checkpoint", str(dinov2_checkpoint))
        c = clip.Estimator.from_checkpoint(clip_checkpoint, device=device, **to_clip)
        d = dinov2.Estimator.from_checkpoint(dinov2_checkpoint, device=device, **to_dino)
        return cls(c, d, hybrid)

    @classmethod
    def from_checkpoint(cls, path=None, device: str = "auto", **overrides) -> Estimator:
        """From a hybrid checkpoint (YAML/JSON/.pt referencing the two), or the shipped defaults when ``path`` is
        None (models/clip_small.pt + models/dinov2_small.pt)."""
        if path is None:
            spec, base = {}, None
            refs = dict(DEFAULT_CHECKPOINTS)
        else:
            spec, base = read_spec(path), Path(path).resolve().parent
            refs = {"clip": spec.pop("clip_checkpoint", DEFAULT_CONFIG["clip_checkpoint"]),
                    "dinov2": spec.pop("dinov2_checkpoint", DEFAULT_CONFIG["dinov2_checkpoint"])}
        clip_ckpt = resolve_checkpoint(refs["clip"], base, "clip")
        dino_ckpt = resolve_checkpoint(refs["dinov2"], base, "dinov2")
        est = cls.from_checkpoints(clip_ckpt, dino_ckpt, device=device, **{**spec, **overrides})
        est.checkpoint_path = None if path is None else str(path)
        est.source_files = [p for p in (path, clip_ckpt, dino_ckpt) if p is not None]  # what a calibration fits
        return est

    def __repr__(self) -> str:
        return (f"hybrid.Estimator(clip={self.clip.config.get('clip_model')}, "
                f"dinov2={self.dinov2.config.get('backbone')}, region={self.settings.region}, "
                f"objects={self.object_names}, device={self.device})")

    def resolve_prompt(self, prompt: str):
        """CLIP's resolution: the semantic stage decides what the prompt names."""
        return self.clip.resolve_prompt(prompt)

    # -- inference -----------------------------------------------------------------------------
    def predict(self, frame: Frame) -> Prediction:
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames) -> list[Prediction]:
        """Poses per frame: CLIP's choices (one per prompt, or each object found) posed by DINOv2 in their regions."""
        frames = list(frames)
        t_start = time.perf_counter()
        timings: dict[str, float] = {}

        def add_times(src: dict, prefix: str = "") -> None:
            for k, v in (src or {}).items():
                if k != "total":
                    timings[k] = timings.get(k, 0.0) + float(v)
            if prefix and "total" in (src or {}):
                timings[f"{prefix}_total"] = timings.get(f"{prefix}_total", 0.0) + float(src["total"])

        # 1. semantic stage: CLIP without depth (its ICP is not needed when DINOv2 poses the object)
        t0 = time.perf_counter()
        choices = self.clip.predict_batch([_replace(f, depth=None) for f in frames])
        clip_ms = (time.perf_counter() - t0) * 1e3
        add_times(choices[0].timings_ms if choices else {})  # (CLIP times the whole call)
        timings["clip_total"] = clip_ms

        # 2. regions: CLIP's boxes, or DINOv2 components matching them
        dets = [dict() for _ in frames]
        if self.settings.region == "match" or self.settings.confirm:
            need = [i for i, f in enumerate(frames) if not f.boxes_2d and choices[i]]
            if need:
                timer = self.dinov2.timer()
                found = self.dinov2.detect([frames[i] for i in need], timer)
                for i, d in zip(need, found):
                    dets[i] = d
                add_times(timer.ms)
        plans = []  # per frame: list of (clip pose, [boxes])
        for fi, (f, cps) in enumerate(zip(frames, choices)):
            plan = []
            for cp in cps:
                regions, confirmed = self._regions(cp, dets[fi].get(cp.name, []), several=not f.prompt)
                if self.settings.confirm and not f.boxes_2d and not confirmed:
                    continue  # DINOv2 does not see it: as absent as a CLIP score under the threshold
                plan.append((cp, regions if cp.name in self.dinov2.catalogue else []))
            plans.append(plan)

        # 3. geometric stage: DINOv2 inside those regions only (its detector skipped)
        jobs = []
        for fi, (f, plan) in enumerate(zip(frames, plans)):
            boxes = {}
            for cp, regions in plan:
                if regions:
                    boxes.setdefault(cp.name, []).extend(box for box, _ in regions)
            if boxes:
                jobs.append((fi, _replace(f, boxes_2d={n: np.array(b, float) for n, b in boxes.items()})))
        geo = [[] for _ in frames]
        if jobs:
            t0 = time.perf_counter()
            out = self.dinov2.predict_batch([fr for _, fr in jobs])
            for (fi, _), poses in zip(jobs, out):
                geo[fi] = poses
            add_times(batch_timings(out), "dinov2")
            timings["dinov2_total"] = (time.perf_counter() - t0) * 1e3

        # 4. join: each CLIP choice gets the DINOv2 poses found in its regions, else the fallback
        results: list[list[ObjectPose]] = [[] for _ in frames]
        fallback = [[] for _ in frames]
        for fi, plan in enumerate(plans):
            for cp, regions in plan:
                mine = [(p, det) for p in geo[fi] for box, det in regions
                        if p.name == cp.name and np.allclose(p.box_2d, box)]
                for p, det in mine:
                    results[fi].append(self._join(cp, p, det))
                if not mine and self.settings.fallback == "clip":
                    fallback[fi].append(cp)
        self._fallback(frames, fallback, results, timings)
        for fi, poses in enumerate(results):
            results[fi] = self.dinov2.number_instances(poses)
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        for poses in results:
            for p in poses:
                p.timings_ms = dict(timings)
        return [Prediction(poses, timings) for poses in results]

    def _regions(self, cp: ObjectPose, found: list, several: bool) -> tuple[list[tuple[np.ndarray, float]], bool]:
        """The boxes DINOv2 poses for one CLIP choice, each with DINOv2's detection score of the object there, and
        whether DINOv2's segmentation confirms the choice: matching components (best first, confirmed), or CLIP's
        box (scored by the component it overlaps by ``match_iou``, confirmed; else 1 and unconfirmed: no
        segmentation vouches for it then, nor against it). Objects DINOv2 does not know have no components."""
        clip_box = np.asarray(cp.box_2d, float)
        if not found:
            return [(clip_box, 1.0)], False
        if several:  # no prompt: every instance of an object CLIP found present
            if self.settings.region == "clip":
                return [(clip_box, max(float(s) for _, s in found))], True
            return [(np.asarray(b, float), float(s)) for b, s in found], True
        ious = [box_iou(clip_box, b) for b, _ in found]
        k = int(np.argmax(ious))
        if ious[k] < self.settings.match_iou:
            return [(clip_box, 1.0)], False
        box = clip_box if self.settings.region == "clip" else np.asarray(found[k][0], float)
        return [(box, float(found[k][1]))], True

    @staticmethod
    def _join(cp: ObjectPose, p: ObjectPose, detection_score: float) -> HybridPose:
        """CLIP's choice with DINOv2's pose; the geometry score is DINOv2's as it scores an instance it detects
        itself (its detection score times its score in the given box)."""
        clip_score = float(cp.score)
        geo = float(p.score) * float(detection_score)
        return HybridPose(
            name=cp.name, R=p.R, t=p.t, score=float(np.sqrt(max(clip_score, 0.0) * max(geo, 0.0))),
            grasp_frame=cp.grasp_frame, keypoints_2d=p.keypoints_2d, box_2d=p.box_2d, mask=p.mask,
            icp_fitness=p.icp_fitness, clip_score=clip_score, geometry_score=geo, stage="dinov2",
        )

    def _fallback(self, frames, fallback, results, timings) -> None:
        """CLIP's own pose for choices DINOv2 could not pose; with depth, CLIP's ICP refines it (one more pass)."""
        for fi, cps in enumerate(fallback):
            if not cps:
                continue
            f = frames[fi]
            if f.depth is not None and self.clip_icp and self.dinov2.depth_stage.use_depth:
                t0 = time.perf_counter()
                refined = self.clip.predict(_replace(
                    f, prompt=None, boxes_2d={cp.name: np.asarray(cp.box_2d, float) for cp in cps}))
                timings["clip_total"] = timings.get("clip_total", 0.0) + (time.perf_counter() - t0) * 1e3
                by_name = {p.name: p for p in refined}
            else:
                by_name = {}
            for cp in cps:
                p = by_name.get(cp.name, cp)
                results[fi].append(HybridPose(
                    name=cp.name, R=p.R, t=p.t, score=float(cp.score), grasp_frame=cp.grasp_frame,
                    box_2d=cp.box_2d, mask=p.mask, icp_fitness=p.icp_fitness, clip_score=float(cp.score),
                    geometry_score=None, stage="clip",
                ))

    def track(self, frame: Frame, previous: list[ObjectPose], min_fitness: float | None = None):
        """Tracking mode: DINOv2's warm-started ICP from the previous poses; CLIP's choices (name, grasp, scores)
        carry over unchanged. None when a track is lost (then run :meth:`predict`)."""
        out = self.dinov2.track(frame, previous, min_fitness=min_fitness)
        if out is None:
            return None
        return Prediction([dataclasses.replace(p, stage="track") if isinstance(p, HybridPose) else p for p in out],
                          out.timings_ms)
