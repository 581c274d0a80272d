"""The DINOv2 pose network: a timm DINOv2 ViT, a detail branch and a head giving per-object segmentation and
keypoint vector fields at stride 4; the keypoints it is built for."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.catalogue import Catalogue, ObjectModel, make_keypoints
from ..backbones import create_timm_model
from .config import IMAGENET_MEAN, IMAGENET_STD, OUT_STRIDE, merged_config


def object_keypoints(obj: ObjectModel, spec) -> np.ndarray:
    """Kx3 keypoints for an object under the config's spec ('catalogue' uses the object's own)."""
    if spec in (None, "catalogue"):
        return np.asarray(obj.keypoints, dtype=np.float64)
    return make_keypoints(obj.vertices, spec)


def to_tensor(img_u8: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> normalised 3xHxW float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(img_u8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


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
