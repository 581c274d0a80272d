"""CLIP backend: language-conditioned 6D pose (the paper's CLIP pipeline, made prompt-selective).

The prompt ("the driller", "grasp the can by the lid") decides which catalogue object is
returned and which of its grasp frames; the network (models/clip_net.py) fuses CLIP patch
tokens with the prompt's CLIP text embedding and regresses box, rotation and translation.

Inference (:class:`Estimator`) runs two passes of the same network: the whole image
(letterboxed) to find the prompted object (box + presence), then a crop around that box for
the pose. An external 2D box (``Frame.boxes_2d[name]``, e.g. from a vision_msgs
Detection2DArray) replaces the first pass. Without a prompt every catalogue object is
looked for (prompt "the <name>") and those scoring at least ``min_score`` are returned.

Configurations: :data:`DEFAULT_CONFIG` is the paper's setting (OpenAI ViT-B/32, both towers
frozen; weights from a local file or the hub); :data:`SMALL_CONFIG` is a small randomly
initialised CLIP of the same architecture, trained end to end on the CPU (the text tower
too: with random weights it must learn the object and part names).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.affine import window_affine
from ..core.catalogue import Catalogue, ObjectModel
from ..core.prompts import PromptResolver, Resolution
from ..core.settings import config_items, settings_from
from ..core.types import Frame, ObjectPose, Prediction
from .clip_data import (
    ClipPoseDataset,
    box_window,
    canonical_prompt,
    decode_box,
    decode_pose,
    full_window,
    grasp_candidate_texts,
    warp,
)
from .clip_net import ClipPoseNet, get_tokenizer, towers_stored
from .estimator import DEPTH_STAGE_DEFAULTS, depth_support
from .estimator import Estimator as BaseEstimator
from .text_encoder import ClipTextEncoder, default_sentence_encoder

BACKEND = "clip"

@dataclass(frozen=True)
class ClipInferenceConfig:
    """The CLIP estimator's inference settings (config keys of the same names), built once per estimator."""

    crop_scale: float = 1.4  # crop side = scale x longer box side (training crops jitter around it)
    two_pass: bool = True  # localise on the whole image, then estimate the pose on a crop around the box
    crop_passes: int = 1  # crop passes after localisation; 2 re-centres the crop on the first crop's box
    min_score: float = 0.5  # without a prompt: report objects whose presence score reaches this
    grasp_select: str = "auto"  # head | text | auto (text similarity when the text tower has pretrained weights)
    # which object(s) and grasp frame a prompt names: sentence (pretrained MiniLM), clip (CLIP's own pretrained text
    # tower), network (the obj/grasp heads over the network's text embedding), auto (clip with pretrained CLIP
    # weights, else sentence); see core/prompts.py
    prompt_resolver: str = "auto"
    prompt_threshold: float = 0.4  # tuned on test/data/prompts/dev.yaml (MiniLM)
    prompt_part_threshold: float = 0.35
    text_cache_size: int = 256  # prompts whose text embeddings are kept (LRU)

    @classmethod
    def from_config(cls, config) -> ClipInferenceConfig:
        settings = settings_from(cls, config)
        if settings.grasp_select not in ("auto", "head", "text"):
            raise ValueError(f"grasp_select must be auto, head or text; got {settings.grasp_select!r}")
        if settings.prompt_resolver not in ("auto", "sentence", "clip", "network"):
            raise ValueError("prompt_resolver must be auto, sentence, clip or network; got "
                             f"{settings.prompt_resolver!r}")
        return settings


DEFAULT_CONFIG: dict = {
    # open_clip model name and overrides of its model config (embed_dim, vision_cfg, text_cfg)
    "clip_model": "ViT-B-32",
    "clip_arch": {},
    # a local weights file (.safetensors/.bin/.pt), an open_clip pretrained tag (needs the hub), or "random"
    "weights": "openai",
    "quick_gelu": True,  # OpenAI CLIP weights were trained with QuickGELU; false for LAION/DataComp weights
    "freeze_vision": True,
    "freeze_text": True,
    "store_frozen_towers": False,  # checkpoints of frozen pretrained towers reload them from 'weights'
    # fusion and heads
    "fusion_dim": 256,
    "fusion_heads": 8,
    "fusion_encoder_layers": 1,
    "fusion_decoder_layers": 2,
    "head_hidden": 512,
    # rotation: "6d" regresses it (6D, Zhou et al.); "anchors" classifies it over rotation_anchors fixed rotations
    # (60: the icosahedral group, within 44.5 deg of any rotation) and the 6D output is the residual from the
    # chosen anchor (models/rotation_anchors.py); checkpoints without the key are 6d
    "rotation_head": "6d",
    "rotation_anchors": 60,
    "loss_weights": {},
    # training samples
    "crop_shift": 0.15,  # training crops: centre jitter, fraction of the object's box side (covers localisation error)
    "crop_scale_range": [0.8, 1.25],  # training crops: side jitter factor
    "full_frame_prob": 0.3,
    "context_prob": 0.2,  # windows between crop and whole image, and crops around another object (see clip_data)
    "negative_prob": 0.1,
    "part_prompt_prob": 0.5,
    "min_visib": 0.1,
    # inference
    "peak_window": 0.25,  # inference: box centre from the map within this distance (image fraction) of its peak
    **DEPTH_STAGE_DEFAULTS,  # use_depth, icp_*
    "icp_max_observed": 3000,
    "precision": "auto",
    "compile_backbone": False,  # torch.compile the vision tower (scripts/gpu_check.sh measures whether it helps)
    **config_items(ClipInferenceConfig()),  # crop_scale, two_pass, min_score, prompt_* ...
}

SMALL_CONFIG: dict = {
    **copy.deepcopy(DEFAULT_CONFIG),
    "weights": "random",
    "quick_gelu": False,
    "freeze_vision": False,
    "freeze_text": False,
    "clip_arch": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 160, "patch_size": 16, "width": 192, "layers": 6, "head_width": 64},
        "text_cfg": {"context_length": 32, "vocab_size": 4096, "width": 192, "heads": 4, "layers": 4},
    },
    "fusion_dim": 192,
    "fusion_heads": 6,
    "head_hidden": 384,
}


def merged_config(config: dict | None = None, small: bool = False) -> dict:
    """A full config: ``config`` over SMALL_CONFIG (small=True) or DEFAULT_CONFIG."""
    base = SMALL_CONFIG if small else DEFAULT_CONFIG
    return {**copy.deepcopy(base), **copy.deepcopy(config or {})}


def build_net(config: dict, catalogue: Catalogue) -> ClipPoseNet:
    """The CLIP pose network for ``config`` (merged over DEFAULT_CONFIG) and the catalogue's objects."""
    return ClipPoseNet(merged_config(config), catalogue)


def make_dataset(dataset, catalogue: Catalogue, config: dict, train: bool) -> ClipPoseDataset:
    """Samples of one prompted target object (and grasp part) per (frame, visible object); see ClipPoseDataset."""
    return ClipPoseDataset(dataset, catalogue, merged_config(config), train)


@dataclass
class _Request:
    """One object to pose in one frame."""

    frame: int
    prompt: str
    obj: int = -1  # catalogue index; -1 = decided by the prompt
    box: np.ndarray | None = None  # external 2D box (image pixels)
    grasp: str | None = None
    score: float | None = None
    resolved: bool = False  # object and grasp decided by the prompt resolver


class Estimator(BaseEstimator):
    """Prompted pose estimation with the CLIP pose network (see the module docstring)."""

    backend = BACKEND

    def __init__(self, net: ClipPoseNet, catalogue: Catalogue, device="auto", precision: str | None = None,
                 config: dict | None = None):
        cfg = {**net.config, **(config or {})}
        super().__init__(catalogue, device, precision or cfg.get("precision", "auto"), cfg)
        if list(self.catalogue.names) != list(net.object_names):
            raise ValueError(f"catalogue objects {self.catalogue.names} differ from the network's {net.object_names}")
        self.net = net.to(self.device).eval()
        self.compile_backbone("encode_image")
        self.tokenizer = get_tokenizer(net.config)
        self.size = net.image_size
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.settings = ClipInferenceConfig.from_config(cfg)
        mode, resolver = self.settings.grasp_select, self.settings.prompt_resolver
        self.grasp_mode = ("text" if net.pretrained_text else "head") if mode == "auto" else mode
        self.resolver_kind = ("clip" if net.pretrained_text else "sentence") if resolver == "auto" else resolver
        self._resolver: PromptResolver | None = None

    @classmethod
    def from_net(cls, net: ClipPoseNet, catalogue: Catalogue, device="auto", **overrides) -> Estimator:
        """An estimator around an in-memory network (training validation); overrides are config keys."""
        return cls(net, catalogue, device=device, config=overrides)

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", **overrides) -> Estimator:
        """Load a checkpoint of backend 'clip'; ``overrides`` replace config keys (e.g. precision, weights)."""
        from .checkpoint import catalogue_from_dict, load_checkpoint, release_memory

        ckpt = load_checkpoint(path, expected_backend=BACKEND, as_stored=True)
        config = merged_config({**ckpt["config"], **overrides})
        catalogue = catalogue_from_dict(ckpt["catalogue"])
        net = ClipPoseNet(config, catalogue, load_weights=not towers_stored(ckpt["state_dict"]))
        net.load_state_dict(ckpt["state_dict"])
        del ckpt
        release_memory()
        return cls(net, catalogue, device=device, config=config)

    # -- text -------------------------------------------------------------------------------------
    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings (N, E) of prompts, from an LRU cache (a prompt is encoded once)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tokens = self.tokenizer(list(missing)).to(self.device)
            with self.autocast():
                emb = self.net.encode_text(tokens).float()
            for p, e in zip(missing, emb):
                self._text_cache[p] = e
        out = []
        for p in prompts:
            self._text_cache.move_to_end(p)
            out.append(self._text_cache[p])
        while len(self._text_cache) > self.settings.text_cache_size:
            self._text_cache.popitem(last=False)
        return torch.stack(out)

    @torch.no_grad()
    def grasp_similarities(self, prompt: str, obj: ObjectModel) -> np.ndarray:
        """Cosine similarity of the prompt to each grasp candidate text of ``obj`` (index 0: no part named)."""
        texts = grasp_candidate_texts(obj)
        emb = torch.nn.functional.normalize(self.text_embeddings([prompt, *texts]), dim=-1)
        return (emb[1:] @ emb[0]).cpu().numpy()

    def select_grasp(self, prompt: str, obj_index: int, grasp_logits: torch.Tensor | None = None) -> str | None:
        """The grasp frame the prompt asks for (None when it names no part): text similarity or the learned head."""
        obj = list(self.catalogue)[obj_index]
        frames = list(obj.grasp_frames)
        if not frames:
            return None
        if self.grasp_mode == "text":
            k = int(np.argmax(self.grasp_similarities(prompt, obj)))
        else:
            if grasp_logits is None:
                grasp_logits = self.net.grasp_head(self.text_embeddings([prompt]))[0]
            logits = grasp_logits.float().masked_fill(~self.net.grasp_valid[obj_index], -1e4)
            k = int(torch.argmax(logits))
        return frames[k - 1] if k > 0 else None

    @property
    def resolver(self) -> PromptResolver | None:
        """The prompt resolver (None with ``prompt_resolver: network``), built on first use."""
        if self._resolver is None and self.resolver_kind != "network":
            encoder = (ClipTextEncoder(self.net, self.tokenizer) if self.resolver_kind == "clip"
                       else default_sentence_encoder())
            self._resolver = PromptResolver(self.catalogue, encoder.encode,
                                            threshold=self.settings.prompt_threshold,
                                            part_threshold=self.settings.prompt_part_threshold)
        return self._resolver

    def resolve_prompt(self, prompt: str) -> Resolution | None:
        """What the prompt names (cached per prompt); None where the network's heads decide (``network``)."""
        return self.resolver.resolve(prompt) if self.resolver is not None else None

    # -- inference --------------------------------------------------------------------------------
    def _requests(self, frames: Sequence[Frame]) -> list[_Request]:
        reqs = []
        objs = list(self.catalogue)
        for fi, f in enumerate(frames):
            boxes = f.boxes_2d or {}
            if f.prompt:
                resolution = self.resolve_prompt(f.prompt)
                if resolution is None:
                    reqs.append(_Request(fi, f.prompt))
                for m in resolution.matches if resolution else ():
                    # the network sees the resolved object's canonical prompt: a paraphrase reaches the same query
                    oi = self.catalogue.names.index(m.name)
                    box = _one_box(boxes[m.name]) if m.name in boxes else None
                    reqs.append(_Request(fi, canonical_prompt(objs[oi], m.grasp), obj=oi, box=box, grasp=m.grasp,
                                         resolved=True))
                continue
            for oi, o in enumerate(objs):
                if boxes and o.name not in boxes:
                    continue  # a detector is present and did not see this object
                box = _one_box(boxes[o.name]) if o.name in boxes else None
                reqs.append(_Request(fi, canonical_prompt(o), obj=oi, box=box))
        return reqs

    def _windows(self, frames: Sequence[Frame], reqs: list[_Request], full: bool):
        """Input windows: the letterboxed image (one per frame) or a crop around each request's box.

        Returns (images, image index per request, affine per request, window side per request)."""
        images, index, affines, sides, seen = [], [], [], [], {}
        for r in reqs:
            rgb = frames[r.frame].rgb
            if full:
                c, s = full_window(*rgb.shape[:2])
            else:
                c, s = box_window(r.box, self.settings.crop_scale)
            A = window_affine(c, s, self.size)
            key = r.frame if full else len(images)
            if key not in seen:
                seen[key] = len(images)
                images.append(warp(np.ascontiguousarray(rgb), A, self.size))
            index.append(seen[key])
            affines.append(A)
            sides.append(s)
        return images, index, affines, sides

    def _run(self, images: list[np.ndarray], index: list[int], text_emb: torch.Tensor, timer) -> dict:
        """The backbone once per distinct window image, then the fusion head once per request."""
        with timer("preprocess"):
            batch = torch.from_numpy(np.stack([im.transpose(2, 0, 1) for im in images])).to(self.device)
        with torch.no_grad(), self.autocast():
            with timer("backbone"):
                tokens = self.net.encode_image(batch)
            with timer("head"):
                out = self.net.head(tokens[torch.as_tensor(index, device=self.device)], text_emb)
                return {k: out[k].float().cpu().numpy() for k in ("box", "present", "R", "uv", "logz", "heat")}

    def object_mask(self, heat: np.ndarray, A: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The prompted object's pixels: the crop's text-patch map (sigmoid > 0.5) resampled into the image."""
        import cv2

        prob = cv2.resize((1.0 / (1.0 + np.exp(-heat))).astype(np.float32), (self.size, self.size),
                          interpolation=cv2.INTER_LINEAR)
        img = cv2.warpAffine(prob, A, (int(shape[1]), int(shape[0])), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return img > 0.5

    def predict(self, frame: Frame) -> Prediction:
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames: Sequence[Frame]) -> list[Prediction]:
        """Poses per frame. Timings are of the whole call (per frame when called with one frame).

        Stages: preprocess (windows), text (prompt embeddings, cached; object and grasp choice),
        backbone (CLIP vision tower, both passes), head (fusion + heads + decoding), icp (with depth), total.
        """
        timer = self.timer()
        objs = list(self.catalogue)
        results: list[list[ObjectPose]] = [[] for _ in frames]
        with timer("total"):
            reqs = self._requests(frames)
            if not reqs:
                return [Prediction() for _ in frames]
            with timer("text"):
                emb = self.text_embeddings([r.prompt for r in reqs])
                with torch.no_grad():
                    obj_logits = self.net.obj_head(emb).float()
                    grasp_logits = self.net.grasp_head(emb).float()
                for i, r in enumerate(reqs):
                    if r.obj < 0:  # the prompt decides the object; an external box for it skips pass 1
                        r.obj = int(torch.argmax(obj_logits[i]))
                        boxes = frames[r.frame].boxes_2d or {}
                        if objs[r.obj].name in boxes:
                            r.box = _one_box(boxes[objs[r.obj].name])
                    if not r.resolved:
                        r.grasp = self.select_grasp(r.prompt, r.obj, grasp_logits[i])
            external = [r.box is not None for r in reqs]
            # pass 1: find each prompted object in the whole (letterboxed) image
            loc = [i for i, r in enumerate(reqs) if r.box is None]
            passes = {}
            if loc:
                with timer("preprocess"):
                    images, index, affines, sides = self._windows(frames, [reqs[i] for i in loc], full=True)
                out = self._run(images, index, emb[loc], timer)
                for j, i in enumerate(loc):
                    reqs[i].box = decode_box(out["box"][j], affines[j], self.size)
                    reqs[i].score = _sigmoid(out["present"][j])
                    passes[i] = (affines[j], sides[j], {k: v[j] for k, v in out.items()})
            # pass 2 (and more with crop_passes > 1): the pose from a crop around the box (found or given);
            # each further pass re-centres the crop on the box the previous crop predicted
            two_pass = self.settings.two_pass
            n_crop = max(1, self.settings.crop_passes) if two_pass else int(len(passes) < len(reqs))
            for n_pass in range(n_crop):
                with timer("preprocess"):
                    images, index, affines, sides = self._windows(frames, reqs, full=False)
                out = self._run(images, index, emb, timer)
                for i, r in enumerate(reqs):
                    if two_pass or i not in passes:
                        passes[i] = (affines[i], sides[i], {k: v[i] for k, v in out.items()})
                        if n_pass + 1 < n_crop:
                            r.box = decode_box(out["box"][i], affines[i], self.size)
            refine = []
            with timer("head"):
                min_score = self.settings.min_score
                for i, r in enumerate(reqs):
                    A, side, o = passes[i]
                    obj = objs[r.obj]
                    score = r.score if r.score is not None else _sigmoid(o["present"])
                    if frames[r.frame].prompt is None and not external[i] and score < min_score:
                        continue  # searched for every catalogue object: report only those found
                    fr = frames[r.frame]
                    R, t = decode_pose(o["uv"], float(o["logz"]), o["R"], fr.K, A, side, self.size, obj.diameter)
                    pose = ObjectPose(name=obj.name, R=R, t=t, score=score, grasp_frame=r.grasp,
                                      box_2d=np.asarray(r.box, dtype=float))
                    results[r.frame].append(pose)
                    if fr.depth is not None and self.depth_stage.use_depth:
                        refine.append((pose, obj, fr, o["heat"], A))
            with timer("icp"):
                for pose, obj, fr, heat, A in refine:
                    pose.mask = self.object_mask(heat, A, fr.rgb.shape[:2])
                    pose.R, pose.t, pose.icp_fitness = self.refine_depth(obj.name, pose.R, pose.t, fr, pose.mask)
                    pose.score *= depth_support(pose.icp_fitness)
        for poses in results:
            for p in poses:
                p.timings_ms = dict(timer.ms)
        return [Prediction(poses, timer.ms) for poses in results]


def _one_box(boxes) -> np.ndarray:
    """One [x0, y0, x1, y1] from an external detection (a box, or Nx4 boxes of several instances: the first;
    this backend poses one instance per prompt or object)."""
    return np.atleast_2d(np.asarray(boxes, dtype=float))[0]


def _sigmoid(x) -> float:
    return float(1.0 / (1.0 + np.exp(-float(x))))


def extra_validation(net, catalogue, dataset, device="auto", max_frames: int = 50, progress: bool = True) -> dict:
    """What training reports for this backend besides pose metrics: prompt selection (evaluate_prompts)."""
    return evaluate_prompts(Estimator.from_net(net, catalogue, device=device, use_depth=False), dataset,
                            max_frames=max_frames, progress=progress)


def evaluate_prompts(estimator: Estimator, dataset, max_frames: int = 100, progress: bool = True) -> dict:
    """How often the prompt picks the right object in frames holding several catalogue objects.

    For each such frame and each object in it, the prompt ``canonical_prompt(obj)`` must return
    that object: right name, and its predicted centre (projection of t) nearer to that object's
    ground-truth centre than to any other instance's. Also checks, per object with two or more
    grasp frames, that the prompt naming each frame ("grasp the driller by the handle") selects
    exactly that frame. Returns accuracies and counts.
    """
    from tqdm import tqdm

    from ..core.transforms import project

    keys = dataset.keys()
    idx = np.unique(np.linspace(0, len(keys) - 1, min(max_frames, len(keys))).round().astype(int))
    named = located = total = 0
    grasp_ok = grasp_total = 0
    for i in tqdm(idx, desc="prompts", disable=not progress, leave=False):
        sf = dataset.frame(*keys[i])
        gts = [g for g in sf.gts if g.name in estimator.catalogue]
        if len({g.name for g in gts}) < 2:
            continue
        frame = sf.to_frame()
        frame.depth = None
        centres = np.array([project(sf.K, np.asarray(g.t)[None])[0] for g in gts])
        for name in dict.fromkeys(g.name for g in gts):
            obj = estimator.catalogue[name]
            frame.prompt = canonical_prompt(obj)
            poses = estimator.predict(frame)
            total += 1
            if not poses:
                continue
            p = poses[0]
            named += p.name == name
            d = np.linalg.norm(centres - project(sf.K, np.asarray(p.t)[None])[0], axis=1)
            located += p.name == name and gts[int(np.argmin(d))].name == name
            if len(obj.grasp_frames) >= 2:
                chosen = []
                for f in obj.grasp_frames:
                    frame.prompt = canonical_prompt(obj, f)
                    chosen.append(estimator.predict(frame)[0].grasp_frame)
                grasp_total += 1
                grasp_ok += chosen == list(obj.grasp_frames)
    return {
        "prompts": total,
        "name_acc": named / total if total else float("nan"),
        "selection_acc": located / total if total else float("nan"),
        "grasp_frames_all_right": grasp_ok / grasp_total if grasp_total else float("nan"),
        "grasp_checks": grasp_total,
    }
