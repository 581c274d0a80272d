"""CLIP ``rotation_head: anchors``: the anchor sets, the symmetry-aware nearest-anchor labels, and the network's
forward, loss and predict with the anchor head (tiny configurations; the learnability variant is in
test_learnability.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vfm_pose_ros.core.catalogue import Symmetry
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, is_rotation, make_T
from vfm_pose_ros.core.types import Frame
from vfm_pose_ros.models import clip
from vfm_pose_ros.models.rotation_anchors import (
    anchor_rotations,
    anchor_similarity,
    covering_radius_deg,
    nearest_anchor,
)

from .test_clip import TINY, one_thread, random_batch, toy_catalogue, toy_frames  # noqa: F401 (one_thread: autouse)

ANCHORS = {**TINY, "rotation_head": "anchors"}


def _angles_deg(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Geodesic angles (degrees) between rotations A (..., 3, 3) and B (..., 3, 3)."""
    cos = (np.einsum("...ij,...ij->...", A, B) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _labels(anchors: np.ndarray, R: np.ndarray, net, obj: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, similarities) of rotations R (B, 3, 3) for catalogue object ``obj`` through the net's tables."""
    o = torch.full((len(R),), obj)
    sim = anchor_similarity(torch.tensor(anchors, dtype=torch.float32), torch.tensor(R, dtype=torch.float32),
                            net.sym_rots[o], net.sym_axes[o], net.sym_cont[o])
    return nearest_anchor(sim).numpy(), sim.numpy()


def test_anchor_sets_cover_so3():
    ico = anchor_rotations()  # the default: the 60 rotations of the icosahedral group
    assert ico.shape == (60, 3, 3) and all(is_rotation(A, tol=1e-9) for A in ico)
    gaps = _angles_deg(ico[:, None], ico[None])
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() == pytest.approx(72.0, abs=1e-6)  # a group: every anchor's nearest neighbours 72 deg away
    # covering radius: every rotation within 44.48 deg of an anchor (found by local search; sampling approaches
    # it from below), so the residual never has to correct more than that
    radius = covering_radius_deg(ico, samples=50_000)
    assert 42.0 < radius <= 44.5, radius
    # any other count: a super-Fibonacci spiral, near-uniform (128 points reach about the icosahedral radius)
    fib = anchor_rotations(128)
    assert fib.shape == (128, 3, 3) and all(is_rotation(A, tol=1e-9) for A in fib)
    assert covering_radius_deg(fib, samples=50_000) < 48.0
    assert covering_radius_deg(anchor_rotations(24), samples=20_000) < 63.0  # the octahedral group
    with pytest.raises(ValueError, match="rotation_anchors"):
        anchor_rotations(1)


def test_labels_without_symmetry_are_the_nearest_anchor():
    net = clip.build_net(ANCHORS, toy_catalogue())
    anchors = net.rot_anchors.numpy()
    R = axis_angle_to_matrix(np.random.default_rng(0).normal(size=(200, 3))).reshape(-1, 3, 3)
    labels, _ = _labels(anchors, R, net, obj=0)  # driller_like: no symmetry
    dist = _angles_deg(anchors[None], R[:, None])  # (B, N)
    np.testing.assert_allclose(dist[np.arange(len(R)), labels], dist.min(1), atol=0.05)
    assert dist.min(1).max() <= 44.5


def test_discrete_symmetry_labels_are_the_same_for_equivalent_poses():
    cat = toy_catalogue()
    # a flip about an axis that is none of the icosahedral group's, so R and R S are not anchor-aligned twins
    axis = np.array([0.3, -0.5, 0.81])
    flip = make_T(axis_angle_to_matrix(np.pi * axis / np.linalg.norm(axis)), [0, 0, 0])
    cat.objects["driller_like"].symmetry = Symmetry("discrete", transforms=[flip])
    net = clip.build_net(ANCHORS, cat)
    anchors = net.rot_anchors.numpy()
    R = axis_angle_to_matrix(np.random.default_rng(1).normal(size=(100, 3))).reshape(-1, 3, 3)
    a, sim_a = _labels(anchors, R, net, obj=0)
    b, sim_b = _labels(anchors, R @ flip[:3, :3], net, obj=0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sim_a, sim_b, atol=1e-5)
    # and the label is the anchor nearest to either equivalent pose
    dist = np.minimum(_angles_deg(anchors[None], R[:, None]), _angles_deg(anchors[None], (R @ flip[:3, :3])[:, None]))
    np.testing.assert_allclose(dist[np.arange(len(R)), a], dist.min(1), atol=0.05)
    # without the symmetry the flipped poses mostly get other anchors: the tables are what made them agree
    plain = clip.build_net(ANCHORS, toy_catalogue())
    assert (_labels(anchors, R, plain, 0)[0] != _labels(anchors, R @ flip[:3, :3], plain, 0)[0]).mean() > 0.5


def test_continuous_symmetry_labels_follow_the_axis_only():
    net = clip.build_net(ANCHORS, toy_catalogue())  # can_like (1): continuous symmetry about z
    anchors = net.rot_anchors.numpy()
    z = np.array([0.0, 0.0, 1.0])
    rng = np.random.default_rng(2)
    R = axis_angle_to_matrix(rng.normal(size=(100, 3))).reshape(-1, 3, 3)

    def axis_error(labels, R):
        cos = np.einsum("bi,bi->b", anchors[labels] @ z, R @ z)
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    base = axis_error(_labels(anchors, R, net, 1)[0], R)
    for angle in (0.4, 1.3, 2.9):
        spun = R @ axis_angle_to_matrix(angle * z)  # a rotation about the can's axis: the same view
        labels, _ = _labels(anchors, spun, net, 1)
        np.testing.assert_allclose(axis_error(labels, spun), base, atol=0.05)
    # the label's axis is the nearest anchor axis: within the covering radius of the anchors' axis directions
    directions = anchors @ z
    best = np.degrees(np.arccos(np.clip((R @ z) @ directions.T, -1, 1))).min(1)
    np.testing.assert_allclose(base, best, atol=0.05)


def test_forward_loss_and_checkpoint_keys():
    torch.manual_seed(0)
    cat = toy_catalogue()
    net = clip.build_net(ANCHORS, cat)
    batch = random_batch(net)
    out = net(batch)
    assert out["rot_logits"].shape == (3, 60) and out["rot_logits"].dtype == torch.float32
    best = net.rot_anchors[out["rot_logits"].argmax(-1)]
    torch.testing.assert_close(out["R"], best @ out["rot_res"])
    assert all(is_rotation(R, tol=1e-5) for R in out["R"].detach().double().numpy())
    loss, logs = net.loss(batch)
    loss.backward()
    assert np.isfinite(float(loss.detach())) and {"rot", "rot_ce", "rot_acc"} <= set(logs)
    assert logs["rot_ce"] == pytest.approx(np.log(60), abs=0.5)  # untrained: about uniform over the anchors
    assert net.rot_anchor_head[-1].weight.grad.abs().sum() > 0 and net.pose_head[-1].weight.grad.abs().sum() > 0
    # a 6D network's weights (the shipped checkpoints) fit: only the new head's keys are missing
    six = clip.build_net(TINY, cat)
    assert six.rotation_head == "6d" and not hasattr(six, "rot_anchor_head") and "rot_ce" not in six.loss(batch)[1]
    result = net.load_state_dict(six.state_dict(), strict=False)
    assert not result.unexpected_keys and {k.split(".")[0] for k in result.missing_keys} == {"rot_anchor_head"}
    with pytest.raises(ValueError, match="rotation_head"):
        clip.build_net({**TINY, "rotation_head": "quaternion"}, cat)


def test_residual_is_teacher_forced_from_the_ground_truths_anchor():
    """An identity residual and a ground truth on an anchor: no rotation loss whatever the classifier says."""
    torch.manual_seed(0)
    net = clip.build_net(ANCHORS, toy_catalogue())
    with torch.no_grad():  # pose_head's 6D output: exactly the identity
        net.pose_head[-1].weight.zero_()
        net.rot_anchor_head[-1].weight.zero_()
        net.rot_anchor_head[-1].bias.copy_(torch.arange(60.0))  # the classifier insists on the last anchor
    batch = random_batch(net, n=2)  # driller, can
    batch["rot"] = net.rot_anchors[[7, 23]].clone()
    _, logs = net.loss(batch)
    assert logs["rot"] < 1e-6 and logs["rot_acc"] == 0.0 and logs["rot_ce"] > 10.0
    with torch.no_grad():
        net.rot_anchor_head[-1].bias.zero_()
        net.rot_anchor_head[-1].bias[7] = 30.0  # right for the driller; the can (present) asks for anchor 23
        net.rot_anchor_head[-1].bias[23] = 29.0
    _, logs = net.loss(batch)
    assert logs["rot_acc"] == pytest.approx(0.5)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_predict_with_the_anchor_head(precision):
    torch.manual_seed(0)
    cat = toy_catalogue()
    net = clip.build_net(ANCHORS, cat)
    est = clip.Estimator(net, cat, device="cpu", precision=precision,
                         config={"grasp_select": "head", "prompt_resolver": "network", "min_score": 0.0})
    frame = toy_frames(cat, 1, seed=5)[0]
    poses = est.predict(Frame(rgb=frame.rgb, K=frame.K))
    assert {p.name for p in poses} == set(cat.names)
    for p in poses:
        assert p.R.dtype == np.float64 and is_rotation(p.R, tol=1e-5) and np.all(np.isfinite(p.t))
    # under half-precision autocast the anchor choice and the rotation stay float32 (argmax over float16
    # logits could tie; a float16 rotation is orthonormal to 1e-3 only)
    batch = random_batch(net, n=2)
    with torch.no_grad(), est.autocast():
        out = net(batch)
    assert out["rot_logits"].dtype == out["R"].dtype == torch.float32
    assert out["rot6d"].dtype == (torch.float16 if precision == "fp16" else torch.float32)


def test_init_starts_an_anchor_network_from_a_6d_checkpoint(tmp_path, capsys):
    """`vfm-pose train --init` from a 6D checkpoint: every old tensor loads, the anchor head is new and the 6D
    outputs (now a residual) start again at the identity."""
    from vfm_pose_ros.models.checkpoint import load_checkpoint
    from vfm_pose_ros.models.training import fit

    cat = toy_catalogue()
    frames = toy_frames(cat, 2, seed=0)
    first = tmp_path / "six.pt"
    fit("clip", TINY, frames, None, cat, first, epochs=1, lr=3e-3, batch_size=2, progress=False, max_steps=1)
    capsys.readouterr()
    s = fit("clip", ANCHORS, frames, None, cat, tmp_path / "anchors.pt", epochs=1, lr=0.0, batch_size=2,
            progress=False, max_steps=1, init=first)
    printed = capsys.readouterr().out
    assert "new in this config, left at their initial values: rot_anchor_head." in printed, printed
    want, got = load_checkpoint(first)["state_dict"], s["net"].state_dict()
    assert {k for k in got if k not in want} == {k for k in got if k.startswith("rot_anchor_head.")} != set()
    bias = "pose_head.3.bias"  # the final Linear of the pose MLP
    torch.testing.assert_close(got[bias][:6].float(), torch.tensor([1.0, 0, 0, 0, 1, 0]))
    torch.testing.assert_close(got[bias][6:].float(), want[bias][6:].float())  # lr 0: as loaded
