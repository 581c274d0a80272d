"""CLIP backend data: prompts, crop geometry, pose encoding and the training dataset.

Geometry (why the targets look the way they do)
-----------------------------------------------
Every network input is a square window of the image (centre ``c``, side ``s`` pixels)
resampled to ``S x S``: the whole image letterboxed (localisation pass) or a crop around the
object (pose pass). ``A`` (2x3) maps image pixels to input pixels. The pose is encoded so it
does not depend on the camera or on where the window lies:

* centre: the projection ``(u, v)`` of the object origin in input units (``A @ [u, v, 1] / S``);
* depth: ``log(z * s / (f * d))`` with ``f = sqrt(fx * fy)`` and ``d`` the object diameter:
  the log of (window size / apparent object size), which is what the pixels show whatever the
  focal length and crop scale (scale-invariant depth as in CDPN / GDR-Net);
* rotation: allocentric, ``R_allo = R_ray^T R`` where ``R_ray`` turns the optical axis onto
  the viewing ray through the object centre; a crop only shows the object as seen along that
  ray, so the same appearance means the same target anywhere in the image.

Decoding back-projects the centre with K (core.transforms.backproject), so the translation
transfers across cameras and image sizes.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ..core.affine import apply_affine, invert_affine, window_affine
from ..core.catalogue import Catalogue, ObjectModel
from ..core.transforms import axis_angle_to_matrix, backproject, project
from .sampling import split_key

# CLIP's mean colour: padding with it becomes ~0 after the network's normalisation.
PAD_RGB = (122, 116, 104)

OBJECT_TEMPLATES = (
    "the {n}", "a photo of the {n}", "{n}", "the {n} on the table", "find the {n}", "pick up the {n}",
    "where is the {n}", "locate the {n}", "a {n}",
)
DESCRIPTION_TEMPLATES = ("{d}", "a photo of {d}", "find {d}")
PART_TEMPLATES = (
    "grasp the {n} by the {p}", "pick up the {n} by the {p}", "hold the {n} by the {p}", "the {n} by the {p}",
    "grab the {n} by its {p}", "take the {n} by the {p}",
)
_ARTICLE = re.compile(r"^(the|a|an|its)\s+", re.IGNORECASE)


# -- prompts ---------------------------------------------------------------------------------------
def name_variants(obj: ObjectModel) -> list[str]:
    """How people name the object: 'driller_like' -> ['driller', 'driller_like']."""
    short = re.sub(r"[_\s-]*like$", "", obj.name).replace("_", " ").strip() or obj.name
    return list(dict.fromkeys([short, obj.name.replace("_", " "), obj.name]))


def part_phrases(obj: ObjectModel, frame: str) -> list[str]:
    """Ways to name a grasp frame: its name and its description, without a leading article."""
    g = obj.grasp_frames[frame]
    phrases = [frame.replace("_", " ")]
    if g.description:
        phrases.append(_ARTICLE.sub("", g.description.strip()))
    return list(dict.fromkeys(phrases))


def canonical_prompt(obj: ObjectModel, frame: str | None = None) -> str:
    """The default prompt for an object (and optionally a grasp frame), used at validation and without a prompt."""
    n = name_variants(obj)[0]
    return f"grasp the {n} by the {part_phrases(obj, frame)[0]}" if frame else f"the {n}"


def grasp_candidate_texts(obj: ObjectModel) -> list[str]:
    """Texts compared with a prompt for grasp-frame selection by CLIP similarity: index 0 names no part,
    index k names the k-th grasp frame (catalogue order) through its description."""
    n = name_variants(obj)[0]
    texts = [f"the {n}"]
    for name, g in obj.grasp_frames.items():
        phrase = _ARTICLE.sub("", (g.description or name).strip())
        texts.append(f"grasp the {n} by the {phrase}")
    return texts


def sample_prompt(obj: ObjectModel, rng: np.random.Generator, part_prob: float = 0.5) -> tuple[str, int]:
    """A random prompt for ``obj`` and its grasp class (0 = no part named, k = k-th grasp frame)."""
    frames = list(obj.grasp_frames)
    names = name_variants(obj)
    if frames and rng.random() < part_prob:
        k = int(rng.integers(len(frames)))
        part = str(rng.choice(part_phrases(obj, frames[k])))
        template = PART_TEMPLATES[int(rng.integers(len(PART_TEMPLATES)))]
        return template.format(n=str(rng.choice(names)), p=part), k + 1
    if obj.description and rng.random() < 0.2:
        template = DESCRIPTION_TEMPLATES[int(rng.integers(len(DESCRIPTION_TEMPLATES)))]
        return template.format(d=obj.description.strip()), 0
    template = OBJECT_TEMPLATES[int(rng.integers(len(OBJECT_TEMPLATES)))]
    return template.format(n=str(rng.choice(names))), 0


# -- windows and warping -------------------------------------------------------------------------
def full_window(height: int, width: int) -> tuple[np.ndarray, float]:
    """The letterbox window: the whole image centred in a square of its longer side."""
    return np.array([width / 2.0, height / 2.0]), float(max(height, width))


def box_window(box_xyxy, scale: float, min_side: float = 16.0) -> tuple[np.ndarray, float]:
    """A square window around a box, its longer side times ``scale``."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0]), max(max(x1 - x0, y1 - y0) * scale, min_side)


def context_window(box, scale: float, full_side: float, rng: np.random.Generator,
                   other_boxes=()) -> tuple[np.ndarray, float]:
    """A training window between a crop and the whole image, so the network learns to tell the prompted
    object from its neighbours at the scales where it can see them (the letterboxed image shows a small
    object in a few patches only; crops centred on the target never show it a competitor).

    Half the time, when the frame holds other objects, the window is a crop around one of them (a
    distractor crop: the prompted object is at best partly in view and the targets say where, or that it is
    absent); otherwise a window whose side is drawn log-uniformly between the crop's and the image's,
    placed anywhere that keeps the target box inside it."""
    if len(other_boxes) and rng.random() < 0.5:
        center, side = box_window(other_boxes[int(rng.integers(len(other_boxes)))], scale)
        return center + rng.uniform(-0.15, 0.15, 2) * side / scale, side * rng.uniform(0.8, 1.6)
    center, crop_side = box_window(box, scale)
    side = float(np.exp(rng.uniform(np.log(crop_side), np.log(max(crop_side, full_side)))))
    x0, y0, x1, y1 = (float(v) for v in box)
    slack = np.maximum(side - np.array([x1 - x0, y1 - y0]), 0.0) / 2.0
    return center + rng.uniform(-1.0, 1.0, 2) * slack, side


def warp(image: np.ndarray, A: np.ndarray, size: int, nearest: bool = False, border=PAD_RGB) -> np.ndarray:
    import cv2

    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, A, (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


# -- pose encoding ---------------------------------------------------------------------------------
def ray_rotation(K, uv) -> np.ndarray:
    """(N, 3, 3) rotations turning the optical axis (0, 0, 1) onto the viewing rays of pixels uv (N, 2)."""
    uv = np.asarray(uv, dtype=float).reshape(-1, 2)
    rays = np.linalg.solve(np.asarray(K, dtype=float), np.hstack([uv, np.ones((len(uv), 1))]).T).T
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    axis = np.cross(np.array([0.0, 0.0, 1.0]), rays)
    sin = np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.arctan2(sin[:, 0], rays[:, 2])
    axis = np.where(sin > 1e-12, axis / np.maximum(sin, 1e-12), 0.0)
    return axis_angle_to_matrix(axis * angle[:, None]).reshape(-1, 3, 3)


def focal(K) -> float:
    K = np.asarray(K, dtype=float)
    return float(np.sqrt(K[0, 0] * K[1, 1]))


def encode_pose(R, t, K, A, side: float, size: int, diameter: float) -> dict[str, np.ndarray]:
    """Network targets of a pose (R, t metres) seen through a window (see the module docstring)."""
    t = np.asarray(t, dtype=float).reshape(3)
    uv_img = project(K, t[None])[0]
    return {
        "uv": apply_affine(A, uv_img)[0] / size,
        "logz": np.log(max(t[2], 1e-6) * side / (focal(K) * diameter)),
        "rot": ray_rotation(K, uv_img)[0].T @ np.asarray(R, dtype=float),
    }


def decode_pose(uv, logz: float, R_allo, K, A, side: float, size: int, diameter: float):
    """Inverse of :func:`encode_pose`: ``(R, t)`` in the camera frame, metres."""
    uv_img = apply_affine(invert_affine(A), np.asarray(uv, dtype=float) * size)
    z = float(np.exp(logz)) * focal(K) * diameter / side
    t = backproject(K, uv_img, np.array([z]))[0]
    return ray_rotation(K, uv_img)[0] @ np.asarray(R_allo, dtype=float), t


def decode_box(box_cxcywh, A, size: int) -> np.ndarray:
    """Network box (cx, cy, w, h in input units) to image pixels [x0, y0, x1, y1]."""
    cx, cy, w, h = (float(v) for v in box_cxcywh)
    corners = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]]) * size
    return apply_affine(invert_affine(A), corners).reshape(4)


# -- augmentation ------------------------------------------------------------------------------
def augment(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Colour jitter, random occluders, blur and noise on an input crop; occluders also cut the mask."""
    import cv2

    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] *= rng.uniform(0.7, 1.3)
    hsv[..., 2] = hsv[..., 2] * rng.uniform(0.65, 1.35) + rng.uniform(-15, 15)
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    size = img.shape[0]
    if rng.random() < 0.4:
        img = img.copy()
        mask = mask.copy()
        for _ in range(int(rng.integers(1, 3))):
            c = rng.uniform(0.1, 0.9, size=2) * size
            r = rng.uniform(0.08, 0.25) * size
            ang = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
            poly = (c + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.5, 1.0, (len(ang), 1)))
            poly = poly.astype(np.int32)
            cv2.fillPoly(img, [poly], tuple(int(x) for x in rng.integers(0, 256, 3)))
            cv2.fillPoly(mask, [poly], 0)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 8), img.shape), 0, 255).astype(np.uint8)
    return img, mask


# -- dataset ---------------------------------------------------------------------------------------
def _gt_box(gt, obj: ObjectModel, K) -> np.ndarray:
    """Visible box [x0, y0, x1, y1] of a ground-truth instance: mask, BOP bbox_visib, or model projection."""
    if gt.mask is not None and gt.mask.any():
        ys, xs = np.nonzero(gt.mask)
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
    if gt.bbox_visib is not None and gt.bbox_visib[2] > 0 and gt.bbox_visib[3] > 0:
        x, y, w, h = (float(v) for v in gt.bbox_visib)
        return np.array([x, y, x + w, y + h])
    uv = project(K, np.asarray(obj.eval_points(500), dtype=float) @ np.asarray(gt.R).T + np.asarray(gt.t))
    return np.array([*uv.min(0), *uv.max(0)])


class ClipPoseDataset(torch.utils.data.Dataset):
    """One sample per (frame, visible object): a prompt naming one target object (plus, at times, a grasp
    part), the input window, and the targets of that object only, so the network learns that the prompt
    decides which object is returned. Training samples also include whole-image windows (localisation
    pass), context windows and distractor crops (:func:`context_window`) and negatives (a prompt for an
    object absent from the frame, presence target 0).

    ``frames`` is a BopDataset (or any sequence of SceneFrame-like records with rgb, K, gts).
    """

    def __init__(self, frames, catalogue: Catalogue, config: dict, train: bool, tokenizer=None,
                 seed: int | None = None):
        import itertools

        from .clip_net import get_tokenizer

        self.seed = seed  # None: fresh randomness per draw (training); an int: reproducible draws (tests)
        self._draws = itertools.count()

        self.frames = FrameSource(frames)
        self.catalogue = catalogue
        self.config = dict(config)
        self.train = train
        self.tokenizer = tokenizer or get_tokenizer(self.config)
        from .clip_net import clip_arch

        arch = clip_arch(self.config)
        self.size = int(np.atleast_1d(arch["vision_cfg"]["image_size"])[0])
        ps = int(np.atleast_1d(arch["vision_cfg"]["patch_size"])[0])
        self.grid = self.size // ps
        self.names = list(catalogue.names)
        self.index: list[tuple[int, int]] = []
        self.present: list[set[str]] = []
        min_visib = float(self.config.get("min_visib", 0.1))
        for fi, gts in enumerate(self.frames.gts()):
            self.present.append({g.name for g in gts})
            n = len(self.index)
            for gi, g in enumerate(gts):
                if g.name in catalogue and (g.visib_fract is None or g.visib_fract >= min_visib):
                    self.index.append((fi, gi))
            if train and len(self.index) == n and not self.present[-1] & set(self.names):
                self.index.append((fi, -1))  # a frame without catalogue objects: a negative for every prompt
        if not self.index:
            raise ValueError(f"no visible instances of {', '.join(self.names)} in the dataset "
                             f"(min_visib={min_visib}); check --objects and the dataset")

    def __len__(self) -> int:
        return len(self.index)

    def _sample_rng(self, key) -> tuple[int, np.random.Generator]:
        """(index, generator): the key's own draws, fresh or seeded ones in training, fixed ones in evaluation."""
        i, rng = split_key(key)
        if rng is None and self.train:
            rng = np.random.default_rng(None if self.seed is None else [self.seed, int(i), next(self._draws)])
        elif rng is None:
            rng = np.random.default_rng(int(i))
        return i, rng

    def _pick_target(self, fi: int, gi: int, K, rng) -> tuple:
        """(ground truth or None, prompted object, negative, box); a negative prompts an object not in the frame."""
        sf = self.frames[fi]
        H, W = sf.rgb.shape[:2]
        absent = [n for n in self.names if n not in self.present[fi]]
        target = None
        if gi < 0:  # no catalogue object in the frame: any window, any prompt, nothing present
            gt, negative = None, True
            c, half = rng.uniform([0, 0], [W, H]), 0.5 * rng.uniform(0.05, 0.4) * max(H, W)
            box = np.concatenate([c - half, c + half])
        else:
            gt = sf.gts[gi]
            target = self.catalogue[gt.name]
            negative = self.train and absent and rng.random() < float(self.config.get("negative_prob", 0.1))
            box = _gt_box(gt, self.catalogue[gt.name], K)
        if negative:
            target = self.catalogue[str(rng.choice(absent))]
        return gt, target, negative, box

    def _prompt(self, target, i: int, rng) -> tuple[str, int]:
        """(prompt, grasp index): drawn in training; in validation cycling through the grasp frames."""
        if self.train:
            return sample_prompt(target, rng, float(self.config.get("part_prompt_prob", 0.5)))
        frames = [None, *target.grasp_frames]
        f = frames[i % len(frames)]
        return canonical_prompt(target, f), (0 if f is None else frames.index(f))

    def _window(self, i: int, sf, gt, box, K, rng) -> tuple[np.ndarray, float]:
        """(centre, side) of the crop: the full frame, the object in context, or around its box (jittered)."""
        cfg = self.config
        H, W = sf.rgb.shape[:2]
        scale = float(cfg.get("crop_scale", 1.4))
        u = rng.random() if self.train else 2.0  # validation: fixed windows (below)
        full_p, context_p = float(cfg.get("full_frame_prob", 0.3)), float(cfg.get("context_prob", 0.0))
        if u < full_p:
            center, side = full_window(H, W)
            center = center + rng.uniform(-0.05, 0.05, 2) * side
            side *= rng.uniform(0.9, 1.15)
        elif u < full_p + context_p:
            others = [_gt_box(g, self.catalogue[g.name], K) for g in sf.gts if g is not gt and g.name in self.catalogue]
            center, side = context_window(box, scale, full_window(H, W)[1], rng, others)
        elif not self.train and i % 4 == 0:  # a quarter of validation samples test the localisation pass
            center, side = full_window(H, W)
        else:
            center, side = box_window(box, scale)
            if self.train:
                shift, (lo, hi) = float(cfg.get("crop_shift", 0.15)), cfg.get("crop_scale_range", (0.8, 1.25))
                center = center + rng.uniform(-shift, shift, 2) * side / scale
                side *= rng.uniform(float(lo), float(hi))
        return center, side

    @staticmethod
    def _window_mask(gt, A, box, S: int) -> np.ndarray:
        """The object's mask in the window: its own mask, else its box filled; empty without an object."""
        mask = np.zeros((S, S), np.uint8)
        if gt is not None and gt.mask is not None:
            return warp(gt.mask.astype(np.uint8), A, S, nearest=True, border=0)
        if gt is not None:
            (x0, y0), (x1, y1) = apply_affine(A, box.reshape(2, 2))
            mask[max(int(y0), 0):max(int(np.ceil(y1)), 0), max(int(x0), 0):max(int(np.ceil(x1)), 0)] = 1
        return mask

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        """``key``: a SampleKey from the training loop's sampler (augmentation drawn from (seed, epoch, index)),
        or a plain index (training: fresh or ``seed``-reproducible draws; evaluation: fixed)."""
        import cv2

        i, rng = self._sample_rng(key)
        fi, gi = self.index[i]
        sf = self.frames[fi]
        K = np.asarray(sf.K, dtype=float)
        gt, target, negative, box = self._pick_target(fi, gi, K, rng)
        prompt, grasp = self._prompt(target, i, rng)
        center, side = self._window(i, sf, gt, box, K, rng)
        S = self.size
        A = window_affine(center, side, S)
        img = warp(np.ascontiguousarray(sf.rgb), A, S)
        mask = self._window_mask(gt, A, box, S)
        box_in = np.clip(apply_affine(A, box.reshape(2, 2)).reshape(4) / S, 0.0, 1.0)
        if self.train:
            img, mask = augment(img, mask, rng)
        heat = cv2.resize(mask.astype(np.float32), (self.grid, self.grid), interpolation=cv2.INTER_AREA)
        present = (not negative) and float(mask.sum()) >= max(16.0, 0.002 * S * S)
        if not present:
            heat[:] = 0.0
            box_in = np.array([0.0, 0.0, 1.0, 1.0])
        enc = (encode_pose(gt.R, gt.t, K, A, side, S, target.diameter) if gt is not None  # else unused (present 0)
               else encode_pose(np.eye(3), [0.0, 0.0, 1.0], K, A, side, S, target.diameter))
        tokens = self.tokenizer([prompt])[0]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "tokens": tokens.long(),
            "present": torch.tensor(float(present)),
            "heat": torch.from_numpy(heat),
            "box": torch.tensor(box_in, dtype=torch.float32),
            "uv": torch.tensor(enc["uv"], dtype=torch.float32),
            "logz": torch.tensor(enc["logz"], dtype=torch.float32),
            "rot": torch.tensor(enc["rot"], dtype=torch.float32),
            "obj": torch.tensor(self.names.index(target.name)),
            "grasp": torch.tensor(grasp),
        }


class FrameSource:
    """Random access to the frames of a BopDataset (masks on, depth off: the CLIP network needs no depth),
    or of any sequence of SceneFrame-like records (rgb, K, gts)."""

    def __init__(self, frames):
        if hasattr(frames, "keys") and hasattr(frames, "frame"):
            import copy

            ds = copy.copy(frames)  # leave the caller's dataset as it was
            ds.load_masks, ds.load_depth = True, False
            self.ds, self.keys = ds, ds.keys()
            self.seq = None
        else:
            self.ds, self.keys, self.seq = None, None, frames

    def __len__(self) -> int:
        return len(self.keys) if self.ds is not None else len(self.seq)

    def __getitem__(self, i: int):
        return self.ds.frame(*self.keys[i]) if self.ds is not None else self.seq[i]

    def gts(self) -> list[list]:
        """Ground truth per frame, without decoding images where the dataset allows."""
        if self.ds is not None:
            return [self.ds.frame(*k, load_images=False).gts for k in self.keys]
        return [f.gts for f in self.seq]
