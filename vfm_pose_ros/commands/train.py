"""Train a pose backend (clip or dinov2) on a BOP dataset and write a checkpoint.

Examples::

    vfm-pose train --backend dinov2 --config config/train/dinov2_small.yaml \\
        --dataset data/synth --val-dataset data/synth_test --val-split test \\
        --objects driller_like,can_like --time-budget 30 --out models/dinov2_small.pt
    torchrun --nproc_per_node 2 -m vfm_pose_ros.cli train ...   # same command, data-parallel

A config YAML holds model keys merged over the backend's DEFAULT_CONFIG (``base: small`` or
``--small`` starts from its SMALL_CONFIG) and an optional ``train:`` section (epochs,
batch_size, lr, time_budget_min, num_workers, val_frames, seed) that command-line options override.
"""
from __future__ import annotations

import argparse
from pathlib import Path

TRAIN_KEYS = ("epochs", "batch_size", "lr", "time_budget_min", "num_workers", "val_frames", "seed")
TRAIN_DEFAULTS = {"epochs": 100, "batch_size": 16, "lr": 1e-4, "time_budget_min": None, "num_workers": 0,
                  "val_frames": 50, "seed": 0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["dinov2", "clip"], required=True)
    p.add_argument("--dataset", required=True, help="BOP dataset root with the training split")
    p.add_argument("--split", default="train", help="training split folder (default: train)")
    p.add_argument("--val-dataset", help="BOP dataset root for validation after each epoch (another seed)")
    p.add_argument("--val-split", default="test")
    p.add_argument("--objects", help="comma-separated catalogue names (default: all in the catalogue)")
    p.add_argument("--objects-dir", help="the objects: a YAML catalogue directory, a BOP models folder, a dataset root "
                                         "or a mesh file (default: config/objects, else the dataset's own models/ "
                                         "when config/objects lacks the --objects named)")
    p.add_argument("--unit", choices=("m", "mm"), default=None,
                   help="unit of a single mesh file given as --objects-dir (default: guessed from its size)")
    p.add_argument("--config", help="YAML config (model keys, optional 'base: small' and 'train:' section)")
    p.add_argument("--small", action="store_true", help="start from the backend's SMALL_CONFIG (random init, CPU)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-4, as in the paper)")
    p.add_argument("--time-budget", type=float, dest="time_budget_min", help="stop after this many minutes")
    p.add_argument("--workers", type=int, dest="num_workers", help="DataLoader worker processes")
    p.add_argument("--val-frames", type=int, help="validation frames per epoch (default 50)")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", required=True, help="checkpoint file to write (optimizer state goes to OUT.resume)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.resume")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from the weights of this checkpoint of the same backend and network (fine-tuning); "
                        "the optimiser and schedule start fresh")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_train_config(path: str | None, small: bool, backend: str) -> tuple[dict, dict]:
    """(model config, train options) from a YAML file plus --small."""
    import yaml

    from ..models import backend_module

    data = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: a training config must be a mapping of keys")
    train = dict(data.pop("train", None) or {})
    unknown = set(train) - set(TRAIN_KEYS)
    if unknown:
        raise ValueError(f"unknown keys in the 'train:' section: {sorted(unknown)}; allowed: {list(TRAIN_KEYS)}")
    base = data.pop("base", None)
    if data.pop("backend", backend) != backend:
        raise ValueError(f"{path} is a config for another backend than {backend!r}")
    if base not in (None, "default", "small"):
        raise ValueError(f"'base' must be 'default' or 'small', got {base!r}")
    model = {}
    if small or base == "small":
        model.update(backend_module(backend).SMALL_CONFIG)
    model.update(data)
    return model, train


def training_catalogue(args):
    """(names, catalogue) to train on: --objects-dir, else config/objects, else the dataset's own models
    (a `vfm-pose synth` dataset of other objects trains without naming its models twice)."""
    from ..core.catalogue_loader import load_catalogue, parse_object_names

    names = parse_object_names(args.objects)
    if args.objects_dir:
        return names, load_catalogue(args.objects_dir, names=names, unit=args.unit)
    default = load_catalogue(None)
    missing = [n for n in names or [] if n not in default]
    if missing:
        try:
            own = load_catalogue(args.dataset, names=names)
        except (OSError, KeyError):
            raise KeyError(f"unknown object(s) {missing}: config/objects has {', '.join(default.names)} and "
                           f"{args.dataset} has no models of that name; pass the objects' catalogue with "
                           "--objects-dir (a YAML folder, a BOP models folder, a dataset root or a mesh)") from None
        print(f"train: objects {', '.join(names)} from the dataset's own models ({args.dataset})", flush=True)
        return names, own
    return names, default.subset(names) if names else default


def run(args) -> int:
    from ..data.bop import BopDataset
    from ..models.training import fit
    from ..report.figures import training_curves

    model_cfg, train_cfg = load_train_config(args.config, args.small, args.backend)
    opts = {**TRAIN_DEFAULTS, **train_cfg}
    for k in TRAIN_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            opts[k] = v
    names, catalogue = training_catalogue(args)
    if names:
        model_cfg["objects"] = names
    train_ds = BopDataset(args.dataset, args.split, catalogue=catalogue, load_masks=True, load_depth=False)
    val_ds = BopDataset(args.val_dataset, args.val_split, catalogue=catalogue) if args.val_dataset else None
    budget = None if opts["time_budget_min"] is None else float(opts["time_budget_min"]) * 60.0
    print(f"train {args.backend}: {len(train_ds)} frames of {args.dataset}/{args.split}, objects "
          f"{', '.join(catalogue.names)}, epochs {opts['epochs']}, batch {opts['batch_size']}, lr {opts['lr']}"
          + (f", budget {opts['time_budget_min']} min" if budget else ""), flush=True)
    fit(args.backend, model_cfg, train_ds, val_ds, catalogue, Path(args.out), epochs=int(opts["epochs"]),
        lr=float(opts["lr"]), batch_size=int(opts["batch_size"]), time_budget_s=budget, resume=args.resume,
        init=args.init, device=args.device, num_workers=int(opts["num_workers"]), seed=int(opts["seed"]),
        val_frames=int(opts["val_frames"]), progress=not args.quiet, max_steps=args.max_steps,
        draw_curves=training_curves)
    return 0
