"""The CLIP pose network: open_clip towers, text-to-image fusion and the pose heads.

Pipeline of one forward pass (``ClipPoseNet``):

1. CLIP vision tower (open_clip ``VisionTransformer`` with ``output_tokens=True``): the
   patch tokens of a square input (the whole image letterboxed, or a crop around the object).
2. CLIP text tower: the projected text embedding of the prompt (``CLIP.encode_text``).
3. Fusion: the text embedding modulates every patch token (FiLM, the one-token form of
   "visual tokens attend to text"), a transformer encoder layer mixes the modulated patches,
   and a transformer decoder lets two text-conditioned queries (a *localisation* query and a
   *pose* query) cross-attend to them.
4. Heads: a text-patch similarity map (where the prompted object is), a box + presence head
   on the localisation query, and rotation (6D) + image-plane centre + log depth ratio on the
   pose query (with ``rotation_head: anchors``, a separate head classifies the rotation over fixed
   anchor rotations and the 6D output is the residual from that anchor: models/rotation_anchors.py).
   Two heads read the text embedding alone: which catalogue object the prompt names, and which
   of its grasp frames (class 0 = the prompt names no part).

The geometry of the targets (crop coordinates, allocentric rotation, depth ratio) is in
:mod:`vfm_pose_ros.models.clip_data`; this module only sees tensors.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core import symmetry
from ..core.catalogue import Catalogue
from . import rotation_anchors
from .backbones import RANDOM_SPECS, WeightsUnavailable, resolve_weights

ROTATION_HEADS = ("6d", "anchors")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def clip_arch(config: dict) -> dict:
    """The open_clip model config (embed_dim, vision_cfg, text_cfg): the named model's, with config overrides."""
    import open_clip

    name = config["clip_model"]
    base = open_clip.get_model_config(name)
    if base is None:
        raise ValueError(f"unknown open_clip model {name!r}; choose from: {', '.join(open_clip.list_models())}")
    return _deep_merge(base, config.get("clip_arch") or {})


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs 'initialized randomly' on the root logger; random init is intended here."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def has_pretrained_weights(config: dict) -> bool:
    """True when the config asks for pretrained CLIP weights (a file or a tag), not random init."""
    w = config.get("weights")
    return not (w is None or (isinstance(w, str) and w.strip().lower() in RANDOM_SPECS))


def towers_stored(state_dict: dict) -> bool:
    """Whether a state dict holds both CLIP towers (else they come from the config's 'weights')."""
    return "clip.visual.conv1.weight" in state_dict and "clip.token_embedding.weight" in state_dict


def create_clip(config: dict):
    """Build the open_clip model of ``config`` and load its weights; returns ``(model, pretrained_loaded)``.

    ``config['weights']``: a local file (``open_clip.create_model(name, pretrained='/path/file.safetensors')``),
    an open_clip pretrained tag such as ``openai`` (needs the hub), or ``random``. Offline
    (``HF_HUB_OFFLINE=1`` or the hub unreachable) without a local file this raises
    :class:`WeightsUnavailable` at once, naming the config key to set.
    """
    import open_clip

    name = config["clip_model"]
    arch = clip_arch(config)
    kwargs = {"embed_dim": arch["embed_dim"], "vision_cfg": arch["vision_cfg"], "text_cfg": arch["text_cfg"]}
    ws = resolve_weights(config.get("weights"), model=f"open_clip {name}", config_key="weights")
    quick_gelu = bool(config.get("quick_gelu", False))
    if ws.kind == "random":
        with _quiet_open_clip():
            return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, **kwargs), False
    if ws.kind == "file":
        return _clip_from_file(ws.path, name, quick_gelu, kwargs), True
    tag_cfg = open_clip.get_pretrained_cfg(name, ws.tag)
    if not tag_cfg:
        raise WeightsUnavailable(
            f"'{ws.tag}' is neither a file nor an open_clip pretrained tag of {name}; tags: "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'}"
        )
    quick_gelu = quick_gelu or bool(tag_cfg.get("quick_gelu", False))
    try:
        model = open_clip.create_model(name, pretrained=ws.tag, force_quick_gelu=quick_gelu, **kwargs)
    except RuntimeError as exc:
        raise WeightsUnavailable(
            f"could not fetch open_clip weights {name}/{ws.tag} ({exc}); download them elsewhere and set "
            f"'weights: /path/to/open_clip_model.safetensors' in the config"
        ) from exc
    return model, True


def _clip_from_file(path, name: str, quick_gelu: bool, kwargs: dict):
    """open_clip's model ``name`` with the weights of a local file: open_clip's own layout (.safetensors,
    .bin, state-dict .pt) through ``create_model``, or OpenAI's TorchScript archive (``ViT-B-32.pt``)
    through open_clip's OpenAI loader, whose weights then go into the configured model (QuickGELU, as
    OpenAI trained it). Any file that does not load fails with one line naming the key and the files expected.
    """
    import open_clip

    from .weight_files import expected_clip_files, is_torchscript_archive, one_line

    try:
        if not is_torchscript_archive(path):
            return open_clip.create_model(name, pretrained=str(path), force_quick_gelu=quick_gelu, **kwargs)
        openai = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
        with _quiet_open_clip():
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True, **kwargs)
        model.load_state_dict(openai.state_dict())
        return model
    except Exception as exc:  # noqa: BLE001  any failure reading a user's file (keys, shapes, truncation)
        raise WeightsUnavailable(
            f"'weights': {path} does not load into open_clip {name} (expected {expected_clip_files(name)}; "
            f"'clip_arch' must match the file): {one_line(exc)}"
        ) from exc


def get_tokenizer(config: dict):
    """open_clip's tokenizer for the model, with the context length of the (possibly overridden) text tower."""
    return _tokenizer(config["clip_model"], int(clip_arch(config)["text_cfg"]["context_length"]))


@functools.lru_cache(maxsize=8)
def _tokenizer(name: str, context_length: int):
    import open_clip

    return open_clip.get_tokenizer(name, context_length=context_length)  # reads the BPE table: ~0.3 s, once


TOKENIZER_VOCAB = 49408  # open_clip SimpleTokenizer (CLIP BPE): ids 0..49407, start 49406, end 49407


def hash_tokens(tokens: torch.Tensor, vocab: int, full_vocab: int = TOKENIZER_VOCAB) -> torch.Tensor:
    """Map BPE ids into a small vocabulary (hashing trick) for a text tower trained from scratch.

    A random-init tower with CLIP's 49k-row embedding would put 12M never-trained parameters
    into every checkpoint; prompts use a few dozen distinct tokens, so ids are folded into
    ``vocab`` buckets. Padding (0) stays 0, start/end (the two highest ids) become vocab-2 and
    vocab-1 so the EOT token is still the row maximum that open_clip's argmax pooling reads.
    """
    sot, eot = full_vocab - 2, full_vocab - 1
    folded = 1 + (tokens * 2654435761 % 4294967296) % (vocab - 3)  # Knuth multiplicative hash, then fold
    out = torch.where(tokens == 0, torch.zeros_like(tokens), folded)
    out = torch.where(tokens == sot, torch.full_like(tokens, vocab - 2), out)
    return torch.where(tokens == eot, torch.full_like(tokens, vocab - 1), out)


def sixd_to_matrix_torch(d6: torch.Tensor) -> torch.Tensor:
    """Torch twin of core.transforms.sixd_to_matrix (same layout: the first two columns of R)."""
    a1, a2 = d6[..., :3], d6[..., 3:6]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def symmetry_tables(catalogue: Catalogue) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """core.symmetry.symmetry_tables as tensors, for the symmetry-aware rotation loss."""
    rots, axes, cont = symmetry.symmetry_tables(catalogue)
    return torch.tensor(rots, dtype=torch.float32), torch.tensor(axes, dtype=torch.float32), torch.tensor(cont)


def grasp_tables(catalogue: Catalogue) -> tuple[list[list[str]], torch.Tensor]:
    """Grasp frame names per object (catalogue order) and the mask of valid grasp classes (0 = none named)."""
    names = [list(o.grasp_frames) for o in catalogue]
    n_cls = 1 + max((len(n) for n in names), default=0)
    valid = torch.zeros(len(names), n_cls, dtype=torch.bool)
    valid[:, 0] = True
    for i, n in enumerate(names):
        valid[i, 1 : 1 + len(n)] = True
    return names, valid


def soft_argmax(logits: torch.Tensor, centres: torch.Tensor, window: float = 0.0) -> torch.Tensor:
    """Expected patch centre (B, 2) under softmax(logits) (B, N); centres (1, N, 2). ``window`` > 0 reads
    only the patches within that distance (Chebyshev, in centre units) of the peak: with two look-alike
    objects the global expectation lands between them, on neither (used at inference)."""
    if window > 0:
        peak = centres[0, logits.argmax(1)]  # (B, 2)
        far = (centres - peak.unsqueeze(1)).abs().amax(-1) > window  # (B, N)
        logits = logits.masked_fill(far, float("-inf"))
    return (torch.softmax(logits, dim=1).unsqueeze(-1) * centres).sum(1)


class ClipPoseNet(nn.Module):
    """CLIP towers + cross-modal fusion + pose heads (see the module docstring).

    Rotation is trained in the continuous 6D representation (Zhou et al. 2019: the first two
    columns of R, Gram-Schmidt back to a rotation) because quaternions are a double cover
    (q and -q) with a discontinuity at the sign-canonical boundary (w = 0), which a regressor
    cannot straddle. The estimator returns the rotation matrix (ObjectPose.R); where a
    quaternion is needed (ROS messages) core.transforms.matrix_to_quat gives the normalised,
    sign-canonical one.
    """

    def __init__(self, config: dict, catalogue: Catalogue, load_weights: bool = True):
        super().__init__()
        self.config = dict(config)
        self.object_names = list(catalogue.names)
        # load_weights=False: random towers whose weights a checkpoint is about to overwrite
        self.clip, _ = create_clip(self.config if load_weights else {**self.config, "weights": "random"})
        self.pretrained = has_pretrained_weights(self.config)
        self.pretrained_text = self.pretrained  # both towers come from the same CLIP weights
        visual = self.clip.visual
        visual.output_tokens = True
        mean = visual.preprocess_cfg.get("mean") if hasattr(visual, "preprocess_cfg") else None
        std = visual.preprocess_cfg.get("std") if hasattr(visual, "preprocess_cfg") else None
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.register_buffer("pix_mean", torch.tensor(mean or OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pix_std", torch.tensor(std or OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)
        self.image_size = int(visual.image_size[0])
        self.grid = tuple(int(g) for g in visual.grid_size)
        vis_width = visual.conv1.out_channels
        arch = clip_arch(self.config)
        embed_dim = int(arch["embed_dim"])
        # a text tower smaller than the tokenizer's vocabulary reads hashed ids (see hash_tokens)
        vocab = int(arch["text_cfg"].get("vocab_size", TOKENIZER_VOCAB))
        self.text_vocab = vocab if vocab < TOKENIZER_VOCAB else None
        self.freeze_vision = bool(self.config.get("freeze_vision", True))
        self.freeze_text = bool(self.config.get("freeze_text", True))
        for name, p in self.clip.named_parameters():
            is_vision = name.startswith("visual.")
            p.requires_grad_(not (self.freeze_vision if is_vision else self.freeze_text) and name != "logit_scale")

        d = int(self.config["fusion_dim"])
        heads = int(self.config["fusion_heads"])
        hidden = int(self.config["head_hidden"])
        n_tok = self.grid[0] * self.grid[1]
        self.vis_proj = nn.Sequential(nn.LayerNorm(vis_width), nn.Linear(vis_width, d))
        self.vis_pos = nn.Parameter(torch.randn(1, n_tok, d) * 0.02)
        self.txt_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, d))
        self.film = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

        def enc_layer():
            return nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True,
                                              activation="gelu")

        def dec_layer():
            return nn.TransformerDecoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True,
                                              activation="gelu")

        n_enc, n_dec = int(self.config["fusion_encoder_layers"]), int(self.config["fusion_decoder_layers"])
        self.encoder = nn.ModuleList([enc_layer() for _ in range(n_enc)])
        self.decoder = nn.ModuleList([dec_layer() for _ in range(n_dec)])
        self.dec_norm = nn.LayerNorm(d)
        self.queries = nn.Parameter(torch.randn(2, d) * 0.02)  # 0: localisation, 1: pose
        self.heat_k = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        self.heat_q = nn.Linear(d, d)
        self.loc_head = _mlp(d, hidden, 5)  # box centre correction, box (w, h) through a sigmoid, presence logit
        gy, gx = torch.meshgrid((torch.arange(self.grid[0]) + 0.5) / self.grid[0],
                                (torch.arange(self.grid[1]) + 0.5) / self.grid[1], indexing="ij")
        self.register_buffer("patch_centres", torch.stack([gx, gy], -1).view(1, -1, 2), persistent=False)
        self.heat_log_temp = nn.Parameter(torch.zeros(()))  # sharpness of the map's softmax (kept positive)
        self.pose_head = _mlp(d, hidden, 9)  # 6D rotation, centre (u, v) correction, log depth ratio
        with torch.no_grad():  # start at identity rotation, the box centre, a typical depth ratio
            self.pose_head[-1].weight.mul_(0.1)
            self.pose_head[-1].bias.copy_(torch.tensor([1, 0, 0, 0, 1, 0, 0.0, 0.0, 1.0]))
        self._build_rotation_head(d, hidden)
        self.obj_head = _mlp(embed_dim, hidden, len(self.object_names))
        self.grasp_names, grasp_valid = grasp_tables(catalogue)
        self.grasp_head = _mlp(embed_dim, hidden, grasp_valid.shape[1])
        self.register_buffer("grasp_valid", grasp_valid, persistent=False)
        for name, table in zip(("sym_rots", "sym_axes", "sym_cont"), symmetry_tables(catalogue)):
            self.register_buffer(name, table, persistent=False)
        self.loss_weights = dict(self.config.get("loss_weights") or {})

    def _build_rotation_head(self, d: int, hidden: int) -> None:
        """``rotation_head: anchors``: a separate classifier over fixed anchor rotations (rot_anchor_head, on the
        pose query); the 6D output of pose_head becomes the residual from the chosen anchor. Only this
        module's keys are new, so such a network can start from a 6D checkpoint's weights."""
        self.rotation_head = str(self.config.get("rotation_head", "6d"))
        if self.rotation_head not in ROTATION_HEADS:
            raise ValueError(f"rotation_head must be one of {', '.join(ROTATION_HEADS)}; got {self.rotation_head!r}")
        if self.rotation_head == "anchors":
            n = int(self.config.get("rotation_anchors", rotation_anchors.DEFAULT_ANCHORS))
            anchors = torch.tensor(rotation_anchors.anchor_rotations(n), dtype=torch.float32)
            self.register_buffer("rot_anchors", anchors, persistent=False)  # rebuilt from the config
            self.rot_anchor_head = _mlp(d, hidden, len(anchors))

    # `--init` from a checkpoint without the module a config may add (the anchor head) is allowed
    init_optional = ("rot_anchor_head.",)

    def started_without(self, keys: list[str]) -> None:
        """``--init`` from a 6D checkpoint: its 6D output was a whole rotation, now a residual from the anchor,
        so those outputs start again at the identity."""
        if any(k.startswith("rot_anchor_head.") for k in keys):
            with torch.no_grad():
                self.pose_head[-1].weight[:6].normal_(0.0, 1e-3)
                self.pose_head[-1].bias[:6].copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))

    # -- state: frozen pretrained towers are not stored (they reload from 'weights') ----------------
    def _unstored(self, key: str) -> bool:
        if not self.pretrained or self.config.get("store_frozen_towers", False) or not key.startswith("clip."):
            return False
        return self.freeze_vision if key.startswith("clip.visual.") else self.freeze_text

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        sd = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for k in [k for k in sd if k.startswith(prefix) and self._unstored(k[len(prefix):])]:
            del sd[k]
        return sd

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._unstored(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"CLIP pose network state does not fit this config: missing {missing[:8]}, "
                               f"unexpected {result.unexpected_keys[:8]} (was the checkpoint made with another "
                               f"clip_model / clip_arch / fusion size?)")
        return result

    # -- towers -------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Frozen towers stay in eval mode while the fusion and heads train."""
        super().train(mode)
        if self.freeze_vision:
            self.clip.visual.eval()
        if self.freeze_text:
            for name, m in self.clip.named_children():
                if name != "visual":
                    m.eval()
        return self

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, width) of uint8 (B, 3, S, S) or float [0, 1] images."""
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image
        x = (x - self.pix_mean) / self.pix_std
        with torch.no_grad() if self.freeze_vision else contextlib.nullcontext():
            _, tokens = self.clip.visual(x)
        return tokens

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Projected text embedding (B, embed_dim) of tokenised prompts (open_clip tokenizer ids)."""
        if self.text_vocab:
            tokens = hash_tokens(tokens, self.text_vocab)
        with torch.no_grad() if self.freeze_text else contextlib.nullcontext():
            return self.clip.encode_text(tokens)

    # -- fusion and heads -----------------------------------------------------------------------
    def head(self, vis_tokens: torch.Tensor, text_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fuse patch tokens (B, N, W) with text embeddings (B, E); all outputs in input-normalised units."""
        text_emb = text_emb.float()
        v = self.vis_proj(vis_tokens.float()) + self.vis_pos
        t = self.txt_proj(text_emb)
        gamma, beta = self.film(t).unsqueeze(1).chunk(2, dim=-1)
        v = v * (1.0 + gamma) + beta
        for layer in self.encoder:
            v = layer(v)
        b, n, d = v.shape
        heat = (self.heat_k(v) * self.heat_q(t).unsqueeze(1)).sum(-1) / math.sqrt(d)
        q = self.queries.unsqueeze(0).expand(b, -1, -1) + t.unsqueeze(1)
        for layer in self.decoder:
            q = layer(q, v)
        q = self.dec_norm(q)
        loc = self.loc_head(q[:, 0])
        pose = self.pose_head(q[:, 1])
        # box centre: the similarity-weighted mean of the patch centres (soft-argmax of the text-patch map),
        # plus a small learned correction; the dense map supervision makes localisation learn fast
        window = 0.0 if self.training else float(self.config.get("peak_window", 0.0))
        centre = soft_argmax(heat * self.heat_log_temp.exp(), self.patch_centres, window)
        centre = centre + 0.25 * torch.tanh(loc[:, :2])
        out = {
            "heat": heat.view(b, *self.grid),
            "box": torch.cat([centre, torch.sigmoid(loc[:, 2:4])], dim=-1),
            "present": loc[:, 4],
            "rot6d": pose[:, :6],
            "R": sixd_to_matrix_torch(pose[:, :6]),
            "uv": centre + 0.25 * torch.tanh(pose[:, 6:8]),  # object centre: near the located box centre
            "logz": pose[:, 8],
            "obj_logits": self.obj_head(text_emb),
            "grasp_logits": self.grasp_head(text_emb),
        }
        if self.rotation_head == "anchors":  # the 6D output is the residual from the most likely anchor (float32)
            with torch.autocast(device_type=pose.device.type, enabled=False):
                residual = sixd_to_matrix_torch(pose[:, :6].float())
            out.update(rotation_anchors.decode(self.rot_anchor_head(q[:, 1]), residual, self.rot_anchors))
        return out

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        text_emb = batch["text_emb"] if "text_emb" in batch else self.encode_text(batch["tokens"])
        return self.head(self.encode_image(batch["image"]), text_emb)

    # -- loss -------------------------------------------------------------------------------------
    def rotation_loss(self, R_pred: torch.Tensor, R_gt: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
        """Symmetry-aware rotation loss per sample (B,).

        No symmetry: mean |R_pred - R_gt|. Discrete symmetries S_k (identity included): the
        minimum over k of mean |R_pred - R_gt S_k|, so every symmetric-equivalent pose is a
        zero-loss answer. Continuous symmetry about axis a: only the axis is observable, so
        mean |R_pred a - R_gt S_k a| (minimised over the discrete flips, if any).
        """
        sym = self.sym_rots[obj]  # (B, S, 3, 3)
        targets = R_gt.unsqueeze(1) @ sym  # (B, S, 3, 3)
        full = (R_pred.unsqueeze(1) - targets).abs().mean(dim=(-1, -2))  # (B, S)
        a = self.sym_axes[obj].unsqueeze(1).unsqueeze(-1)  # (B, 1, 3, 1)
        axis = ((R_pred.unsqueeze(1) @ a) - (targets @ a)).abs().mean(dim=(-1, -2))  # (B, S)
        per = torch.where(self.sym_cont[obj].unsqueeze(1), axis, full)
        return per.min(dim=1).values

    def _rotation_terms(self, out: dict, R_gt: torch.Tensor, obj: torch.Tensor, pf: torch.Tensor,
                        npos: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """(loss terms, logs) of the rotation over the present samples (weights ``pf``).

        6D: the symmetry-aware :meth:`rotation_loss` on R. Anchors: cross-entropy of the logits to the anchor
        nearest the ground truth (symmetry-aware, :func:`rotation_anchors.anchor_similarity`), plus
        :meth:`rotation_loss` on that anchor @ residual (teacher forcing: the residual learns to correct
        from the right anchor whatever the classifier says yet); logs the anchor top-1 accuracy
        ``rot_acc`` (a symmetry-equivalent anchor counts as right; NaN without a present sample).
        """
        if self.rotation_head != "anchors":
            return {"rot": (self.rotation_loss(out["R"], R_gt, obj) * pf).sum() / npos}, {}
        sim = rotation_anchors.anchor_similarity(self.rot_anchors, R_gt, self.sym_rots[obj], self.sym_axes[obj],
                                                 self.sym_cont[obj])
        label = rotation_anchors.nearest_anchor(sim)
        R_forced = rotation_anchors.compose(self.rot_anchors, label, out["rot_res"])
        logits = out["rot_logits"].float()
        terms = {"rot": (self.rotation_loss(R_forced, R_gt, obj) * pf).sum() / npos,
                 "rot_ce": (F.cross_entropy(logits, label, reduction="none") * pf).sum() / npos}
        with torch.no_grad():
            picked = sim.gather(1, logits.argmax(-1, keepdim=True))[:, 0]
            hit = (picked >= sim.gather(1, label[:, None])[:, 0] - rotation_anchors.TIE_TOL).float()
            acc = float((hit * pf).sum() / pf.sum()) if float(pf.sum()) > 0 else float("nan")
        return terms, {"rot_acc": acc}

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        from torchvision.ops import generalized_box_iou_loss

        out = self(batch)
        w = {"present": 1.0, "heat": 1.0, "heat_ce": 0.5, "obj": 0.5, "grasp": 0.5, "box": 2.0, "giou": 1.0,
             "rot": 2.0, "rot_ce": 1.0, "uv": 4.0, "logz": 2.0, **self.loss_weights}
        present = batch["present"].float()
        pos = present > 0.5
        npos = pos.float().sum().clamp(min=1.0)
        obj = batch["obj"].long()
        terms = {
            "present": F.binary_cross_entropy_with_logits(out["present"], present),
            "heat": F.binary_cross_entropy_with_logits(out["heat"], batch["heat"].float()),
            "obj": F.cross_entropy(out["obj_logits"], obj),
        }
        # the map as a distribution over patches (what the soft-argmax box centre reads): cross-entropy to
        # the object's share of each patch; balanced however few patches the object covers
        heat_t = batch["heat"].float().flatten(1)
        dist = heat_t / heat_t.sum(-1, keepdim=True).clamp(min=1e-6)
        logp = torch.log_softmax(out["heat"].flatten(1) * self.heat_log_temp.exp(), dim=-1)
        has = pos & (heat_t.sum(-1) > 0)
        terms["heat_ce"] = (-(dist * logp).sum(-1) * has.float()).sum() / has.float().sum().clamp(min=1.0)
        glogits = out["grasp_logits"].masked_fill(~self.grasp_valid[obj], -1e4)
        terms["grasp"] = F.cross_entropy(glogits, batch["grasp"].long())
        box_gt = batch["box"].float()  # x0, y0, x1, y1 in input units
        cxcy, wh = out["box"][:, :2], out["box"][:, 2:]
        box_pred = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=-1)
        pf = pos.float()
        terms["box"] = ((box_pred - box_gt).abs().mean(-1) * pf).sum() / npos
        terms["giou"] = (generalized_box_iou_loss(box_pred, box_gt, reduction="none") * pf).sum() / npos
        rot_terms, rot_logs = self._rotation_terms(out, batch["rot"].float(), obj, pf, npos)
        terms.update(rot_terms)
        terms["uv"] = ((out["uv"] - batch["uv"].float()).abs().mean(-1) * pf).sum() / npos
        terms["logz"] = ((out["logz"] - batch["logz"].float()).abs() * pf).sum() / npos
        total = sum(w[k] * v for k, v in terms.items())
        logs = {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}, **rot_logs}
        with torch.no_grad():
            logs["obj_acc"] = float((out["obj_logits"].argmax(-1) == obj).float().mean())
            logs["present_acc"] = float(((out["present"] > 0) == pos).float().mean())
        return total, logs
