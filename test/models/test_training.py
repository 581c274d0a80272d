"""The shared training loop: the loss falls, resume continues, budgets stop, DDP (2 CPU processes, gloo) syncs."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.models import dinov2
from vfm_pose_ros.models.checkpoint import dataset_hash, load_checkpoint
from vfm_pose_ros.models.training import fit, lr_factor, resume_path
from vfm_pose_ros.paths import default_catalogue_dir
from vfm_pose_ros.report.figures import training_curves

TINY = {
    **dinov2.SMALL_CONFIG,
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 56, "head_channels": 16, "detail_channels": [8, 16], "vote_hypotheses": 32, "icp_starts": 1,
    # no augmentation: the loss must fall on a fixed tiny set
    "aug": {"color": 0.0, "blur": 0.0, "noise": 0.0, "occluders": 0.0}, "full_frame_prob": 0.0,
    "train_margin_range": [1.3, 1.3], "train_shift": 0.0,
}


def make_tiny_bop(root, frames=4, test_frames=2):
    """A 160x120 synthetic BOP dataset of the default objects (train and test splits of other streams)."""
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator, write_split

    cat = Catalogue.from_dir(default_catalogue_dir())
    K = LMO_K.copy()
    K[:2] *= 0.25
    gen = SceneGenerator(list(cat), SceneConfig(width=160, height=120, K=K, distance=(0.5, 0.8), distractors=0,
                                                min_visib_pixels=20), seed=1)
    write_split(gen, root, "train", frames, 0, progress=False)
    write_split(gen, root, "test", test_frames, 1, progress=False)
    return cat


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vfm_pose_ros.data.bop import BopDataset

    root = tmp_path_factory.mktemp("tiny_bop")
    cat = make_tiny_bop(root)
    return (root, cat, BopDataset(root, "train", catalogue=cat, load_masks=True, load_depth=False),
            BopDataset(root, "test", catalogue=cat))


def test_lr_schedule():
    assert lr_factor(0.0) < 0.05 and lr_factor(0.03) == pytest.approx(1.0)
    assert lr_factor(0.5) < 1.0 and lr_factor(1.0) == pytest.approx(0.05)
    assert all(lr_factor(a) >= lr_factor(b) for a, b in zip(np.linspace(0.03, 1, 20), np.linspace(0.08, 1, 20)))


def test_loss_falls_and_resume(tmp_path, tiny):
    root, cat, train, val = tiny
    out = tmp_path / "ck.pt"
    s1 = fit("dinov2", TINY, train, val, cat, out, epochs=8, lr=3e-3, batch_size=4, val_frames=1, progress=False,
             max_steps=8)
    losses = [h["loss"] for h in s1["history"]]
    assert len(losses) == 4 and s1["steps"] == 8  # 8 samples / batch 4 = 2 steps per epoch
    assert losses[-1] < 0.8 * losses[0], losses
    assert out.is_file() and resume_path(out).is_file()
    ck = load_checkpoint(out, expected_backend="dinov2")
    assert ck["epoch"] == 4 and ck["data_hash"] == dataset_hash(root, "train")
    assert "val" in s1["history"][-1] and s1["history"][-1]["val"]["n_gt"] == 2
    assert json.loads(out.with_name("ck.pt.json").read_text())["steps"] == 8

    # resume: continues at epoch 4 / step 8 with the saved weights and optimiser state
    before = load_checkpoint(resume_path(out))["state_dict"]
    s2 = fit("dinov2", TINY, train, None, cat, out, epochs=5, lr=3e-3, batch_size=4, progress=False, resume=True)
    assert s2["epochs"] == 5 and s2["steps"] == 10 and len(s2["history"]) == 5
    after = load_checkpoint(resume_path(out))["state_dict"]
    assert not torch.equal(before["out.weight"], after["out.weight"])  # it trained further
    assert s2["history"][-1]["loss"] < losses[0]


def _epoch_samples(loader, epoch: int) -> dict[int, torch.Tensor]:
    """index -> the image the loader's workers produced for it in ``epoch`` (batch size 1)."""
    loader.sampler.set_epoch(epoch)
    keys = list(loader.sampler)
    return {int(k.index): batch["image"][0].clone() for k, batch in zip(keys, loader)}


@pytest.mark.parametrize("backend", ["dinov2", "clip"])
def test_worker_loader_draws_new_samples_each_epoch_and_repeats_for_the_same_seed(tiny, backend):
    """Persistent workers keep their own dataset copy: the epoch must reach them through the sampler's keys."""
    from vfm_pose_ros.models import backend_module
    from vfm_pose_ros.models.training import make_train_loader

    from .test_clip import TINY as CLIP_TINY

    _, cat, train, _ = tiny
    cfg = {**TINY, "aug": {"color": 1.0, "noise": 1.0, "occluders": 0.5}} if backend == "dinov2" else CLIP_TINY
    mod = backend_module(backend)
    ds = mod.make_dataset(train, cat, cfg, train=True)

    def run(seed):
        loader = make_train_loader(ds, batch_size=1, seed=seed, num_workers=2)
        return [_epoch_samples(loader, e) for e in (0, 1, 0)]

    e0, e1, e0_again = run(seed=3)
    assert set(e0) == set(e1) == set(range(len(ds)))
    differ = sum(not torch.equal(e0[i], e1[i]) for i in e0)
    assert differ == len(ds), f"only {differ} of {len(ds)} indices got a new sample in the next epoch"
    assert all(torch.equal(e0[i], e0_again[i]) for i in e0)  # the same (seed, epoch): the same samples
    (f0, _, _) = run(seed=3)  # a new loader (new workers) with the same seed: the same samples
    assert all(torch.equal(e0[i], f0[i]) for i in e0)
    (g0, _, _) = run(seed=4)
    assert sum(not torch.equal(e0[i], g0[i]) for i in e0) == len(ds)


def test_training_record_and_curves(tmp_path, tiny):
    """Per epoch: training loss, fresh-augmentation validation loss, RGB and RGB-D pose metrics per object."""
    _, cat, train, val = tiny
    out = tmp_path / "rec.pt"
    s = fit("dinov2", {**TINY, "icp_starts": 1}, train, val, cat, out, epochs=2, lr=3e-3, batch_size=4,
            val_frames=1, progress=False, draw_curves=training_curves)
    rec = json.loads(out.with_name("rec.pt.json").read_text())
    assert len(rec["history"]) == 2 and s["epochs"] == 2
    for h in rec["history"]:
        assert h["val_fresh"]["loss"] > 0 and "seg" in h["val_fresh"]
        for key in ("val", "val_depth"):
            assert set(h[key]["objects"]) <= set(cat.names) and "add_s_01d_acc" in h[key]
    assert rec["val_depth"] == rec["history"][-1]["val_depth"]
    png = out.with_name("rec.pt.curves.png")
    assert png.is_file() and png.stat().st_size > 10_000


def test_init_starts_from_a_checkpoints_weights(tmp_path, tiny):
    _, cat, train, _ = tiny
    first = tmp_path / "first.pt"
    fit("dinov2", TINY, train, None, cat, first, epochs=1, lr=3e-3, batch_size=4, progress=False, max_steps=2)
    s = fit("dinov2", TINY, train, None, cat, tmp_path / "second.pt", epochs=1, lr=0.0, batch_size=4,
            progress=False, max_steps=1, init=first)
    want = load_checkpoint(first)["state_dict"]
    got = s["net"].state_dict()
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=1e-3) for k in want)  # lr 0: as loaded
    assert s["init"] == str(first)
    with pytest.raises(ValueError, match="does not match"):
        fit("dinov2", {**TINY, "head_channels": 8}, train, None, cat, tmp_path / "third.pt", epochs=1,
            batch_size=4, progress=False, max_steps=1, init=first)


def test_time_budget_stops(tmp_path, tiny):
    _, cat, train, _ = tiny
    s = fit("dinov2", TINY, train, None, cat, tmp_path / "b.pt", epochs=50, batch_size=4, time_budget_s=1e-3,
            progress=False)
    assert s["steps"] == 1 and s["epochs"] == 1


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch.distributed as dist
    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.paths import default_catalogue_dir
    from vfm_pose_ros.data.bop import BopDataset
    from vfm_pose_ros.models.training import fit
    root, out, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    cat = Catalogue.from_dir(default_catalogue_dir())
    ds = BopDataset(root, "train", catalogue=cat, load_masks=True, load_depth=False)
    s = fit("dinov2", cfg, ds, None, cat, out, epochs=1, lr=1e-3, batch_size=2, progress=False, max_steps=2)
    # every rank reports its own weights: the ranks saw different samples, so only all-reduced
    # gradients keep them equal
    w = [float(p.detach().double().sum()) for p in s["net"].parameters()]
    with open(out + ".rank" + os.environ["RANK"], "w") as f:
        json.dump({"steps": s["steps"], "world": dist.get_world_size(), "w": w}, f)
""")



@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny):
    """torchrun --nproc_per_node 2 on the CPU (gloo): both ranks step in sync; rank 0 alone writes the checkpoint."""
    root, _, _, _ = tiny
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(torchrun + [str(script), str(root), str(out), json.dumps(TINY)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"ddp.pt.rank{r}").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["steps"] == 2 for r in ranks)
    assert np.allclose(ranks[0]["w"], ranks[1]["w"], rtol=1e-6, atol=1e-9)
    assert out.is_file()
    assert proc.stdout.count("trained 1 epoch(s)") == 1  # only rank 0 reports
