"""One training loop for every backend: AdamW, cosine schedule, validation through the core metrics.

The backend module supplies ``build_net`` (a module with ``loss(batch)``) and ``make_dataset``;
this loop adds what they share: an optimiser over the trainable parameters, a warm-up +
cosine learning-rate schedule that also follows a wall-clock budget, tqdm progress, a
checkpoint after every epoch with validation metrics (vfm_pose_ros.core.metrics.PoseEvaluator
on an Estimator built from the in-memory net), resume, and DistributedDataParallel.

Distributed: run the same command under ``torchrun --nproc_per_node N``; WORLD_SIZE > 1
initialises a process group (NCCL on CUDA, gloo on the CPU), a DistributedSampler splits the
data, gradients are all-reduced, and only rank 0 validates and writes files.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import backend_module
from .checkpoint import catalogue_to_dict, dataset_hash, load_checkpoint, net_keypoints, save_checkpoint
from .estimator import pick_device, resolve_precision
from .sampling import EpochKeySampler, SampleKey


class _LossModule(nn.Module):
    """Makes ``net.loss(batch)`` the forward pass, so DistributedDataParallel's hooks see it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch):
        return self.net.loss(batch)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    return world, rank, local


def _to(batch, device):
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if torch.is_tensor(batch) else batch


def training_precision(precision: str | None, device: torch.device):
    """(autocast context, GradScaler or None) for training steps at the config's ``precision``.

    'auto' keeps bf16 autocast on CUDA and fp32 on the CPU; 'bf16' / 'fp16' / 'fp32' apply on either
    device (CPU autocast runs float16 too, which is how the half-precision path is tested without a GPU).
    float16 gets a GradScaler: its narrow range flushes small gradients to zero, bf16's does not.
    """
    if (precision or "auto").lower() == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else None
    else:
        dtype = resolve_precision(precision, device)
    if dtype is None:
        return contextlib.nullcontext(), None
    # init_scale 2**10, not torch's 2**16: these losses sum several heads, and at 2**16 the first steps' gradients
    # overflow float16 and are skipped until the scale has halved six times
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 10) if dtype == torch.float16 else None
    return torch.autocast(device.type, dtype=dtype), scaler


def optimizer_step(loss: torch.Tensor, opt, params, grad_clip: float, scaler=None) -> None:
    """Backward, gradient clipping and the optimiser step (through the GradScaler when training in float16)."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)  # skipped when a gradient overflowed; the scale then shrinks
    scaler.update()


def resume_path(out: Path) -> Path:
    """Optimizer state and full-precision weights for --resume live beside the (small) checkpoint."""
    return out.with_name(out.name + ".resume")


def lr_factor(progress: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Linear warm-up then cosine decay to ``floor``; ``progress`` in [0, 1] (steps or time, whichever is further)."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    p = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def _dataset_hash(ds) -> str:
    root, split = getattr(ds, "root", None), getattr(ds, "split", None)
    return dataset_hash(root, split) if root is not None else "unknown"


def validate(backend: str, net: nn.Module, catalogue, dataset, *, max_frames: int = 50, use_depth: bool = False,
             device="auto", out: Path | None = None, progress: bool = True) -> dict:
    """Pose metrics of the in-memory net on up to ``max_frames`` frames spread over ``dataset``.

    Returns the PoseEvaluator's "overall" summary (mm, degrees, fractions) plus "objects".
    """
    from tqdm import tqdm

    from ..core.metrics import PoseEvaluator

    mod = backend_module(backend)
    was_training = net.training
    if hasattr(mod.Estimator, "from_net"):
        est = mod.Estimator.from_net(net, catalogue, device=device, use_depth=use_depth)
    else:  # fall back to the checkpoint just written
        est = mod.Estimator.from_checkpoint(out, device=device, use_depth=use_depth)
    keys = dataset.keys()
    idx = np.unique(np.linspace(0, len(keys) - 1, min(max_frames, len(keys))).round().astype(int))
    evaluator = PoseEvaluator(catalogue, max_points=500, max_sym_disc_step=0.05)
    for i in tqdm(idx, desc="validate" + (" +depth" if use_depth else ""), leave=False, disable=not progress):
        sf = dataset.frame(*keys[i])
        fr = sf.to_frame()
        if not use_depth:
            fr.depth = None
        preds = est.predict(fr)
        evaluator.add_frame([g for g in sf.gts if g.name in catalogue], preds, K=sf.K,
                            image_width=fr.rgb.shape[1], scene_id=sf.scene_id, im_id=sf.im_id)
    net.train(was_training)
    rep = evaluator.report()
    return {**rep["overall"], "objects": rep["objects"], "n_frames": rep["n_frames"]}


def make_train_loader(train_ds, *, batch_size: int, seed: int = 0, world_size: int = 1, rank: int = 0,
                      num_workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The training DataLoader: an EpochKeySampler (per-epoch shuffle, this rank's share) whose keys carry the
    epoch into the workers, so every epoch draws new augmentations; call ``loader.sampler.set_epoch(e)``."""
    sampler = EpochKeySampler(len(train_ds), seed=seed, world_size=world_size, rank=rank)
    return torch.utils.data.DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                                       drop_last=True, persistent_workers=num_workers > 0, pin_memory=pin_memory)


class FreshLoss:
    """The loss on newly drawn augmentations of validation frames, one draw per epoch.

    The logged training loss is taken on the samples being fitted; this one is not, so a gap between
    the two is memorisation. The same indices every epoch, new augmentations each time.
    """

    SEED = 7919  # any fixed value: the draws differ from training's by the frames already

    def __init__(self, dataset, *, batch_size: int = 16, max_samples: int = 64):
        self.dataset = dataset
        self.batch_size = max(1, int(batch_size))
        n = len(dataset)
        self.indices = np.unique(np.linspace(0, n - 1, min(max_samples, n)).round().astype(int)).tolist()

    @torch.no_grad()
    def __call__(self, net: nn.Module, epoch: int, device, amp=contextlib.nullcontext()) -> dict[str, float]:
        was_training = net.training
        net.eval()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for k in range(0, len(self.indices), self.batch_size):
            samples = [self.dataset[SampleKey(i, self.SEED, epoch)] for i in self.indices[k:k + self.batch_size]]
            batch = _to(torch.utils.data.default_collate(samples), device)
            with amp:
                _, logs = net.loss(batch)
            for key, v in logs.items():
                if v == v:
                    sums[key] = sums.get(key, 0.0) + v * len(samples)
                    counts[key] = counts.get(key, 0) + len(samples)
        net.train(was_training)
        return {key: round(sums[key] / counts[key], 5) for key in sums}


# Per-object keys kept in the training record (the overall summary keeps every key).
OBJECT_KEYS = ("n_gt", "n_predicted", "add_s_01d_acc", "add_median_mm", "rot_err_median_deg", "rot_err_mean_deg",
               "trans_err_median_mm")


def slim_report(metrics: dict) -> dict:
    """A validation report for the per-epoch record: the overall summary plus a few keys per object."""
    out = {k: v for k, v in metrics.items() if k != "objects"}
    out["objects"] = {name: {k: o.get(k) for k in OBJECT_KEYS} for name, o in metrics.get("objects", {}).items()}
    return out


def epoch_line(record: dict, epochs: int) -> str:
    """The one-line summary printed after each epoch."""
    fresh = record.get("val_fresh") or {}
    acc = (lambda key: "-" if not record.get(key) or record[key].get("add_s_01d_acc") is None
           else f"{record[key]['add_s_01d_acc']:.1%}")
    rot = (lambda key: "-" if not record.get(key) or record[key].get("rot_err_median_deg") is None
           else f"{record[key]['rot_err_median_deg']:.0f}")
    return (f"epoch {record['epoch']}/{epochs}: loss {record.get('loss', float('nan')):.4f}, "
            f"fresh val loss {fresh.get('loss', float('nan')):.4f}, {record['seconds']:.0f} s; "
            f"val ADD(-S)<0.1d RGB {acc('val')} (rot median {rot('val')} deg), RGB-D {acc('val_depth')}")


def curves_path(out: Path) -> Path:
    """OUT.curves.png beside OUT.json."""
    return out.with_name(out.name + ".curves.png")


def _write_curves(out: Path, history: list[dict], backend: str, draw_curves) -> None:
    try:
        draw_curves(curves_path(out), history, title=f"{backend}: {out.name}")
    except Exception as exc:  # a figure must never stop a training run
        print(f"warning: could not draw {curves_path(out)}: {exc}")


def _short(m: dict | None) -> str:
    if not m:
        return "-"
    f = (lambda k, fmt: "-" if m.get(k) is None else fmt.format(m[k]))
    return (f"ADD(-S)<0.1d {f('add_s_01d_acc', '{:.1%}')}  ADD {f('add_mean_mm', '{:.1f}')} mm  "
            f"rot {f('rot_err_mean_deg', '{:.1f}')} deg  trans {f('trans_err_mean_mm', '{:.1f}')} mm  "
            f"found {m.get('n_predicted', 0)}/{m.get('n_gt', 0)}")


def _setup_process(device, seed: int) -> tuple[int, int, torch.device]:
    """(world size, rank, device): joins the process group under torchrun and seeds this rank."""
    world, rank, local = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world > 1 and torch.cuda.is_available():
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = pick_device(device)
    torch.manual_seed(seed + rank)
    np.random.seed(seed + rank)
    return world, rank, dev


def _load_init_weights(net: nn.Module, init, backend: str, dev, main: bool) -> None:
    """Start ``net`` from the weights of checkpoint ``init`` (fine-tuning).

    Every tensor whose name and shape match is loaded. The network says what a config may change: keys under
    its ``init_reshapeable`` prefixes may differ in shape (a "coords" DINOv2 head started from a "votes"
    checkpoint), keys under its ``init_optional`` prefixes may be absent (a module the config adds); both keep
    their initial values, the keys left so are printed, and ``net.started_without(keys)`` (if defined) hears of
    the absent ones. Any other missing, unexpected or mismatched key is a ValueError.
    """
    state = load_checkpoint(init, expected_backend=backend, map_location=dev)
    stored = {k: v.float() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    own = net.state_dict()
    mismatched = sorted(k for k, v in stored.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
    reinit = [k for k in mismatched if k.startswith(tuple(getattr(net, "init_reshapeable", ())))]
    bad = [f"{k} {tuple(stored[k].shape)} -> {tuple(own[k].shape)}" for k in mismatched if k not in reinit]
    if bad:
        raise ValueError(f"--init {init} does not match the {backend} network of this config: shapes differ: "
                         f"{bad[:5]}")
    missing, unexpected = net.load_state_dict({k: v for k, v in stored.items() if k not in reinit}, strict=False)
    # a checkpoint of a frozen pretrained backbone stores only the heads: the backbone stays as built
    missing = [k for k in missing if not k.startswith(("backbone.", "clip.")) and k not in reinit]
    fresh = [k for k in missing if k.startswith(tuple(getattr(net, "init_optional", ())))]
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected:
        raise ValueError(f"--init {init} does not match the {backend} network of this config: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    if main:
        print(f"starting from the weights of {init} (epoch {state.get('epoch')})")
        if reinit:
            print(f"left at their initial values (shape differs from {init}): {', '.join(reinit)}")
        if fresh:
            print(f"new in this config, left at their initial values: {', '.join(fresh)}")
    if fresh and hasattr(net, "started_without"):
        net.started_without(fresh)


class _TrainingRun:
    """The state one call of :func:`fit` carries from step to step: net, optimiser, data, counters, history."""

    def __init__(self, backend: str, config: dict, train_dataset, val_dataset, catalogue, out: Path, *,
                 epochs: int, lr: float, batch_size: int, time_budget_s, device, num_workers: int, seed: int,
                 val_frames: int, progress: bool, max_steps, draw_curves):
        self.backend, self.catalogue, self.out, self.val_dataset = backend, catalogue, out, val_dataset
        self.epochs, self.lr, self.time_budget_s, self.max_steps = epochs, lr, time_budget_s, max_steps
        self.val_frames, self.progress, self.draw_curves = val_frames, progress, draw_curves
        self.mod = backend_module(backend)
        self.world, rank, self.dev = _setup_process(device, seed)
        self.main = rank == 0
        self.net = self.mod.build_net(config, catalogue).to(self.dev)
        self.cfg = cfg = self.net.config
        train_ds = self.mod.make_dataset(train_dataset, catalogue, cfg, train=True)
        if len(train_ds) < batch_size * self.world:
            batch_size = max(1, len(train_ds) // self.world)
        self.loader = make_train_loader(train_ds, batch_size=batch_size, seed=seed, world_size=self.world,
                                        rank=rank, num_workers=num_workers, pin_memory=self.dev.type == "cuda")
        self.fresh_val = (FreshLoss(self.mod.make_dataset(val_dataset, catalogue, cfg, train=True),
                                    batch_size=batch_size) if val_dataset is not None and self.main else None)
        self.depth_val = bool(self.main and val_dataset is not None and cfg.get("use_depth", True)
                              and val_dataset.frame(*val_dataset.keys()[0]).depth is not None)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=float(cfg.get("weight_decay", 0.05)))
        planned = epochs * len(self.loader)
        self.total_steps = max(1, planned if max_steps is None else min(max_steps, planned))
        self.start_epoch, self.step, self.trained_s, self.history = 0, 0, 0.0, []
        self.data_hash = _dataset_hash(train_dataset)
        self.cat_dict = catalogue_to_dict(catalogue, net_keypoints(self.net)) if self.main else None  # sampled once

    def restore(self, resume: bool, init) -> None:
        """Continue from the resume file (``resume``), else start from ``init``'s weights when given."""
        path = resume_path(self.out)
        if resume and path.is_file():
            state = load_checkpoint(path, expected_backend=self.backend, map_location=self.dev)
            self.net.load_state_dict(state["state_dict"])
            self.opt.load_state_dict(state["optimizer"])
            extra = state.get("extra", {})
            self.start_epoch, self.step = int(state["epoch"]), int(extra.get("step", 0))
            self.trained_s, self.history = float(extra.get("trained_s", 0.0)), list(extra.get("history", []))
            if state.get("data_hash") != self.data_hash and self.main:
                print(f"warning: resuming on different training data (hash {state.get('data_hash')} -> "
                      f"{self.data_hash})")
            if self.main:
                print(f"resumed from {path} at epoch {self.start_epoch}, step {self.step}")
            return
        if resume and self.main:
            print(f"--resume: no {path} yet, starting from scratch")
        if init is not None:
            _load_init_weights(self.net, init, self.backend, self.dev, self.main)

    def prepare_steps(self) -> None:
        """The loss module (DistributedDataParallel-wrapped when distributed) and the precision context."""
        if self.world > 1:
            device_ids = [self.dev.index] if self.dev.type == "cuda" else None
            self.loss_fn = nn.parallel.DistributedDataParallel(_LossModule(self.net), device_ids=device_ids)
        else:
            self.loss_fn = _LossModule(self.net)
        self.amp, self.scaler = training_precision(self.cfg.get("precision"), self.dev)

    def stop_now(self) -> bool:
        """Budget or step limit reached; every rank must stop on the same step."""
        done = ((self.time_budget_s is not None and self.trained_s >= self.time_budget_s)
                or (self.max_steps is not None and self.step >= self.max_steps))
        if self.world > 1:
            flag = torch.tensor([int(done)], device=self.dev)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done = bool(flag.item())
        return done

    def train_epoch(self, epoch: int, bar) -> tuple[dict[str, float], int, bool]:
        """(summed logs, batches run, stopped early) of one pass over ``bar`` (the loader, under tqdm)."""
        self.loader.sampler.set_epoch(epoch)  # the workers' samples follow the sampler's keys (models.sampling)
        self.net.train()
        sums: dict[str, float] = {}
        n = 0
        grad_clip = float(self.cfg.get("grad_clip", 5.0))
        t_prev = time.perf_counter()
        for batch in bar:  # trained_s counts wall time of loading + steps, not validation
            if self.stop_now():
                return sums, n, True
            progress_frac = max(self.step / self.total_steps,
                                self.trained_s / self.time_budget_s if self.time_budget_s else 0.0)
            for g in self.opt.param_groups:
                g["lr"] = self.lr * lr_factor(progress_frac)
            with self.amp:
                loss, logs = self.loss_fn(_to(batch, self.dev))
            optimizer_step(loss, self.opt, self.params, grad_clip, self.scaler)
            self.step += 1
            now = time.perf_counter()
            self.trained_s += now - t_prev
            t_prev = now
            n += 1
            for k, v in logs.items():
                if v == v:  # skip NaN (e.g. no foreground in a batch)
                    sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{self.opt.param_groups[0]['lr']:.1e}")
        return sums, n, False

    def epoch_record(self, epoch: int, sums: dict[str, float], n: int, seconds: float) -> dict:
        """The epoch's history entry: mean logs (the loss averaged over ranks), step and learning rate."""
        mean_logs = {k: v / n for k, v in sums.items()}
        if self.world > 1:
            t = torch.tensor([mean_logs.get("loss", 0.0)], device=self.dev)
            dist.all_reduce(t)
            mean_logs["loss"] = float(t.item()) / self.world
        return {"epoch": epoch + 1, "step": self.step, "seconds": round(seconds, 2),
                "lr": self.opt.param_groups[0]["lr"], **{k: round(v, 5) for k, v in mean_logs.items()}}

    def _save(self, path: Path, epoch: int, **kwargs) -> None:
        save_checkpoint(path, self.net, backend=self.backend, config=self.cfg, catalogue=self.cat_dict,
                        data_hash=self.data_hash, epoch=epoch, **kwargs)

    def validate_and_save(self, record: dict) -> None:
        """Rank 0: validation metrics into ``record``, the checkpoint, the resume file and the curves."""
        epoch, val = record["epoch"], self.val_dataset
        if val is not None and not hasattr(self.mod.Estimator, "from_net"):  # validation reads the file
            self._save(self.out, epoch, metrics={"history": self.history + [record]})
        if val is not None:
            record["val_fresh"] = self.fresh_val(self.net, epoch - 1, self.dev, self.amp)
            for key, depth in (("val", False), ("val_depth", True)):
                if depth and not self.depth_val:
                    continue
                record[key] = slim_report(validate(self.backend, self.net, self.catalogue, val,
                                                   max_frames=self.val_frames, use_depth=depth, device=self.dev,
                                                   out=self.out, progress=self.progress))
        self.history.append(record)
        self._save(self.out, epoch, metrics={"history": self.history, "val": record.get("val"),
                                             "val_depth": record.get("val_depth")})
        self._save(resume_path(self.out), epoch, optimizer=self.opt, half=False,
                   extra={"step": self.step, "trained_s": self.trained_s, "history": self.history})
        if val is not None and self.draw_curves is not None:
            _write_curves(self.out, self.history, self.backend, self.draw_curves)
        print(epoch_line(record, self.epochs), flush=True)

    def run_epochs(self) -> int:
        """Train until the epochs, the budget or the steps run out; returns the epochs completed."""
        from tqdm import tqdm

        epochs_done = self.start_epoch
        for epoch in range(self.start_epoch, self.epochs):
            if self.stop_now():
                break
            bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.epochs}",
                       disable=not (self.main and self.progress), leave=False)
            t_epoch = time.perf_counter()
            sums, n, stopped = self.train_epoch(epoch, bar)
            if n == 0:
                break
            epochs_done = epoch + 1
            record = self.epoch_record(epoch, sums, n, time.perf_counter() - t_epoch)
            if self.main:
                self.validate_and_save(record)
            if self.world > 1:
                dist.barrier()
            if stopped:
                break
        return epochs_done

    def summarise(self, epochs_done: int, init) -> dict:
        """The summary dict (also written as ``<out>.json`` by rank 0), with the final validation."""
        history = self.history
        summary = {"checkpoint": str(self.out), "init": None if init is None else str(init), "epochs": epochs_done,
                   "steps": self.step, "trained_s": round(self.trained_s, 1),
                   "history": history, "val": history[-1].get("val") if history else None}
        if history and history[-1].get("val_depth"):
            summary["val_depth"] = history[-1]["val_depth"]
        if self.main and self.val_dataset is not None and history and hasattr(self.mod, "extra_validation"):
            summary["val_extra"] = self.mod.extra_validation(self.net, self.catalogue, self.val_dataset,
                                                             device=self.dev, max_frames=self.val_frames,
                                                             progress=self.progress)
            self.net.train(True)
        if self.main:
            _print_summary(summary, self.step, self.trained_s, self.out)
            self.out.with_name(self.out.name + ".json").write_text(json.dumps(summary, indent=1, default=float))
        return summary


def _print_summary(summary: dict, step: int, trained_s: float, out: Path) -> None:
    print(f"trained {summary['epochs']} epoch(s), {step} steps, {trained_s / 60:.1f} min -> {out}")
    if summary.get("val"):
        print(f"  val RGB-only : {_short(summary['val'])}")
    if summary.get("val_depth"):
        print(f"  val RGB-D+ICP: {_short(summary['val_depth'])}")
    if summary.get("val_extra"):
        print("  val extra    : " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in summary["val_extra"].items()))


def fit(backend: str, config: dict, train_dataset, val_dataset, catalogue, out, epochs: int, lr: float = 1e-4,
        batch_size: int = 16, time_budget_s: float | None = None, resume: bool = False, device="auto",
        num_workers: int = 0, seed: int = 0, val_frames: int = 50, progress: bool = True,
        max_steps: int | None = None, init=None, draw_curves=None) -> dict:
    """Train ``backend`` on a BOP dataset; write the checkpoint ``out`` after every epoch.

    Stops after ``epochs`` epochs, ``time_budget_s`` seconds of training, or ``max_steps`` steps,
    whichever comes first (the learning rate anneals to whichever is nearer). ``init``: a checkpoint whose
    weights the network starts from (fine-tuning; ignored when resuming). ``draw_curves(path, history, title)``
    draws the learning curves beside the checkpoint after each validated epoch (``report.figures.training_curves``;
    passed in because ``models`` sits below ``report``; None: no figure). Returns a summary
    dict: checkpoint path, epochs and steps run, loss history, validation metrics, and the trained
    module under "net".
    """
    run = _TrainingRun(backend, config, train_dataset, val_dataset, catalogue, Path(out), epochs=epochs, lr=lr,
                       batch_size=batch_size, time_budget_s=time_budget_s, device=device, num_workers=num_workers,
                       seed=seed, val_frames=val_frames, progress=progress, max_steps=max_steps,
                       draw_curves=draw_curves)
    run.restore(resume, init)
    run.prepare_steps()
    summary = run.summarise(run.run_epochs(), init)
    if run.world > 1:
        dist.barrier()
    summary["net"] = run.net  # the trained module itself (not in the JSON file)
    return summary
