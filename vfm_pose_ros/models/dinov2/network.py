"""The DINOv2 pose network: a timm DINOv2 ViT, a detail branch and a head giving per-object segmentation and,
at stride 4, either keypoint vote vector fields (representation "votes") or dense model coordinates
("coords"); the keypoints it is built for."""
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


def coord_frame(obj: ObjectModel) -> tuple[np.ndarray, np.ndarray]:
    """(centre, half extent per axis) that normalise the object's model coordinates to about [-1, 1]: its
    bounding box's (the same in the symmetry-canonical frame, which only turns the object about itself)."""
    return np.asarray(obj.bbox_center, float), np.maximum(np.asarray(obj.bbox_size, float) / 2.0, 1e-6)


def to_tensor(img_u8: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> normalised 3xHxW float tensor."""
    x = torch.from_numpy(np.ascontiguousarray(img_u8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class PoseNet(nn.Module):
    """DINOv2 ViT + detail branch + head: per-object segmentation and, at stride 4, keypoint vote vectors
    (``representation`` "votes") or model coordinates normalised by ``coord_frames`` ("coords")."""

    # `--init` across representations: the head's final layer may differ in shape (it then starts fresh)
    init_reshapeable = ("out.",)

    def __init__(self, config: dict, object_names: list[str], keypoints: np.ndarray,
                 coord_frames: tuple[np.ndarray, np.ndarray] | None = None):
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
        self.representation = config.get("representation", "votes")
        if self.representation == "coords":  # per object its model coordinates (x, y, z), normalised
            if coord_frames is None:
                raise ValueError("representation 'coords' needs each object's coordinate frame (build_net)")
            # not stored in checkpoints (persistent=False): rebuilt from the stored catalogue, and a votes
            # checkpoint stays a valid --init for a coords network
            self.register_buffer("coord_centre", torch.as_tensor(coord_frames[0], dtype=torch.float32),
                                 persistent=False)  # (C, 3) metres
            self.register_buffer("coord_scale", torch.as_tensor(coord_frames[1], dtype=torch.float32),
                                 persistent=False)  # (C, 3) metres
            field_ch = self.n_objects * 3
        else:  # per object and keypoint a unit vote vector (dx, dy)
            field_ch = self.n_objects * self.n_keypoints * 2
        self.out = nn.Conv2d(ch, (self.n_objects + 1) + field_ch, 1)

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
        return {"seg": y[:, :C], self.field_key: y[:, C:]}

    @property
    def field_key(self) -> str:
        """The head output's (and training batch's) name for the field beside the segmentation."""
        return "coord" if self.representation == "coords" else "vec"

    def forward(self, batch) -> dict[str, torch.Tensor]:
        x = batch["image"] if isinstance(batch, dict) else batch
        return self.head(self.features(x), x)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy segmentation + the field's loss inside each object's mask: smooth-L1 on unit vote
        vectors (PVNet; logged as "vote") or L1 on normalised model coordinates where the target is valid
        (CDPN / GDR-Net; logged as "coord"). Both weighted by ``vote_weight`` and the sample's ``vec_weight``."""
        out = self.forward(batch)
        seg, field = out["seg"].float(), out[self.field_key].float()
        label = batch["label"]
        # objects weigh more than background: in whole frames they cover a few percent of the cells
        cw = torch.full((self.n_objects + 1,), float(self.config.get("fg_weight", 2.0)), device=seg.device)
        cw[0] = 1.0
        seg_loss = F.cross_entropy(seg, label, weight=cw)
        B, C = label.shape[0], self.n_objects
        onehot = (label.unsqueeze(1) == torch.arange(1, C + 1, device=label.device).view(1, C, 1, 1)).float()
        weight = onehot * batch["vec_weight"].view(B, 1, 1, 1)  # (B, C, h, w)
        if self.representation == "coords":
            err = self._coord_error(field, batch)
            weight = weight * batch["coord_valid"].float()
        else:
            err = self._vote_error(field, batch)
        field_loss = (err * weight).sum() / weight.sum().clamp_min(1.0)
        loss = self.config["seg_weight"] * seg_loss + self.config["vote_weight"] * field_loss
        with torch.no_grad():
            pred = seg.argmax(1)
            fg = label > 0
            fg_acc = (pred[fg] == label[fg]).float().mean().item() if fg.any() else float("nan")
        name = "coord" if self.representation == "coords" else "vote"
        return loss, {"loss": loss.item(), "seg": seg_loss.item(), name: field_loss.item(), "fg_acc": fg_acc}

    def _vote_error(self, vec: torch.Tensor, batch: dict) -> torch.Tensor:
        """(B, C, h, w) smooth-L1 between predicted and target unit vectors, summed over (dx, dy), mean over
        keypoints."""
        B, _, h, w = vec.shape
        C, Kp = self.n_objects, self.n_keypoints
        target = batch["vec"].view(B, C, Kp, 2, h, w)
        return F.smooth_l1_loss(vec.view(B, C, Kp, 2, h, w), target, reduction="none").sum(3).mean(2)

    def _coord_error(self, coord: torch.Tensor, batch: dict) -> torch.Tensor:
        """(B, C, h, w) L1 between predicted and target normalised model coordinates, summed over x, y, z."""
        B, _, h, w = coord.shape
        C = self.n_objects
        target = self.normalise_coords(batch["coord"].float().view(B, C, 3, h, w))
        return F.l1_loss(coord.view(B, C, 3, h, w), target, reduction="none").sum(2)

    def normalise_coords(self, xyz: torch.Tensor) -> torch.Tensor:
        """Model coordinates (..., C, 3, h, w), metres -> the head's normalised units (about [-1, 1])."""
        return (xyz - self.coord_centre.view(-1, 3, 1, 1)) / self.coord_scale.view(-1, 3, 1, 1)


def build_net(config: dict, catalogue: Catalogue) -> PoseNet:
    """A PoseNet for the catalogue's objects (config merged over DEFAULT_CONFIG; 'objects' recorded)."""
    cfg = merged_config(config)
    names = list(cfg.get("objects") or catalogue.names)
    cfg["objects"] = names
    kps = [object_keypoints(catalogue[n], cfg["keypoints"]) for n in names]
    if len({len(k) for k in kps}) != 1:
        raise ValueError(f"all objects need the same number of keypoints; got {[len(k) for k in kps]} "
                         f"(set config 'keypoints' to 'box' or 'fps:N')")
    frames = None
    if cfg["representation"] == "coords":
        centres, halves = zip(*(coord_frame(catalogue[n]) for n in names))
        frames = (np.stack(centres), np.stack(halves))
    return PoseNet(cfg, names, np.stack(kps), frames)
