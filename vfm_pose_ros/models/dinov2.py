"""DINOv2 backend: dense ViT patch features, a PVNet-style keypoint head, PnP-RANSAC and ICP.

Pipeline (the design notes' calibration experiment, made the product):

1. *Detection* (stage 1): the full image, letterboxed to ``det_img_size``, goes through the
   backbone and head; each connected component of an object's segmentation (at least
   ``min_det_cells`` cells and ``min_instance_frac`` of the object's largest component) is one
   instance with its own 2D box, so several copies of one object are posed separately. External
   boxes (``Frame.boxes_2d``: name -> one box or an Nx4 array of boxes) skip this stage.
2. *Keypoints* (stage 2): a square crop around each box (side ``crop_margin`` x the box's
   longer side), all crops of a batch of frames in one backbone batch. The head predicts, at
   stride 4, the object mask and for every keypoint a unit vector pointing from each object
   pixel towards the keypoint's projection (PVNet, Peng et al. 2019). RANSAC voting
   (vectorised torch) intersects pairs of vectors, keeps the hypothesis most pixels agree
   with and refines it by least squares over its inliers; the inlier fraction is the
   keypoint's confidence.
3. *Pose*: confidence-weighted PnP-RANSAC (vfm_pose_ros.core.pnp) on the 2D-3D keypoints,
   then, with depth, ICP of the model against the masked depth cloud (vfm_pose_ros.core.icp:
   visible-centroid alignment, multi-start, point-to-plane). Instances of one object are
   numbered by score (``ObjectPose.instance``); one whose centre lies within ``instance_nms``
   diameters of a better one (an object split into two components) is dropped.

Tracking mode (:meth:`Estimator.track`): ICP warm-started from the previous poses against the new
depth image (vfm_pose_ros.core.tracking.warm_start_icp), skipping both network stages.
:class:`OracleEstimator` replaces the network by perfect outputs made from ground truth: an upper
bound that isolates the geometric stages (voting, PnP, ICP, tracking) in tests and benchmarks.

Network: a timm DINOv2 ViT (``vit_base_patch14_dinov2`` by default; small/large/giant and
``_reg4`` variants by name; optional intermediate-layer features) plus a *detail branch*: a
three-layer conv stem (stride 4) alongside the patch embedding whose features are fused with
the upsampled patch features in the head. The design notes measured that a ViT trained
from scratch learns slowly on this CPU while a CNN learns about twice as fast per second;
the branch gives the head local, high-resolution evidence from the first step and costs
little (about 25 MMAC at 112 px), and with a frozen pretrained backbone it is the trainable
part that sharpens the patch-level (stride 14) localisation.

Keypoints: ``config["keypoints"]`` is 'box' (8 box corners + centre), 'fps:N' (N
farthest-point surface points + centre) or 'catalogue' (each object's own spec). On-surface
keypoints are predicted far better than box corners that lie off the object (design notes),
so the shipped configs use 'fps:8'.

Symmetric objects: a keypoint on a can is ambiguous under rotation about its axis, so
training targets use a *canonical* pose (:func:`canonical_pose`): the symmetric equivalent
that turns a fixed object direction towards the camera. Predictions are then canonical
poses, which ADD-S and MSSD score correctly.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.catalogue import Catalogue, ObjectModel, make_keypoints
from ..core.pnp import solve_pnp
from ..core.transforms import project, transform_points
from ..core.types import Frame, ObjectPose, Prediction
from . import estimator as _est
from .backbones import create_timm_model
from .sampling import split_key

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2's normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14
OUT_STRIDE = 4  # head output stride (the detail branch's stride)

DEFAULT_CONFIG: dict = {
    # backbone
    "backbone": "vit_base_patch14_dinov2",  # any timm *_patch14_dinov2 / *_patch14_reg4_dinov2 name
    "weights": "hub",  # 'hub' (needs the network), a local .safetensors/.pth file, or 'random'
    "arch_overrides": {},  # extra timm kwargs (embed_dim, depth, num_heads, init_values ...)
    "img_size": 224,  # crop input side (stage 2); a multiple of 28
    "det_img_size": None,  # full-image input side (stage 1); None = img_size
    "freeze": True,  # freeze the backbone ...
    "finetune_blocks": 0,  # ... except its last N blocks
    "feature_layers": None,  # block indices whose (normed) outputs are concatenated; None = last block
    # head
    "detail_branch": True,
    "detail_channels": [32, 64],  # conv s2 -> conv s2 -> conv: stride-4 features
    "head_channels": 128,
    "keypoints": "fps:8",  # box | fps:N | catalogue
    # data and augmentation
    "crop_margin": 1.3,  # crop side = margin x longer box side
    "train_margin_range": [1.05, 1.7],  # crop-scale jitter (covers stage-1 box error)
    "train_shift": 0.12,  # crop-centre jitter, fraction of the box side
    "full_frame_prob": 0.25,  # fraction of training samples that are whole letterboxed frames (stage 1)
    "min_visib_fract": 0.1,
    "aug": {"color": 0.8, "blur": 0.3, "noise": 0.5, "occluders": 0.5},
    # loss
    "seg_weight": 1.0,
    "fg_weight": 2.0,  # cross-entropy weight of object classes relative to background
    "vote_weight": 1.0,
    # inference
    "precision": "auto",  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    "min_det_cells": 3,  # stage-1 component size (output cells) below which an object is "not seen"
    "min_instance_frac": 0.15,  # a further component (instance) needs this fraction of the largest one's cells
    "max_instances": 8,  # instances per object and frame, best scores first
    "instance_nms": 0.3,  # an instance whose centre is within this many diameters of a better one is dropped
    "instance_box_margin": 0.1,  # with several instances, votes and ICP points stay inside the box + this margin
    "min_mask_pixels": 12,  # stage-2 mask pixels needed to vote
    "vote_hypotheses": 128,
    "vote_score_pixels": 512,  # hypotheses are counted on at most this many mask pixels (0: all)
    "vote_cos": 0.99,
    "pnp_method": "sqpnp",
    "pnp_min_confidence": 0.2,
    "pnp_threshold_frac": 0.04,  # RANSAC threshold: fraction of the crop side in pixels (at least 2 px)
    **_est.DEPTH_STAGE_DEFAULTS,  # use_depth, icp_*
    "max_batch": 16,
    "compile_backbone": False,  # torch.compile the backbone (scripts/gpu_check.sh measures whether it helps)
}

SMALL_CONFIG: dict = {
    # Same family (timm DINOv2 ViT, patch 14), random init, trainable end to end on a CPU.
    # LayerScale (init_values 1e-5 in DINOv2) is switched off: it makes blocks start as identities,
    # which slows learning from scratch; it matters for pretrained weights, not here.
    "backbone": "vit_small_patch14_dinov2",
    "weights": "random",
    "arch_overrides": {"embed_dim": 192, "depth": 6, "num_heads": 3, "init_values": None},
    "img_size": 112,
    "freeze": False,
    "head_channels": 64,
    "detail_channels": [24, 48],
    "keypoints": "fps:8",
}


def merged_config(config: dict | None = None, small: bool = False) -> dict:
    """DEFAULT_CONFIG, then SMALL_CONFIG when ``small``, then ``config`` (nested 'aug' merged too)."""
    out = copy.deepcopy(DEFAULT_CONFIG)
    for layer in ([SMALL_CONFIG] if small else []) + [config or {}]:
        for k, v in layer.items():
            if k == "aug" and isinstance(v, dict):
                out["aug"] = {**out["aug"], **v}
            else:
                out[k] = copy.deepcopy(v)
    if out["img_size"] % (PATCH * OUT_STRIDE // 2) != 0 or out["img_size"] % PATCH:
        raise ValueError(f"img_size must be a multiple of 28 (patch 14, output stride 4); got {out['img_size']}")
    return out


# ---------------------------------------------------------------------------------------------
# Geometry helpers: keypoints, symmetry canonicalisation, crops
# ---------------------------------------------------------------------------------------------


def object_keypoints(obj: ObjectModel, spec) -> np.ndarray:
    """Kx3 keypoints for an object under the config's spec ('catalogue' uses the object's own)."""
    if spec in (None, "catalogue"):
        return np.asarray(obj.keypoints, dtype=np.float64)
    return make_keypoints(obj.vertices, spec)


def canonical_pose(obj: ObjectModel, R, t) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric equivalent of (R, t) whose appearance-independent parts are fixed by the view.

    Continuous symmetry about axis a (through ``offset``): rotate about a so that a fixed object
    direction u (perpendicular to a) points as much as possible towards the camera. Discrete
    symmetries: of the identity and the symmetry transforms, take the one turning u most towards
    the camera. Asymmetric objects: unchanged. (Hand-written: no library canonicalises poses.)
    """
    R = np.asarray(R, dtype=float)
    t = np.asarray(t, dtype=float).reshape(3)
    sym = obj.symmetry
    if not sym.is_symmetric:
        return R, t
    centre = obj.bbox_center
    to_cam = -R.T @ (R @ centre + t)  # object frame: from the object centre towards the camera
    to_cam /= max(np.linalg.norm(to_cam), 1e-12)
    if sym.kind == "continuous":
        a = np.asarray(sym.axis, dtype=float)
        a = a / np.linalg.norm(a)
        o = np.zeros(3) if sym.offset is None else np.asarray(sym.offset, dtype=float)
        u = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        w = to_cam - np.dot(to_cam, a) * a
        if np.linalg.norm(w) < 1e-6:  # looking along the axis: any angle is as good; keep a fixed one
            w = u
        w /= np.linalg.norm(w)
        theta = np.arctan2(np.dot(a, np.cross(u, w)), np.dot(u, w))
        from scipy.spatial.transform import Rotation

        S = Rotation.from_rotvec(a * theta).as_matrix()
        # p -> S (p - o) + o is a symmetry; pose' = pose o symmetry
        return R @ S, t + R @ (o - S @ o)
    cands = [np.eye(4)] + [np.asarray(T, dtype=float) for T in sym.transforms]
    basis = np.eye(3)
    spread = [np.var([(T[:3, :3] @ e) for T in cands], axis=0).sum() for e in basis]
    u = basis[int(np.argmax(spread))]
    best = max(cands, key=lambda T: float(np.dot(T[:3, :3] @ u, to_cam)))
    return R @ best[:3, :3], t + R @ best[:3, 3]


def crop_affine(center, side: float, size: int) -> np.ndarray:
    """2x3 affine mapping image pixels to a size x size crop of ``side`` image pixels around ``center``."""
    s = size / float(side)
    cx, cy = float(center[0]), float(center[1])
    # pixel centres: image (cx, cy) lands on crop centre (size - 1) / 2
    return np.array([[s, 0.0, (size - 1) / 2.0 - s * cx], [0.0, s, (size - 1) / 2.0 - s * cy]])


def letterbox_affine(height: int, width: int, size: int) -> np.ndarray:
    """The crop affine that fits the whole image into a size x size square (padding the short side)."""
    return crop_affine(((width - 1) / 2.0, (height - 1) / 2.0), max(height, width), size)


def out_affine(A: np.ndarray, stride: int = OUT_STRIDE) -> np.ndarray:
    """Image -> head-output-grid affine, given the image -> crop affine (pixel-centre convention)."""
    B = A / stride
    B[:, 2] = (A[:, 2] + 0.5) / stride - 0.5
    return B


def apply_affine(A, uv) -> np.ndarray:
    uv = np.asarray(uv, dtype=float).reshape(-1, 2)
    return uv @ A[:, :2].T + A[:, 2]


def as_boxes(boxes) -> list[np.ndarray]:
    """One box [x0, y0, x1, y1] or an Nx4 array of boxes -> a list of (4,) float arrays."""
    arr = np.asarray(boxes, dtype=float)
    if arr.ndim == 1 and arr.shape == (4,):
        return [arr]
    if arr.ndim == 2 and arr.shape[1] == 4:
        return list(arr)
    raise ValueError(f"a 2D box is [x0, y0, x1, y1] (or an Nx4 array of boxes); got shape {arr.shape}")


def in_box(uv, box, margin: float = 0.0) -> np.ndarray:
    """Which points (Nx2 pixels) lie in ``box`` grown by ``margin`` times its size on every side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    uv = np.asarray(uv, dtype=float)
    return (uv[:, 0] >= x0 - mx) & (uv[:, 0] <= x1 + mx) & (uv[:, 1] >= y0 - my) & (uv[:, 1] <= y1 + my)


def invert_affine(A) -> np.ndarray:
    import cv2

    return cv2.invertAffineTransform(np.asarray(A, dtype=np.float64))


def out_grid(size: int, stride: int = OUT_STRIDE) -> np.ndarray:
    """Crop-pixel coordinates (h, w, 2) of the head-output cell centres."""
    n = size // stride
    c = (np.arange(n) + 0.5) * stride - 0.5
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs, ys], axis=-1)


def to_tensor(img_u8: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> normalised 3xHxW float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(img_u8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def silhouette(obj: ObjectModel, R, t, K, shape) -> np.ndarray:
    """Full (unoccluded) silhouette of a meshed object by filling its projected triangles (cv2)."""
    import cv2

    if obj.faces is None or not len(obj.faces):
        raise ValueError(f"object {obj.name!r} has no faces: the dataset must provide visible masks")
    uv = project(K, transform_points(R, t, obj.vertices))
    tris = np.round(uv[obj.faces] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, list(tris), 1, lineType=cv2.LINE_8, shift=2)
    return mask.astype(bool)


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class PoseNet(nn.Module):
    """DINOv2 ViT + detail branch + head: per-object segmentation and keypoint vector fields at stride 4."""

    def __init__(self, config: dict, object_names: list[str], keypoints: np.ndarray):
        super().__init__()
        self.config = config
        self.object_names = list(object_names)
        self.n_objects = len(object_names)
        self.n_keypoints = int(keypoints.shape[1])
        self.register_buffer("keypoints_3d", torch.as_tensor(keypoints, dtype=torch.float64))  # (C, K, 3) metres
        kw = dict(config.get("arch_overrides") or {})
        self.backbone = create_timm_model(
            config["backbone"], config["weights"], num_classes=0, img_size=config["img_size"],
            dynamic_img_size=True, **kw,
        )
        depth = len(self.backbone.blocks)
        layers = config.get("feature_layers")
        self.feature_layers = [depth - 1] if not layers else [int(i) % depth for i in layers]
        feat_ch = self.backbone.embed_dim * len(self.feature_layers)
        self._set_trainable()
        ch = int(config["head_channels"])
        if config.get("detail_branch", True):
            c1, c2 = config["detail_channels"]
            self.detail = nn.Sequential(_conv(3, c1, 2), _conv(c1, c2, 2), _conv(c2, c2))
            det_ch = c2
        else:
            self.detail, det_ch = None, 0
        self.reduce = nn.Sequential(nn.Conv2d(feat_ch, ch, 1, bias=False), nn.GroupNorm(8, ch), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(_conv(ch + det_ch, ch), _conv(ch, ch))
        self.out = nn.Conv2d(ch, (self.n_objects + 1) + self.n_objects * self.n_keypoints * 2, 1)

    # -- trainability ------------------------------------------------------------------------
    def _set_trainable(self):
        freeze = bool(self.config.get("freeze", True))
        n_ft = int(self.config.get("finetune_blocks", 0))
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze)
        if freeze and n_ft > 0:
            for blk in self.backbone.blocks[-n_ft:]:
                for p in blk.parameters():
                    p.requires_grad_(True)
            for p in self.backbone.norm.parameters():
                p.requires_grad_(True)

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def checkpoint_state_dict(self) -> dict:
        """Weights to store: a frozen *pretrained* backbone is reloaded from its own file instead."""
        sd = self.state_dict()
        if self.backbone_frozen and str(self.config.get("weights")).lower() not in ("random", "none", ""):
            sd = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
        return sd

    # -- forward -----------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch features (B, C, H/14, W/14) from the chosen blocks, each with the final norm."""
        ctx = torch.no_grad() if self.backbone_frozen else contextlib.nullcontext()
        with ctx:
            feats = self.backbone.forward_intermediates(
                x, indices=self.feature_layers, norm=True, output_fmt="NCHW", intermediates_only=True,
            )
        return torch.cat(feats, dim=1) if len(feats) > 1 else feats[0]

    def head(self, feats: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = (x.shape[-2] // OUT_STRIDE, x.shape[-1] // OUT_STRIDE)
        y = F.interpolate(self.reduce(feats), size=size, mode="bilinear", align_corners=False)
        if self.detail is not None:
            y = torch.cat([y, self.detail(x)], dim=1)
        y = self.out(self.fuse(y))
        C = self.n_objects + 1
        return {"seg": y[:, :C], "vec": y[:, C:]}

    def forward(self, batch) -> dict[str, torch.Tensor]:
        x = batch["image"] if isinstance(batch, dict) else batch
        return self.head(self.features(x), x)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy segmentation + smooth-L1 on unit vote vectors inside each object's mask (PVNet)."""
        out = self.forward(batch)
        seg, vec = out["seg"].float(), out["vec"].float()
        label = batch["label"]
        # objects weigh more than background: in whole frames they cover a few percent of the cells
        cw = torch.full((self.n_objects + 1,), float(self.config.get("fg_weight", 2.0)), device=seg.device)
        cw[0] = 1.0
        seg_loss = F.cross_entropy(seg, label, weight=cw)
        B, _, h, w = vec.shape
        C, Kp = self.n_objects, self.n_keypoints
        vec = vec.view(B, C, Kp, 2, h, w)
        target = batch["vec"].view(B, C, Kp, 2, h, w)
        onehot = (label.unsqueeze(1) == torch.arange(1, C + 1, device=label.device).view(1, C, 1, 1)).float()
        weight = onehot * batch["vec_weight"].view(B, 1, 1, 1)  # (B, C, h, w)
        err = F.smooth_l1_loss(vec, target, reduction="none").sum(3).mean(2)  # (B, C, h, w)
        vote_loss = (err * weight).sum() / weight.sum().clamp_min(1.0)
        loss = self.config["seg_weight"] * seg_loss + self.config["vote_weight"] * vote_loss
        with torch.no_grad():
            pred = seg.argmax(1)
            fg = label > 0
            fg_acc = (pred[fg] == label[fg]).float().mean().item() if fg.any() else float("nan")
        return loss, {"loss": loss.item(), "seg": seg_loss.item(), "vote": vote_loss.item(), "fg_acc": fg_acc}


def build_net(config: dict, catalogue: Catalogue) -> PoseNet:
    """A PoseNet for the catalogue's objects (config merged over DEFAULT_CONFIG; 'objects' recorded)."""
    cfg = merged_config(config)
    names = list(cfg.get("objects") or catalogue.names)
    cfg["objects"] = names
    kps = [object_keypoints(catalogue[n], cfg["keypoints"]) for n in names]
    if len({len(k) for k in kps}) != 1:
        raise ValueError(f"all objects need the same number of keypoints; got {[len(k) for k in kps]} "
                         f"(set config 'keypoints' to 'box' or 'fps:N')")
    return PoseNet(cfg, names, np.stack(kps))


# ---------------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------------


def _frame_access(dataset):
    """(n, get(i)) for a BopDataset (keys() + frame()), any indexable dataset, or an iterable kept in memory."""
    if hasattr(dataset, "keys") and hasattr(dataset, "frame"):
        keys = dataset.keys()
        return len(keys), (lambda i: dataset.frame(*keys[i]))
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return len(dataset), dataset.__getitem__
    frames = list(dataset)
    return len(frames), frames.__getitem__


def _augment(img: np.ndarray, label: np.ndarray, rng: np.random.Generator, aug: dict, out_stride: int):
    """Colour jitter, blur, noise and random occluders (in place on copies); occluded cells become background."""
    import cv2

    img = img.copy()
    label = label.copy()
    S = img.shape[0]
    if rng.random() < aug.get("occluders", 0.0):
        for _ in range(int(rng.integers(1, 3))):
            occ = np.zeros((S, S), np.uint8)
            w, h = (rng.uniform(0.15, 0.45, 2) * S).astype(int)
            cx, cy = rng.uniform(0, S, 2).astype(int)
            if rng.random() < 0.5:
                cv2.rectangle(occ, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), 1, -1)
            else:
                cv2.ellipse(occ, (cx, cy), (max(w // 2, 1), max(h // 2, 1)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
            m = occ.astype(bool)
            if rng.random() < 0.5:
                img[m] = rng.integers(0, 256, 3, dtype=np.uint8)
            else:
                img[m] = rng.integers(0, 256, (int(m.sum()), 3), dtype=np.uint8)
            small = cv2.resize(occ, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_AREA)
            label[small > 0] = 0
    f = img.astype(np.float32)
    if rng.random() < aug.get("color", 0.0):
        f *= rng.uniform(0.7, 1.3)  # brightness
        mean = f.mean()
        f = (f - mean) * rng.uniform(0.7, 1.3) + mean  # contrast
        gray = f.mean(axis=2, keepdims=True)
        f = (f - gray) * rng.uniform(0.6, 1.4) + gray  # saturation
        f *= rng.uniform(0.9, 1.1, 3)  # white balance / hue drift
    if rng.random() < aug.get("blur", 0.0):
        f = cv2.GaussianBlur(f, (0, 0), float(rng.uniform(0.3, 1.5)))
    if rng.random() < aug.get("noise", 0.0):
        f += rng.normal(0.0, rng.uniform(1.0, 8.0), f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8), label


class KeypointDataset(torch.utils.data.Dataset):
    """Crops (and whole letterboxed frames) with segmentation labels and vote-vector targets.

    Each frame gives ``samples_per_frame`` samples; a training sample is a whole frame with
    probability ``full_frame_prob`` (teaches stage 1), otherwise a jittered crop around a random
    visible object. Evaluation samples (train=False) are deterministic crops, no augmentation.
    """

    def __init__(self, dataset, catalogue: Catalogue, config: dict, train: bool):
        self.cfg = merged_config(config)
        self.names = list(self.cfg.get("objects") or catalogue.names)
        self.catalogue = catalogue
        self.train = train
        self.n_frames, self._get = _frame_access(dataset)
        self.spf = max(1, len(self.names))
        self.keypoints = {n: object_keypoints(catalogue[n], self.cfg["keypoints"]) for n in self.names}
        self.size = int(self.cfg["img_size"])

    def __len__(self) -> int:
        return self.n_frames * self.spf

    def __getitem__(self, key) -> dict:
        """``key``: a SampleKey from the training loop's sampler (augmentation drawn from (seed, epoch, index)),
        or a plain index (training: fresh randomness; evaluation: fixed)."""
        import cv2

        idx, rng = split_key(key)
        if rng is None:
            rng = np.random.default_rng(None if self.train else [idx, 12345])
        sf = self._get(idx // self.spf)
        rgb, K = sf.rgb, np.asarray(sf.K, dtype=float)
        H, W = rgb.shape[:2]
        gts = [g for g in sf.gts if g.name in self.keypoints]
        label_full = np.zeros((H, W), np.uint8)
        for g in gts:
            m = g.mask if g.mask is not None else silhouette(self.catalogue[g.name], g.R, g.t, K, (H, W))
            label_full[np.asarray(m, bool)] = self.names.index(g.name) + 1
        visible = [g for g in gts if g.visib_fract >= self.cfg["min_visib_fract"]
                   and (label_full == self.names.index(g.name) + 1).any()]
        S = self.size
        full = not visible or (self.train and rng.random() < self.cfg["full_frame_prob"])
        if full:
            A = letterbox_affine(H, W, S)
            if self.train:  # mild scale/shift jitter of the whole frame
                s = rng.uniform(0.85, 1.15)
                A = np.array([[s, 0, 0], [0, s, 0]]) @ np.vstack([A, [0, 0, 1]])
                A[:, 2] += rng.uniform(-0.08, 0.08, 2) * S + (1 - s) * (S - 1) / 2
        else:
            g = visible[(idx % self.spf) % len(visible)] if not self.train else visible[rng.integers(len(visible))]
            ys, xs = np.nonzero(label_full == self.names.index(g.name) + 1)
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            side = max(x1 - x0, y1 - y0) + 1.0
            centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
            if self.train:
                lo, hi = self.cfg["train_margin_range"]
                margin = rng.uniform(lo, hi)
                centre = centre + rng.uniform(-1, 1, 2) * self.cfg["train_shift"] * side
            else:
                margin = self.cfg["crop_margin"]
            A = crop_affine(centre, side * margin, S)
        img = cv2.warpAffine(rgb, A, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        Ao = out_affine(A)
        n = S // OUT_STRIDE
        label = cv2.warpAffine(label_full, Ao, (n, n), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        if self.train:
            img, label = _augment(img, label, rng, self.cfg["aug"], OUT_STRIDE)
        vec = vote_targets(gts, K, A, self.names, self.keypoints, self.catalogue, S)
        return {
            "image": to_tensor(img),
            "label": torch.from_numpy(label.astype(np.int64)),
            "vec": torch.from_numpy(vec.reshape(-1, n, n)),
            "vec_weight": torch.tensor(0.0 if full else 1.0),
        }


def vote_targets(gts, K, A, names, keypoints: dict, catalogue: Catalogue, size: int) -> np.ndarray:
    """Unit vectors (C, Kp, 2, n, n) from each head-output cell to each keypoint of each object in ``gts``.

    The keypoints are projected with the symmetry-canonical pose, then mapped into the crop by ``A``.
    """
    grid = out_grid(size)
    n = grid.shape[0]
    Kp = len(next(iter(keypoints.values())))
    vec = np.zeros((len(names), Kp, 2, n, n), np.float32)
    for g in gts:
        if g.name not in keypoints:
            continue
        R, t = canonical_pose(catalogue[g.name], g.R, g.t)
        kp = apply_affine(A, project(K, transform_points(R, t, keypoints[g.name])))  # (Kp, 2) crop pixels
        d = kp[:, None, None, :] - grid[None]  # (Kp, n, n, 2)
        d /= np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-6)
        vec[names.index(g.name)] = d.transpose(0, 3, 1, 2)
    return vec


def make_dataset(dataset, catalogue: Catalogue, config: dict, train: bool) -> KeypointDataset:
    return KeypointDataset(dataset, catalogue, config, train)


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def _agree(hyp: torch.Tensor, coords: torch.Tensor, vecs: torch.Tensor, cos_thr: float) -> torch.Tensor:
    """(K, H, P) whether pixel p's vector for keypoint k points at hypothesis h (cosine above cos_thr)."""
    diff = hyp.unsqueeze(2) - coords.view(1, 1, -1, 2)  # (K, H, P, 2)
    return (diff * vecs.unsqueeze(1)).sum(-1) > cos_thr * diff.norm(dim=-1).clamp_min(1e-6)


def ransac_vote(coords: torch.Tensor, vecs: torch.Tensor, n_hyp: int = 128, cos_thr: float = 0.99,
                generator: torch.Generator | None = None, score_pixels: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """PVNet RANSAC voting, vectorised over keypoints.

    coords (P, 2) pixel positions, vecs (K, P, 2) unit vectors pointing at each keypoint.
    Returns keypoints (K, 2) and confidences (K,) = fraction of pixels agreeing with the winner.
    Hypotheses are intersections of random pixel pairs' rays, counted on at most ``score_pixels``
    random pixels (the K x H x P agreement test is the cost: a whole 56x56 mask is 3,136 pixels);
    the winner's inliers are then taken over all pixels and it is re-estimated as the least-squares
    intersection of their rays.
    """
    P = coords.shape[0]
    K = vecs.shape[0]
    if P < 2:
        return torch.full((K, 2), float("nan")), torch.zeros(K)
    i = torch.randint(P, (n_hyp,), generator=generator)
    j = torch.randint(P, (n_hyp,), generator=generator)
    pi, pj = coords[i], coords[j]  # (H, 2)
    vi, vj = vecs[:, i], vecs[:, j]  # (K, H, 2)
    det = vi[..., 1] * vj[..., 0] - vi[..., 0] * vj[..., 1]
    d = pj - pi
    a = (d[:, 1] * vj[..., 0] - d[:, 0] * vj[..., 1]) / torch.where(det.abs() < 1e-4, torch.ones_like(det), det)
    hyp = pi.unsqueeze(0) + a.unsqueeze(-1) * vi  # (K, H, 2)
    valid = det.abs() >= 1e-4
    sub = torch.randperm(P, generator=generator)[:score_pixels] if P > score_pixels > 0 else slice(None)
    counts = _agree(hyp, coords[sub], vecs[:, sub], cos_thr).sum(-1).masked_fill(~valid, -1)  # (K, H)
    best = counts.argmax(dim=1)
    inl_best = _agree(hyp[torch.arange(K), best].unsqueeze(1), coords, vecs, cos_thr)[:, 0]  # (K, P)
    # least-squares intersection: sum_i (I - v v^T) x = sum_i (I - v v^T) p
    eye = torch.eye(2, dtype=coords.dtype)
    A = eye - vecs.unsqueeze(-1) * vecs.unsqueeze(-2)  # (K, P, 2, 2)
    w = inl_best.to(coords.dtype).view(K, P, 1, 1)
    M = (A * w).sum(1)
    b = (A @ coords.view(1, P, 2, 1) * w).sum(1).squeeze(-1)
    ok = torch.linalg.det(M).abs() > 1e-6
    x = torch.where(ok.unsqueeze(-1), torch.linalg.solve(M + (~ok).view(K, 1, 1) * eye, b), hyp[torch.arange(K), best])
    conf = inl_best.float().mean(1)
    conf = torch.where(valid.any(1), conf, torch.zeros_like(conf))
    return x, conf


class Estimator(_est.Estimator):
    """DINOv2 keypoint estimator: ``predict(frame) -> list[ObjectPose]`` (see the module docstring)."""

    backend = "dinov2"

    def __init__(self, net: PoseNet, catalogue: Catalogue, device="auto", precision: str | None = None, **overrides):
        cfg = {**net.config, **overrides}
        super().__init__(catalogue, device=device, precision=precision or cfg.get("precision", "auto"), config=cfg)
        self.net = net.to(self.device).eval()
        self.compile_backbone("features")
        self.names = net.object_names
        self.keypoints = net.keypoints_3d.cpu().numpy()
        self._gen = torch.Generator().manual_seed(0)

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", **overrides) -> Estimator:
        from .checkpoint import catalogue_from_dict, load_checkpoint, release_memory

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

    # -- helpers -------------------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, crops: list[np.ndarray], timer, affines=None, frames=None) -> dict[str, torch.Tensor]:
        """Backbone + head on a list of SxS uint8 crops, in batches; returns class probabilities and the raw
        vector fields (B, objects, keypoints, 2, h, w): only the mask pixels' vectors are used, so only those
        are normalised (normalising whole maps was a quarter of the head stage).

        ``affines`` (image -> crop) and ``frames`` (the frame of each crop) are unused here; they let a
        test substitute an oracle for the network.
        """
        segs, vecs = [], []
        mb = int(self.config.get("max_batch", 16))
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
                v = out["vec"].float().cpu()
                B, _, h, w = v.shape
                vecs.append(v.view(B, self.net.n_objects, self.net.n_keypoints, 2, h, w))
        return {"seg": torch.cat(segs), "vec": torch.cat(vecs)}

    def detect(self, frames: list[Frame], timer=None) -> list[dict[str, list[tuple[np.ndarray, float]]]]:
        """Stage 1 per frame: name -> [(box [x0, y0, x1, y1], score), ...], one entry per instance, best first.

        Frames with ``boxes_2d`` keep those boxes (score 1); the others go through the network.
        """
        import cv2

        timer = timer or self.timer()
        size = int(self.config.get("det_img_size") or self.config["img_size"])
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
        min_cells = int(self.config.get("min_det_cells", 3))
        rel = float(self.config.get("min_instance_frac", 0.15))
        max_inst = max(1, int(self.config.get("max_instances", 8)))
        with timer("head"):
            labels = res["seg"].argmax(1).numpy()
            for b, fi in enumerate(todo):
                inv = invert_affine(out_affine(As[b]))
                for ci, name in enumerate(self.names):
                    m = (labels[b] == ci + 1).astype(np.uint8)
                    n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
                    if n <= 1:
                        continue
                    areas = stats[1:, cv2.CC_STAT_AREA]
                    floor = max(min_cells, rel * float(areas.max()))
                    found = []
                    for k in 1 + np.flatnonzero(areas >= floor):
                        x, y, w, h = stats[k, :4]
                        corners = apply_affine(inv, [[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]])
                        score = float(res["seg"][b, ci + 1].numpy()[comp == k].mean())
                        found.append((np.concatenate([corners[0], corners[1]]), score))
                    if found:
                        found.sort(key=lambda f: (-f[1], f[0][0]))  # best score first, then left to right
                        out[fi][name] = found[:max_inst]
        return out

    # -- the interface -------------------------------------------------------------------------
    def predict(self, frame: Frame) -> Prediction:
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames) -> list[Prediction]:
        """Poses per frame; each frame's timings hold the batch's shared stages and its own pnp and icp."""
        import cv2

        frames = list(frames)
        t_start = time.perf_counter()
        timer = self.timer()
        S = int(self.config["img_size"])
        dets = self.detect(frames, timer)
        jobs = []  # (frame index, object name, A, box, det score, crop side, restrict-to-box)
        crops = []
        with timer("preprocess"):
            for fi, d in enumerate(dets):
                for name, found in d.items():
                    for box, score in found:
                        x0, y0, x1, y1 = box
                        side = max(x1 - x0, y1 - y0, 4.0) * float(self.config["crop_margin"])
                        A = crop_affine(((x0 + x1) / 2, (y0 + y1) / 2), side, S)
                        crops.append(cv2.warpAffine(frames[fi].rgb, A, (S, S), flags=cv2.INTER_LINEAR))
                        jobs.append((fi, name, A, np.asarray(box, float), score, side, len(found) > 1))
        results: list[list[ObjectPose]] = [[] for _ in frames]
        if not jobs:
            timings = {**timer.ms, "total": (time.perf_counter() - t_start) * 1e3}
            return [Prediction(timings_ms=timings) for _ in frames]
        res = self._run(crops, timer, [j[2] for j in jobs], [frames[j[0]] for j in jobs])
        grid_np = out_grid(S)
        grid = torch.from_numpy(grid_np).float()
        per_frame_pnp = [0.0] * len(frames)
        per_frame_icp = [0.0] * len(frames)
        box_margin = float(self.config.get("instance_box_margin", 0.1))
        for b, (fi, name, A, box, det_score, side, several) in enumerate(jobs):
            fr = frames[fi]
            ci = self.names.index(name)
            with timer("head"):
                label = res["seg"][b].argmax(0)
                sel = label == ci + 1
                inv = invert_affine(A)
                if several:  # other instances of this object may show in the crop: vote inside this box only
                    sel &= torch.from_numpy(in_box(apply_affine(inv, grid_np.reshape(-1, 2)), box, box_margin)
                                            .reshape(grid_np.shape[:2]))
                if int(sel.sum()) < int(self.config.get("min_mask_pixels", 12)):
                    continue
                coords = grid[sel]
                vecs = res["vec"][b, ci][:, :, sel].permute(0, 2, 1)  # (Kp, P, 2)
                vecs = vecs / vecs.norm(dim=-1, keepdim=True).clamp_min(1e-6)
                kp_crop, conf = ransac_vote(coords, vecs, int(self.config["vote_hypotheses"]),
                                            float(self.config["vote_cos"]), self._gen,
                                            int(self.config.get("vote_score_pixels", 512)))
                kp_img = apply_affine(inv, kp_crop.numpy())
                conf = conf.numpy().astype(float)
                mask_score = float(res["seg"][b, ci + 1][sel].mean())
            t0 = time.perf_counter()
            thr = max(2.0, float(self.config["pnp_threshold_frac"]) * side)
            pnp, why = solve_pnp(self.keypoints[ci], kp_img, fr.K, conf, method=self.config["pnp_method"],
                                 min_confidence=float(self.config["pnp_min_confidence"]),
                                 ransac_threshold_px=thr, max_reproj_error_px=2.5 * thr)
            per_frame_pnp[fi] += (time.perf_counter() - t0) * 1e3
            use_depth = fr.depth is not None and self.config.get("use_depth", True)
            if pnp is None and not use_depth:
                log.debug("dinov2: %s dropped: %s", name, why)
                continue
            R, t = (pnp.R, pnp.t) if pnp is not None else (None, None)  # no PnP: the depth search alone
            mask_img = self._image_mask(res["seg"][b], ci, A, side, fr.shape)
            if several:  # the same for the ICP points: keep them off the neighbouring instance
                x0, y0, x1, y1 = box
                mx, my = box_margin * (x1 - x0), box_margin * (y1 - y0)
                keep = np.zeros_like(mask_img)
                keep[max(0, int(np.ceil(y0 - my))): max(0, int(np.floor(y1 + my)) + 1),
                     max(0, int(np.ceil(x0 - mx))): max(0, int(np.floor(x1 + mx)) + 1)] = True
                mask_img &= keep
            fitness = None
            if use_depth:
                t0 = time.perf_counter()
                R, t, fitness = self.refine_depth(name, R, t, fr, mask_img)
                per_frame_icp[fi] += (time.perf_counter() - t0) * 1e3
            if pnp is None and fitness is None:
                log.debug("dinov2: %s dropped: %s, and the depth does not fit", name, why)
                continue
            # without PnP the keypoints did not vouch for the pose: their confidence counts half
            kp_conf = float(np.mean(conf[pnp.inliers])) if pnp is not None else 0.5 * float(np.mean(conf))
            score = det_score * mask_score * kp_conf * (_est.depth_support(fitness) if use_depth else 1.0)
            results[fi].append(ObjectPose(
                name=name, R=R, t=t, score=score, keypoints_2d=kp_img, box_2d=np.asarray(box, float),
                mask=mask_img, icp_fitness=fitness,
            ))
        predictions = []
        for fi, poses in enumerate(results):
            timings = {**timer.ms, "pnp": per_frame_pnp[fi], "icp": per_frame_icp[fi],
                       "total": (time.perf_counter() - t_start) * 1e3}
            for p in poses:
                p.timings_ms = dict(timings)
            predictions.append(Prediction(self.number_instances(poses), timings))
        return predictions

    def number_instances(self, poses: list[ObjectPose]) -> list[ObjectPose]:
        """Drop duplicate instances (centres within ``instance_nms`` diameters of a better-scoring one: an
        object whose mask fell apart) and number the rest per object by score: ``instance`` = 0, 1, ..."""
        nms = float(self.config.get("instance_nms", 0.3))
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
        from ..core.tracking import warm_start_icp

        if frame.depth is None or not previous or not self.config.get("use_depth", True):
            return None
        thr = float(self.config.get("icp_min_fitness", 0.3) if min_fitness is None else min_fitness)
        t_start = time.perf_counter()
        out = []
        for p in previous:
            if p.name not in self.catalogue:
                return None
            obj = self.catalogue[p.name]
            pts, normals = self.surface(p.name)
            t0 = time.perf_counter()
            res = warm_start_icp(p.R, p.t, pts, normals, obj.diameter, frame.depth, frame.K,
                                 max_observed=int(self.config.get("icp_max_observed", 2500)))
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
        m = cv2.warpAffine(margin, out_affine(A), (shape[1], shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0) > 0
        r = int(round(0.25 * side / seg.shape[-1]))
        if r >= 1:
            m = cv2.erode(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        return m.astype(bool)



class OracleEstimator(Estimator):
    """The estimator with its network replaced by perfect outputs made from the ground truth.

    An upper bound that isolates the geometric stages (detection components, voting, PnP, ICP and
    tracking) from the network's error, for tests and benchmarks. Every frame it sees must carry
    ``gts`` (GroundTruthPose list with visible masks), e.g. ``frame.gts = scene_frame.gts``. Several
    instances of one object are supported: each cell votes for the instance that covers it.
    """

    def _run(self, crops, timer, affines=None, frames=None):
        import cv2

        S = crops[0].shape[0]
        n = S // OUT_STRIDE
        kps = {nm: self.keypoints[i] for i, nm in enumerate(self.names)}
        segs, vecs = [], []
        with timer("backbone"):  # stands in for the network's stages
            for A, fr in zip(affines, frames):
                gts = getattr(fr, "gts", None)
                if gts is None:
                    raise ValueError("OracleEstimator needs the ground truth on each frame: set frame.gts to the "
                                     "dataset frame's gts (GroundTruthPose with visible masks)")
                gts = [g for g in gts if g.name in self.names]
                inst = np.zeros(fr.shape, np.float32)  # ground-truth instance index + 1 of each pixel
                for k, g in enumerate(gts):
                    if g.mask is None:
                        raise ValueError(f"OracleEstimator: ground truth of {g.name} has no visible mask")
                    inst[np.asarray(g.mask, bool)] = k + 1
                cell_inst = cv2.warpAffine(inst, out_affine(A), (n, n), flags=cv2.INTER_NEAREST).astype(int)
                label = np.zeros((n, n), np.int64)
                vec = np.zeros((len(self.names), self.net.n_keypoints, 2, n, n), np.float32)
                for k, g in enumerate(gts):
                    cells = cell_inst == k + 1
                    if not cells.any():
                        continue
                    ci = self.names.index(g.name)
                    label[cells] = ci + 1
                    target = vote_targets([g], fr.K, A, self.names, kps, self.catalogue, S)[ci]
                    vec[ci][:, :, cells] = target[:, :, cells]
                segs.append(F.one_hot(torch.from_numpy(label), len(self.names) + 1).permute(2, 0, 1).float())
                vecs.append(torch.from_numpy(vec))
        return {"seg": torch.stack(segs), "vec": torch.stack(vecs)}
