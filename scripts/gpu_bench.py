#!/usr/bin/env python3
"""The GPU figures of scripts/gpu_check.sh: DINOv2 ViT-B/14 at 224 and CLIP ViT-B/32, real size, random weights.

Per backbone, at fp16 (and an fp32 baseline at batch 1): end-to-end milliseconds per frame and frames/s for
batch 1 and 8, RGB-only and with depth, with the per-stage times the estimator reports; then the same with
``compile_backbone: true`` (torch.compile on the backbone), so the A/B says whether the switch helps. One more
run, fp16 batch 1 with depth, lets Open3D use every core in the depth stage again (``open3d-threads``): what
the stage's one-thread, deterministic Open3D costs on this machine.
``--smoke`` runs tiny configurations (batch 1 and 2, the compile A/B on DINOv2 only) on any device, to check
the script itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = {  # --smoke: the same code paths at a size a CPU runs in seconds
    "dinov2": {"backbone": "vit_small_patch14_dinov2", "img_size": 56, "head_channels": 16,
               "detail_channels": [8, 16], "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2},
               "icp_global_rotations": 20, "icp_starts": 1},
    "clip": {"clip_arch": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64,
                                                           "layers": 2, "head_width": 32},
                           "text_cfg": {"width": 64, "heads": 2, "layers": 1}},
             "fusion_dim": 64, "fusion_heads": 2, "head_hidden": 64, "icp_global_rotations": 20, "icp_starts": 1},
}


def frames_for(n: int, seed: int = 0):
    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.core.types import Frame
    from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator
    from vfm_pose_ros.paths import default_catalogue_dir

    cat = Catalogue.from_dir(default_catalogue_dir())
    gen = SceneGenerator(list(cat), SceneConfig(distractors=0, min_visib_fract=0.5), seed=seed)
    scenes = [gen.frame(i) for i in range(n)]
    return cat, [Frame(rgb=s.rgb, K=s.K, depth=s.depth) for s in scenes]


def timed(est, frames, repeats: int, warmup: int) -> dict:
    """Median ms per frame of predict_batch(frames), and the median of each stage the estimator reports."""
    for _ in range(warmup):
        est.predict_batch(frames)
    walls, stages = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        answers = est.predict_batch(frames)
        walls.append((time.perf_counter() - t0) * 1e3)
        for k, v in (getattr(answers[0], "timings_ms", None) or {}).items():  # the whole call's stage times
            stages.setdefault(k, []).append(float(v))
    ms = float(np.median(walls)) / len(frames)
    return {"ms_per_frame": round(ms, 3), "fps": round(1e3 / ms, 1),
            "stages_ms_per_call": {k: round(float(np.median(v)), 3) for k, v in stages.items()}}


def measure_backend(backend: str, cat, frames, device: str, smoke: bool, repeats: int, warmup: int) -> dict:
    import torch

    from vfm_pose_ros.bench.pipeline import Variant, build_estimator, with_precision

    overrides = dict(TINY[backend]) if smoke else {}
    out: dict = {"config": "tiny (smoke)" if smoke else "DEFAULT_CONFIG, random real-size weights", "runs": {}}
    batches = (1, 2) if smoke else (1, 8)
    for compiled in ((False, True) if not smoke or backend == "dinov2" else (False,)):
        variant = Variant(backend, "real", {**overrides, "compile_backbone": compiled})
        try:
            est, info = build_estimator(variant, cat, device=device, precision="fp16")
            out["source"] = info["source"]
            for precision in ("fp16", "fp32"):
                e = est if precision == "fp16" else with_precision(est, "fp32")
                for batch in batches:
                    if precision == "fp32" and (batch != 1 or compiled):
                        continue  # the fp32 baseline: batch 1, eager
                    for depth in (False, True):
                        fs = [f if depth else _rgb_only(f) for f in frames[:batch]]
                        key = f"{precision}/b{batch}/{'rgbd' if depth else 'rgb'}/{'compiled' if compiled else 'eager'}"
                        out["runs"][key] = timed(e, fs, repeats, warmup)
                        _report(backend, key, out["runs"][key])
            if not compiled:
                with _open3d_threaded():
                    key = "fp16/b1/rgbd/eager/open3d-threads"
                    out["runs"][key] = timed(est, frames[:1], repeats, warmup)
                    _report(backend, key, out["runs"][key])
            del est
            if device == "cuda":
                torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001  a failed variant (e.g. torch.compile without a compiler) is a result
            out["runs"][f"error/{'compiled' if compiled else 'eager'}"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"  {backend}: {'compiled' if compiled else 'eager'} failed: {type(exc).__name__}: {exc}"[:300])
    return out


def _report(backend: str, key: str, run: dict) -> None:
    print(f"  {backend:6s} {key:34s} {run['ms_per_frame']:9.2f} ms/frame {run['fps']:8.1f} frames/s", flush=True)


def _open3d_threaded():
    """The depth stage with Open3D on every core, as before it was made deterministic (core.icp.serial_open3d
    a no-op): the A/B of what the one-thread limit costs."""
    from contextlib import nullcontext
    from unittest import mock

    from vfm_pose_ros.core import icp

    return mock.patch.object(icp, "serial_open3d", nullcontext)


def _rgb_only(frame):
    from dataclasses import replace

    return replace(frame, depth=None)


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny configs (checks the script, not the GPU)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/gpu.json"))
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (use --smoke --device cpu to check the script)",
              file=sys.stderr)
        return 2
    cat, frames = frames_for(8)
    result = {"device": args.device, "smoke": args.smoke, "torch": torch.__version__,
              "card": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "repeats": args.repeats, "backends": {}}
    for backend in ("dinov2", "clip"):
        result["backends"][backend] = measure_backend(backend, cat, frames, args.device, args.smoke,
                                                      args.repeats, args.warmup)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    args.out.write_text(json.dumps({**previous, "bench": result}, indent=1))
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    print(f"\nGPU check on {result['card']} (torch {result['torch']}), ms per frame | frames/s; stages per call")
    for backend, r in result["backends"].items():
        for key, v in r["runs"].items():
            if isinstance(v, str):
                print(f"{backend:6s} {key:34s} {v}")
                continue
            stages = ", ".join(f"{k} {ms:.1f}" for k, ms in v["stages_ms_per_call"].items())
            print(f"{backend:6s} {key:34s} {v['ms_per_frame']:9.2f} | {v['fps']:7.1f}   {stages}")


if __name__ == "__main__":
    sys.exit(main())
