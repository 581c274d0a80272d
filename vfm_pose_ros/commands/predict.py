"""Run a pose backend over a BOP dataset and write BOP results (CSV) for `vfm-pose eval`.

Example::

    vfm-pose predict --backend dinov2 --checkpoint models/dinov2_small.pt \\
        --dataset data/synth_test --split test --out results/dinov2_synth-test.csv
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["dinov2", "clip", "hybrid"], help="checked against the checkpoint's backend")
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped models/BACKEND_small.pt of --backend)")
    p.add_argument("--dataset", required=True, help="BOP dataset root")
    p.add_argument("--split", default="test")
    p.add_argument("--scene", type=int, help="only this scene id")
    p.add_argument("--prompt", help="text prompt passed with every frame (CLIP / hybrid backends)")
    p.add_argument("--no-depth", action="store_true", help="ignore depth images (RGB-only poses, no ICP)")
    p.add_argument("--prompt-check", action="store_true",
                   help="CLIP / hybrid: also check, in frames holding several objects, that the prompt naming each "
                        "object returns that object and each grasp part its own frame (writes OUT.prompts.json)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", help="auto | fp32 | bf16 | fp16 (default: the checkpoint's)")
    p.add_argument("--out", required=True, help="results CSV (BOP format: t in mm)")
    p.add_argument("--quiet", action="store_true")


def checkpoint_path(checkpoint: str | None, backend: str | None) -> str:
    """``--checkpoint``, else the shipped checkpoint of ``--backend`` (FileNotFoundError naming it when absent)."""
    if checkpoint:
        return checkpoint
    if not backend:
        raise ValueError("give --checkpoint FILE, or --backend dinov2|clip|hybrid to use its shipped checkpoint")
    from ..paths import find_package_file
    from .compare import DEFAULT_CHECKPOINTS

    return str(find_package_file(DEFAULT_CHECKPOINTS[backend]))


def check_prompt(est, prompt: str | None, quiet: bool = False) -> None:
    """Refuse (ValueError: one line, status 2) a prompt that names nothing; say what it resolves to."""
    resolution = est.resolve_prompt(prompt) if prompt else None
    if resolution is None:
        return
    if resolution.refusal:
        raise ValueError(f"--prompt: {resolution.refusal}; name one of {', '.join(est.catalogue.names)} "
                         "(or add an alias to its catalogue entry)")
    if not quiet:
        print("prompt resolves to " + ", ".join(m.name + (f" (grasp {m.grasp})" if m.grasp else "")
                                                + f" at {m.similarity:.2f}" for m in resolution.matches))


def run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..data.bop import BopDataset, BopResult, write_results_csv
    from ..models import load_estimator
    from ..pipeline import CameraFrame, FramePipeline, PipelineSettings

    kw = {"precision": args.precision} if args.precision else {}
    if args.no_depth:
        kw["use_depth"] = False
    est = load_estimator(checkpoint_path(args.checkpoint, args.backend), device=args.device, backend=args.backend,
                         **kw)
    check_prompt(est, args.prompt, quiet=args.quiet)
    ds = BopDataset(args.dataset, args.split, catalogue=est.catalogue, load_depth=not args.no_depth)
    keys = [k for k in ds.keys() if args.scene is None or k[0] == args.scene]
    if args.scene is not None and not keys:
        raise SystemExit(f"scene {args.scene} not in {args.dataset}/{args.split} (scenes: {ds.scene_ids()})")
    if args.max_frames:
        keys = keys[: args.max_frames]
    # the pose node's per-frame path, keeping every valid pose (no score threshold, no gates) for BOP scoring
    pipeline = FramePipeline(est, settings=PipelineSettings(prompt=args.prompt or "", use_depth=not args.no_depth))
    results, stage_ms, frame_s, refused = [], {}, [], {}
    for sid, iid in tqdm(keys, desc=f"predict {est.backend}", unit="frame", disable=args.quiet):
        sf = ds.frame(sid, iid)
        t0 = time.perf_counter()
        answer = pipeline.process(CameraFrame.of(sf))
        dt = time.perf_counter() - t0
        if answer.outcome == "failed":
            raise answer.error
        if answer.outcome == "rejected":
            refused.setdefault(answer.reason, []).append((sid, iid))
            continue
        frame_s.append(dt)
        for p in answer.poses:
            results.append(BopResult.from_pose(sid, iid, p, est.catalogue[p.name].class_id, time=dt))
        for k, v in answer.timings_ms.items():
            stage_ms.setdefault(k, []).append(v)
    write_results_csv(Path(args.out), results)
    n = len(frame_s)
    print(f"{est.backend}: {len(results)} poses on {n} frames -> {args.out}")
    for reason, where in refused.items():
        print(f"  {len(where)} frame(s) refused (first: scene {where[0][0]} image {where[0][1]}): {reason}")
    if n:
        print(f"  time per frame: mean {1000 * np.mean(frame_s):.1f} ms, median {1000 * np.median(frame_s):.1f} ms "
              f"({est.device}, precision {est.precision})")
    if stage_ms:
        print("  stages (mean ms): " + ", ".join(f"{k} {np.mean(v):.1f}" for k, v in stage_ms.items()))
    if args.prompt_check:
        import json

        from ..models.clip import evaluate_prompts

        if est.backend not in ("clip", "hybrid"):
            raise SystemExit(f"--prompt-check needs a prompt-conditioned backend (clip, hybrid), not {est.backend}")
        rep = evaluate_prompts(est, ds, max_frames=args.max_frames or 100, progress=not args.quiet)
        path = Path(args.out).with_suffix(".prompts.json")
        path.write_text(json.dumps(rep, indent=1))
        print(f"  prompts: {rep['prompts']} in multi-object frames; right name {rep['name_acc']:.1%}, on the right "
              f"object {rep['selection_acc']:.1%}; grasp parts all right {rep['grasp_frames_all_right']:.1%} "
              f"of {rep['grasp_checks']} -> {path}")
    return 0
