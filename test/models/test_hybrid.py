"""Hybrid backend: checkpoints and loading, prompt-driven selection (CLIP) posed by DINOv2 in that region only.

The random tiny CLIP network cannot pick objects, so the selection tests replace the CLIP stage's output
(in the test only) by a chosen object, box and grasp, and the DINOv2 stage by the oracle network (perfect
segmentation and votes): what is checked is that the hybrid poses *that* object, in *that* region only,
with DINOv2's geometry and CLIP's name, grasp frame and score.
"""
import dataclasses

import numpy as np
import pytest
import torch

from vfm_pose_ros.core.affine import apply_affine, in_box, invert_affine
from vfm_pose_ros.core.metrics import add, adi
from vfm_pose_ros.core.types import Frame, ObjectPose, Prediction
from vfm_pose_ros.models import clip, dinov2, hybrid, load_estimator
from vfm_pose_ros.models.checkpoint import CheckpointError, save_checkpoint

CLIP_TINY = clip.merged_config({
    "clip_arch": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 1024, "width": 64, "heads": 2, "layers": 2},
    },
    "fusion_dim": 64, "fusion_heads": 4, "head_hidden": 96}, small=True)
DINO_TINY = {
    **dinov2.SMALL_CONFIG,
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 112, "head_channels": 16, "detail_channels": [8, 16], "vote_hypotheses": 64,
}


@pytest.fixture(scope="module")
def checkpoints(catalogue, tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    cnet = clip.build_net(CLIP_TINY, catalogue)
    dnet = dinov2.build_net(DINO_TINY, catalogue)
    c = save_checkpoint(d / "clip_small.pt", cnet, backend="clip", config=cnet.config, catalogue=catalogue,
                        data_hash="x", epoch=0)
    g = save_checkpoint(d / "dinov2_small.pt", dnet, backend="dinov2", config=dnet.config, catalogue=catalogue,
                        data_hash="x", epoch=0)
    return c, g


def gt_box(g) -> np.ndarray:
    ys, xs = np.nonzero(g.mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)


def make_frame(scene, prompt=None, depth=True) -> Frame:
    f = Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth if depth else None, prompt=prompt)
    f.gts = scene.gts  # what the oracle reads
    return f


# -- checkpoints and loading ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".pt"])
def test_hybrid_checkpoint_references_both(checkpoints, tmp_path, suffix):
    c, g = checkpoints
    path = hybrid.save_hybrid_checkpoint(tmp_path / f"hybrid{suffix}", c, g, region="clip")
    est = load_estimator(path, device="cpu", backend="hybrid", precision="fp32")
    assert isinstance(est, hybrid.Estimator) and est.backend == "hybrid"
    assert isinstance(est.clip, clip.Estimator) and isinstance(est.dinov2, dinov2.Estimator)
    assert est.config["region"] == "clip" and est.catalogue.names == ["driller_like", "can_like"] or \
        sorted(est.catalogue.names) == ["can_like", "driller_like"]
    with pytest.raises(ValueError, match="not 'clip'"):
        load_estimator(path, device="cpu", backend="clip")


def test_relative_references_and_defaults(checkpoints, tmp_path, monkeypatch):
    import shutil

    c, g = checkpoints
    (tmp_path / "models").mkdir()
    shutil.copy(c, tmp_path / "models" / "clip_small.pt")
    shutil.copy(g, tmp_path / "models" / "dinov2_small.pt")
    spec = tmp_path / "models" / "hybrid_small.yaml"
    spec.write_text("backend: hybrid\nclip_checkpoint: clip_small.pt\ndinov2_checkpoint: dinov2_small.pt\n")
    monkeypatch.chdir(tmp_path / "models")  # relative references resolve against the spec's folder, not the cwd
    assert isinstance(hybrid.Estimator.from_checkpoint(spec, device="cpu"), hybrid.Estimator)
    monkeypatch.chdir(tmp_path)  # no checkpoint: models/clip_small.pt + models/dinov2_small.pt
    est = load_estimator(None, device="cpu", backend="hybrid")
    assert est.config["clip_checkpoint"].endswith("clip_small.pt")
    two = hybrid.Estimator.from_checkpoints(c, g, device="cpu", region="clip", dinov2_icp_starts=1)
    assert two.dinov2.config["icp_starts"] == 1 and two.config["region"] == "clip"
    both = hybrid.Estimator.from_checkpoints(c, g, device="cpu", icp_refine_top=16)  # depth-stage keys: both stages
    assert both.dinov2.depth_stage.refine_top == both.clip.depth_stage.refine_top == 16
    with pytest.raises(ValueError, match="clip_weights"):
        hybrid.Estimator.from_checkpoints(c, g, device="cpu", weights="x.safetensors")
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: hybrid\nclip_checkpoint: nope_clip.pt\ndinov2_checkpoint: dinov2_small.pt\n")
    with pytest.raises(CheckpointError, match="vfm-pose train --backend clip"):
        load_estimator(bad, device="cpu")
    with pytest.raises(ValueError, match="has no network"):
        hybrid.build_net({}, None)


def test_real_stack_runs(checkpoints, scene):
    """The real (random) CLIP and DINOv2 networks end to end: plumbing and output types."""
    est = hybrid.Estimator.from_checkpoints(*checkpoints, device="cpu", dinov2_icp_starts=1)
    for prompt in ("the driller", None):
        out = est.predict(Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth, prompt=prompt))
        assert all(isinstance(p, hybrid.HybridPose) and p.stage in ("dinov2", "clip") for p in out)
        assert {"clip_total", "total"} <= set(out.timings_ms)
        if prompt:
            assert len(out) <= 1


# -- prompt-driven selection --------------------------------------------------------------------------


class FakeClip:
    """Stands in for CLIP's decisions (test only): the object a prompt names, a box for it and a grasp frame."""

    def __init__(self, boxes: dict, grasps: dict, score=0.8):
        self.boxes, self.grasps, self.score, self.calls = boxes, grasps, score, []

    def __call__(self, frames):
        out = []
        for f in frames:
            self.calls.append(f)
            if f.boxes_2d:
                names = list(f.boxes_2d)
            elif f.prompt:
                names = [n for n in self.boxes if n.split("_")[0] in f.prompt]
            else:
                names = list(self.boxes)
            out.append(Prediction([ObjectPose(name=n, R=np.eye(3), t=np.array([0.0, 0.0, 1.5]), score=self.score,
                                              grasp_frame=self.grasps.get(n), box_2d=np.asarray(
                                                  f.boxes_2d[n] if f.boxes_2d else self.boxes[n], float))
                                   for n in names]))
        return out


@pytest.fixture
def oracle_hybrid(checkpoints, catalogue, monkeypatch):
    def build(boxes, grasps, **cfg):
        c = clip.Estimator.from_checkpoint(checkpoints[0], device="cpu")
        fake = FakeClip(boxes, grasps)
        monkeypatch.setattr(c, "predict_batch", fake)
        d = dinov2.OracleEstimator(dinov2.build_net(DINO_TINY, catalogue), catalogue, device="cpu")
        est = hybrid.Estimator(c, d, cfg)
        seen = {"boxes": [], "crops": [], "in_stage2": False}
        real_predict, real_run = d.predict_batch, d._run

        def spy_predict(frames):
            seen["boxes"] += [dict(f.boxes_2d) for f in frames]
            seen["in_stage2"] = True
            try:
                return real_predict(frames)
            finally:
                seen["in_stage2"] = False

        def spy_run(crops, timer, affines=None, frames=None):
            if seen["in_stage2"]:
                for A in affines:  # the image point at each stage-2 crop's centre
                    seen["crops"].append(apply_affine(invert_affine(A), [[55.5, 55.5]])[0])
            return real_run(crops, timer, affines, frames)

        monkeypatch.setattr(d, "predict_batch", spy_predict)
        monkeypatch.setattr(d, "_run", spy_run)
        return est, fake, seen

    return build


def _err(catalogue, p, g):
    obj = catalogue[g.name]
    return (adi if obj.symmetric else add)(p.R, p.t, g.R, g.t, obj.eval_points(500))


@pytest.mark.parametrize("region", ["match", "clip"])
@pytest.mark.parametrize("target,grasp", [("driller_like", "handle"), ("can_like", "top")])
def test_prompt_selects_object_and_dinov2_poses_it_in_its_region(oracle_hybrid, scene, catalogue, region, target,
                                                                grasp):
    gts = {g.name: g for g in scene.gts}
    coarse = {}
    for n, g in gts.items():  # CLIP's box: coarse (grown 25 % and shifted), as a 32 px-patch regressor gives
        b = gt_box(g)
        w, h = b[2] - b[0], b[3] - b[1]
        coarse[n] = b + np.array([-0.1 * w, -0.15 * h, 0.15 * w, 0.1 * h])
    est, fake, seen = oracle_hybrid(coarse, {"driller_like": "handle", "can_like": "top"}, region=region)
    prompt = f"grasp the {target.split('_')[0]} by the {grasp}"
    out = est.predict(make_frame(scene, prompt))
    assert len(out) == 1
    p = out[0]
    assert isinstance(p, hybrid.HybridPose) and p.stage == "dinov2"
    assert p.name == target and p.grasp_frame == grasp and p.clip_score == pytest.approx(0.8)  # CLIP's choice
    assert _err(catalogue, p, gts[target]) < 0.004  # DINOv2's geometry (CLIP's stand-in pose is 1.5 m away)
    assert 0 < p.score <= 1 and p.geometry_score is not None
    # the DINOv2 stage saw only the chosen object's region: its boxes and every stage-2 crop centre
    assert [set(b) for b in seen["boxes"]] == [{target}]
    assert seen["crops"] and all(in_box([c], coarse[target], 0.05)[0] for c in seen["crops"])
    other = next(n for n in gts if n != target)  # (the two objects' boxes overlap in this scene)
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    assert all(np.linalg.norm(c - centre(gt_box(gts[target]))) < np.linalg.norm(c - centre(gt_box(gts[other])))
               for c in seen["crops"])
    if region == "match":  # DINOv2's tight component box replaced CLIP's coarse one
        assert in_box(np.reshape(p.box_2d, (2, 2)), coarse[target]).all()
        assert not np.allclose(p.box_2d, coarse[target])
    else:
        assert np.allclose(p.box_2d, coarse[target])
    assert fake.calls[0].depth is None  # CLIP's stage skips its ICP: DINOv2 does the geometry


def test_without_prompt_every_object_clip_finds(oracle_hybrid, scene, catalogue):
    gts = {g.name: g for g in scene.gts}
    est, _, seen = oracle_hybrid({n: gt_box(g) for n, g in gts.items()}, {"driller_like": "body"})
    out = est.predict(make_frame(scene, None))
    assert sorted(p.name for p in out) == sorted(gts)
    for p in out:
        assert p.stage == "dinov2" and _err(catalogue, p, gts[p.name]) < 0.004
    assert next(p for p in out if p.name == "driller_like").grasp_frame == "body"
    # CLIP found only the driller: the can, though DINOv2 would see it, is filtered out semantically
    est, _, _ = oracle_hybrid({"driller_like": gt_box(gts["driller_like"])}, {})
    assert [p.name for p in est.predict(make_frame(scene, None))] == ["driller_like"]


@pytest.mark.parametrize("fallback", ["clip", "none"])
def test_fallback_when_dinov2_finds_nothing(oracle_hybrid, scene, fallback):
    empty = np.array([560.0, 400.0, 630.0, 470.0])  # a corner with no object: DINOv2's votes have no mask there
    assert not any(in_box([[(empty[0] + empty[2]) / 2, (empty[1] + empty[3]) / 2]], gt_box(g))[0]
                   for g in scene.gts)
    est, _, _ = oracle_hybrid({"driller_like": empty}, {"driller_like": "handle"}, region="clip", fallback=fallback,
                              confirm=False)
    out = est.predict(make_frame(scene, "the driller", depth=False))
    if fallback == "none":
        assert out == []
    else:
        assert len(out) == 1 and out[0].stage == "clip" and out[0].grasp_frame == "handle"
        assert np.allclose(out[0].t, [0, 0, 1.5])  # CLIP's own pose


@pytest.mark.parametrize("region", ["match", "clip"])
def test_confirm_poses_only_what_dinov2_also_sees(oracle_hybrid, scene, region, monkeypatch):
    """confirm (default): CLIP's choice in a corner DINOv2's segmentation finds empty gives nothing, fallback or
    not; a choice DINOv2 confirms carries DINOv2's detection score in its geometry score."""
    empty = np.array([560.0, 400.0, 630.0, 470.0])
    est, _, _ = oracle_hybrid({"driller_like": empty}, {"driller_like": "handle"}, region=region, fallback="clip")
    assert est.predict(make_frame(scene, "the driller", depth=False)) == []
    gts = {g.name: g for g in scene.gts}
    est, _, _ = oracle_hybrid({"driller_like": gt_box(gts["driller_like"])}, {"driller_like": "handle"}, region=region)
    frame = make_frame(scene, "the driller", depth=False)
    real_detect = est.dinov2.detect
    monkeypatch.setattr(est.dinov2, "detect", lambda frames, timer=None: [  # the oracle's masks are sure: damp them
        {n: [(b, 0.6 * s) for b, s in found] for n, found in d.items()} for d in real_detect(frames, timer)])
    (det_box, det_score), = est.dinov2.detect([frame])[0]["driller_like"][:1]
    out = est.predict(frame)
    assert len(out) == 1 and out[0].stage == "dinov2" and 0 < det_score < 1
    geo_alone = est.dinov2.predict(hybrid._replace(frame, boxes_2d={"driller_like": out[0].box_2d}))[0].score
    assert out[0].geometry_score == pytest.approx(geo_alone * det_score)


def test_track_keeps_clip_choice(oracle_hybrid, scene, catalogue):
    gts = {g.name: g for g in scene.gts}
    est, _, _ = oracle_hybrid({"driller_like": gt_box(gts["driller_like"])}, {"driller_like": "chuck"})
    first = est.predict(make_frame(scene, "the driller"))
    moved = [dataclasses.replace(first[0], t=first[0].t + np.array([0.005, -0.004, 0.01]))]
    out = est.track(make_frame(scene, "the driller"), moved, min_fitness=0.5)
    assert out is not None and len(out) == 1
    p = out[0]
    assert p.stage == "track" and p.grasp_frame == "chuck" and p.clip_score == pytest.approx(0.8)
    assert _err(catalogue, p, gts["driller_like"]) < 0.004
    assert est.track(make_frame(scene, "the driller", depth=False), moved) is None
