"""CLIP backend prompt conditioning: the prompt picks the object and the grasp frame.

1. A tiny CLIP pose network trained for a few dozen steps on a toy two-object set (a red and a
   blue shape in every frame, on random sides) must return the object the prompt names, and the
   grasp head must tell "by the handle" from "by the body".
2. Grasp selection by CLIP text similarity uses a real (tiny, random) open_clip text tower; the
   chosen frame must be the argmax of similarities computed here independently.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfm_pose_ros.core.types import Frame
from vfm_pose_ros.models import clip
from vfm_pose_ros.models.clip_data import grasp_candidate_texts
from vfm_pose_ros.models.clip_net import hash_tokens

from .test_clip import TINY, one_thread, toy_catalogue, toy_frames  # noqa: F401 (one_thread: autouse fixture)


def _train_toy(steps: int = 80, seed: int = 0):
    torch.manual_seed(seed)
    cat = toy_catalogue()
    cfg = {**TINY, "full_frame_prob": 0.7, "negative_prob": 0.0, "part_prompt_prob": 0.5}
    net = clip.build_net(cfg, cat)
    ds = clip.ClipPoseDataset(toy_frames(cat, 48, seed=seed), cat, net.config, train=True, seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    net.train()
    step, logs = 0, {}
    while step < steps:
        for batch in loader:
            loss, logs = net.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return net.eval(), cat, logs


@pytest.fixture(scope="module")
def toy_model():
    return _train_toy()


def test_prompt_decides_the_object_and_the_grasp_frame(toy_model):
    net, cat, logs = toy_model
    est = clip.Estimator(net, cat, device="cpu", config={"grasp_select": "head", "prompt_resolver": "network"})
    frames = toy_frames(cat, 12, seed=99)  # unseen frames
    right = total = 0
    for f in frames:
        for prompt, want in (("the driller", "driller_like"), ("the can", "can_like")):
            (pose,) = est.predict(Frame(rgb=f.rgb, K=f.K, prompt=prompt))
            gt = next(g for g in f.gts if g.name == want)
            other = next(g for g in f.gts if g.name != want)
            cx = 0.5 * (pose.box_2d[0] + pose.box_2d[2])  # the toy objects lie left/right of each other
            ys, xs = np.nonzero(gt.mask)
            oys, oxs = np.nonzero(other.mask)
            right += pose.name == want and abs(cx - xs.mean()) < abs(cx - oxs.mean())
            total += 1
    assert right / total >= 0.8, (right, total, logs)
    handle = est.predict(Frame(rgb=frames[0].rgb, K=frames[0].K, prompt="grasp the driller by the handle"))[0]
    body = est.predict(Frame(rgb=frames[0].rgb, K=frames[0].K, prompt="grasp the driller by the body"))[0]
    assert (handle.grasp_frame, body.grasp_frame) == ("handle", "body")
    lid = est.predict(Frame(rgb=frames[0].rgb, K=frames[0].K, prompt="grasp the can by the top"))[0]
    assert (lid.name, lid.grasp_frame) == ("can_like", "top")


class _ToyDataset:
    """The two methods of BopDataset that evaluate_prompts uses, over toy frames."""

    def __init__(self, frames):
        self.frames = frames

    def keys(self):
        return [(0, i) for i in range(len(self.frames))]

    def frame(self, scene_id, im_id):
        f = self.frames[im_id]
        return SimpleNamespace(K=f.K, gts=f.gts, to_frame=lambda: Frame(rgb=f.rgb, K=f.K))


def test_evaluate_prompts_scores_selection(toy_model):
    net, cat, _ = toy_model
    est = clip.Estimator(net, cat, device="cpu", config={"grasp_select": "head", "prompt_resolver": "network"})
    rep = clip.evaluate_prompts(est, _ToyDataset(toy_frames(cat, 6, seed=7)), progress=False)
    assert rep["prompts"] == 12 and rep["grasp_checks"] == 12
    assert rep["name_acc"] == 1.0 and rep["selection_acc"] >= 0.8 and rep["grasp_frames_all_right"] >= 0.5


def test_grasp_frame_by_text_similarity_is_the_argmax():
    torch.manual_seed(0)
    cat = toy_catalogue()
    net = clip.build_net(TINY, cat)
    est = clip.Estimator(net, cat, device="cpu", config={"grasp_select": "text", "prompt_resolver": "network"})
    tokenizer = clip.get_tokenizer(net.config)
    chosen = set()
    for prompt in ("grasp the driller by the handle", "grasp the driller by the body", "the driller",
                   "hold the drill near its battery", "a photo of the driller"):
        obj = cat["driller_like"]
        texts = grasp_candidate_texts(obj)
        with torch.no_grad():  # independent computation: tokenizer + open_clip text tower + cosine
            emb = F.normalize(net.clip.encode_text(hash_tokens(tokenizer([prompt, *texts]),
                                                                             net.text_vocab)), dim=-1)
        sims = (emb[1:] @ emb[0]).numpy()
        np.testing.assert_allclose(est.grasp_similarities(prompt, obj), sims, atol=1e-5)
        k = int(np.argmax(sims))
        want = None if k == 0 else list(obj.grasp_frames)[k - 1]
        got = est.select_grasp(prompt, cat.names.index("driller_like"))
        assert got == want
        chosen.add(got)
        # the cache serves the second call
        assert prompt in est._text_cache
