"""The DINOv2 backend's settings: architecture and training defaults (a plain dict stored in checkpoints) and
the typed inference settings read from it."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ...core.settings import config_items, settings_from
from ..estimator import DEPTH_STAGE_DEFAULTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2's normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
PATCH = 14
OUT_STRIDE = 4  # head output stride (the detail branch's stride)
REPRESENTATIONS = ("votes", "coords")


@dataclass(frozen=True)
class InferenceConfig:
    """The estimator's inference settings (config keys of the same names), built once per estimator."""

    det_img_size: int | None = None  # full-image input side (stage 1); None = img_size
    crop_margin: float = 1.3  # crop side = margin x longer box side
    min_det_cells: int = 3  # stage-1 component size (output cells) below which an object is "not seen"
    min_instance_frac: float = 0.15  # a further component (instance) needs this fraction of the largest one's cells
    max_instances: int = 8  # instances per object and frame, best scores first
    instance_nms: float = 0.3  # an instance whose centre is within this many diameters of a better one is dropped
    instance_box_margin: float = 0.1  # with several instances, votes and ICP points stay inside the box + margin
    min_mask_pixels: int = 12  # stage-2 mask pixels needed to vote
    vote_hypotheses: int = 128
    vote_score_pixels: int = 512  # hypotheses are counted on at most this many mask pixels (0: all)
    vote_cos: float = 0.99
    pnp_method: str = "sqpnp"
    pnp_min_confidence: float = 0.2
    pnp_threshold_frac: float = 0.04  # RANSAC threshold: fraction of the crop side in pixels (at least 2 px)
    max_batch: int = 16  # crops per backbone call

    @classmethod
    def from_config(cls, config) -> InferenceConfig:
        return settings_from(cls, config)


DEFAULT_CONFIG: dict = {
    # backbone
    "backbone": "vit_base_patch14_dinov2",  # any timm *_patch14_dinov2 / *_patch14_reg4_dinov2 name
    "weights": "hub",  # 'hub' (needs the network), a local .safetensors/.pth file, or 'random'
    "arch_overrides": {},  # extra timm kwargs (embed_dim, depth, num_heads, init_values ...)
    "img_size": 224,  # crop input side (stage 2); a multiple of 28
    "freeze": True,  # freeze the backbone ...
    "finetune_blocks": 0,  # ... except its last N blocks
    "feature_layers": None,  # block indices whose (normed) outputs are concatenated; None = last block
    # head
    "detail_branch": True,
    "detail_channels": [32, 64],  # conv s2 -> conv s2 -> conv: stride-4 features
    "head_channels": 128,
    "keypoints": "fps:8",  # box | fps:N | catalogue
    # what the head regresses besides the segmentation: "votes" (PVNet unit vectors to the keypoints, RANSAC
    # voting, PnP on the keypoints) or "coords" (per-cell model coordinates, CDPN / GDR-Net style, PnP-RANSAC on
    # all mask cells); the keypoints above are still built (drawn at inference from the PnP pose)
    "representation": "votes",
    # data and augmentation
    "train_margin_range": [1.05, 1.7],  # crop-scale jitter (covers stage-1 box error)
    "train_shift": 0.12,  # crop-centre jitter, fraction of the box side
    "full_frame_prob": 0.25,  # fraction of training samples that are whole letterboxed frames (stage 1)
    "min_visib_fract": 0.1,
    "aug": {"color": 0.8, "blur": 0.3, "noise": 0.5, "occluders": 0.5},
    # loss
    "seg_weight": 1.0,
    "fg_weight": 2.0,  # cross-entropy weight of object classes relative to background
    "vote_weight": 1.0,  # the vote (or, with representation "coords", the coordinate) loss
    # inference
    "precision": "auto",  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    **config_items(InferenceConfig()),
    **DEPTH_STAGE_DEFAULTS,  # use_depth, icp_*
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
    if out["representation"] not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}; got {out['representation']!r}")
    return out
