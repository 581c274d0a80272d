#!/usr/bin/env python3
"""Benchmark the synthetic data engine: renderer frames/s for a ~10k-face mesh at 640x480, and the wall time
of `vfm-pose synth` for 200 frames with 3 objects (issue 4 targets: >= 20 frames/s, < 2 minutes).

    .venv/bin/python scripts/bench_render.py [--frames 100] [--synth-frames 200] [--lmo]

--lmo renders three LM-O meshes (driller, duck, can; from ../shared/data/lmo_models/models) in the synth run
instead of the procedural driller_like, can_like and a 10k-face driller_like copy.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vfm_pose_ros.core.catalogue import ObjectModel, load_mesh  # noqa: E402
from vfm_pose_ros.data.procedural import make_object, to_object_model, write_object  # noqa: E402
from vfm_pose_ros.data.render import Light, Renderer  # noqa: E402
from vfm_pose_ros.data.scenes import LMO_K  # noqa: E402

SHARED = Path(os.environ.get("VFM_SHARED_DATA", REPO.parent / "shared" / "data"))


def bench_renderer(obj, frames: int, seed: int = 0) -> tuple[float, float, float]:
    """Mean wall, median wall and mean CPU ms per 640x480 frame (rgb, depth, masks), random poses at 0.5-1.0 m.

    CPU time (this thread) is what the frame costs on an idle core; wall time includes waiting for a busy one."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    renderer = Renderer(640, 480, LMO_K)
    poses = [(Rotation.random(random_state=rng).as_matrix(), np.array([0.0, 0.0, rng.uniform(0.5, 1.0)]))
             for _ in range(frames)]
    renderer.render([(obj, *poses[0])])  # warm the per-mesh cache
    times, cpu = [], []
    for R, t in poses:
        t0, c0 = time.perf_counter(), time.thread_time()
        renderer.render([(obj, R, t)], light=Light())
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return 1e3 * float(np.mean(times)), 1e3 * float(np.median(times)), 1e3 * float(np.mean(cpu))


def bench_synth(frames: int, lmo: bool) -> tuple[float, float]:
    """Wall and CPU seconds (the child process's user + system time) of one `vfm-pose synth` run."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if lmo:
            objects = ["--objects-dir", str(SHARED / "lmo_models" / "models"), "--objects", "driller,duck,can"]
        else:
            cat = tmp / "catalogue"
            write_object(make_object("driller_like"), cat)
            write_object(make_object("can_like"), cat)
            hd = make_object("driller_like", faces=10_000)
            hd.name, hd.class_id = "driller_like_10k", 3
            write_object(hd, cat)
            objects = ["--objects-dir", str(cat)]
        cmd = [sys.executable, "-m", "vfm_pose_ros.cli", "synth", *objects, "--frames", str(frames),
               "--split", "train", "--seed", "0", "--out", str(tmp / "ds")]
        print("$", " ".join(cmd[1:]), flush=True)
        t0, c0 = time.perf_counter(), os.times()
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        c1 = os.times()
        cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        return time.perf_counter() - t0, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="renderer frames to time")
    parser.add_argument("--synth-frames", type=int, default=200)
    parser.add_argument("--lmo", action="store_true", help="synth with three LM-O meshes")
    parser.add_argument("--skip-synth", action="store_true")
    args = parser.parse_args()

    rows = []
    obj = to_object_model(make_object("driller_like", faces=10_000))
    rows.append((f"driller_like ({len(obj.faces)} faces)", *bench_renderer(obj, args.frames)))
    lmo_driller = SHARED / "lmo_models" / "models" / "obj_000008.ply"
    if lmo_driller.is_file():
        v, f, c = load_mesh(lmo_driller, unit="mm")
        lmo = ObjectModel("driller", 8, v, f, c)
        rows.append((f"LM-O driller ({len(f)} faces)", *bench_renderer(lmo, args.frames)))

    synth_s = None
    if not args.skip_synth:
        synth_s = bench_synth(args.synth_frames, args.lmo)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nrenderer, 640x480, rgb + depth + masks, {args.frames} random poses at 0.5-1.0 m, "
          f"{os.cpu_count()} CPU cores, load average {load:.1f}:")
    for name, mean, med, cpu in rows:
        print(f"  {name:32s} {1e3 / mean:6.1f} frames/s wall ({mean:5.1f} ms, median {med:5.1f}); "
              f"CPU {cpu:5.1f} ms = {1e3 / cpu:6.1f} frames/s  "
              f"{'OK' if 1e3 / mean >= 20 else 'BELOW 20 frames/s (wall)'}")
    if synth_s is not None:
        wall, cpu = synth_s
        what = "3 LM-O objects" if args.lmo else "3 objects (driller_like, can_like, driller_like_10k)"
        print(f"vfm-pose synth, {args.synth_frames} frames, {what}: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({args.synth_frames / wall:.1f} frames/s)  {'OK' if wall < 120 else 'OVER the 2 minute target'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
