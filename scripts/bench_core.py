#!/usr/bin/env python3
"""Benchmark the ROS-free core: import time and metric throughput (printed, never asserted).

    python scripts/bench_core.py [--instances 1000] [--points 2000] [--repeats 3]

Targets (issue 3): `import vfm_pose_ros.core.metrics` under 0.5 s; ADD-S for 1,000 instances of a
2,000-point model under 1 s.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def import_seconds(module: str, repeats: int) -> list[float]:
    """Wall time of `import module` in a fresh interpreter (interpreter start-up excluded)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
        out.append(float(res.stdout.strip()))
    return out


def slowest_imports(module: str, n: int = 5) -> list[tuple[float, str]]:
    """The largest cumulative entries of `python -X importtime`."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, cwd=REPO, check=True)
    rows = []
    for line in res.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].strip()))
    top = [r for r in rows if not r[1].startswith(" ")]  # top-level imports only
    return sorted(top, reverse=True)[:n]


def timed(fn, repeats: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def cpu_seconds(fn, repeats: int) -> float:
    """Least CPU time (all threads) of ``fn``: on a busy machine, an upper bound of idle single-core wall time."""
    ts = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return min(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import os

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f} (timings scale with other work on the machine)")
    print("== import time (fresh interpreter, start-up excluded) ==")
    for module in ("vfm_pose_ros.core.metrics", "vfm_pose_ros.core.catalogue", "vfm_pose_ros.data.bop"):
        ts = import_seconds(module, args.repeats)
        print(f"  import {module:<28} best {min(ts):.3f} s  median {statistics.median(ts):.3f} s"
              + ("   (target < 0.5 s)" if module.endswith("metrics") else ""))
    print("  largest imports under vfm_pose_ros.core.metrics (cumulative):")
    for sec, name in slowest_imports("vfm_pose_ros.core.metrics"):
        print(f"    {sec:.3f} s  {name}")

    from scipy.spatial.transform import Rotation

    from vfm_pose_ros.core import metrics as M
    from vfm_pose_ros.core.catalogue import Symmetry

    rng = np.random.default_rng(0)
    n, m = args.instances, args.points
    pts = rng.normal(size=(m, 3)) * 0.05  # a 2,000-point model about 20 cm across
    R_gt = Rotation.random(n, random_state=1).as_matrix()
    t_gt = np.c_[rng.uniform(-0.2, 0.2, (n, 2)), rng.uniform(0.5, 1.5, n)]
    # Realistic estimates: a few degrees and millimetres off.
    R_est = (Rotation.from_rotvec(rng.normal(size=(n, 3)) * np.radians(5)) * Rotation.from_matrix(R_gt)).as_matrix()
    t_est = t_gt + rng.normal(size=(n, 3)) * 0.01
    K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])

    print(f"\n== metrics: {n} instances x {m}-point model (best / median of {args.repeats}) ==")
    best, med = timed(lambda: M.adi_batch(R_est, t_est, R_gt, t_gt, pts), args.repeats)
    print(f"  ADD-S (adi_batch, one KD-tree)     {best:.3f} s / {med:.3f} s   (target < 1 s)")
    cpu = cpu_seconds(lambda: M.adi_batch(R_est, t_est, R_gt, t_gt, pts), args.repeats)
    print(f"        CPU time, all threads          {cpu:.3f} s")
    best, med = timed(lambda: M.add_batch(R_est, t_est, R_gt, t_gt, pts), args.repeats)
    print(f"  ADD   (add_batch)                  {best:.3f} s / {med:.3f} s")
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    syms = M.symmetry_transformations(Symmetry("discrete", [flip]))
    sp = M.symmetric_points(pts, syms)
    best, med = timed(lambda: M.mssd_batch(R_est, t_est, R_gt, t_gt, pts, syms, sym_pts=sp), args.repeats)
    print(f"  MSSD  (2 discrete symmetries)      {best:.3f} s / {med:.3f} s")
    best, med = timed(lambda: M.mspd_batch(R_est, t_est, R_gt, t_gt, K, pts, syms, sym_pts=sp), args.repeats)
    print(f"  MSPD  (2 discrete symmetries)      {best:.3f} s / {med:.3f} s")
    cont = M.symmetry_transformations(Symmetry("continuous", axis=np.array([0, 0, 1.0])))
    sc = M.symmetric_points(pts, cont)
    k = max(1, n // 10)
    best, _ = timed(lambda: M.mssd_batch(R_est[:k], t_est[:k], R_gt[:k], t_gt[:k], pts, cont, sym_pts=sc), 1)
    print(f"  MSSD  (continuous, {len(cont)} transforms) {best / k * 1000:.2f} ms per instance")
    loop = min(200, n)

    def per_instance():
        from scipy.spatial import cKDTree

        for i in range(loop):  # the BOP toolkit's way: a KD-tree per estimate
            cKDTree(pts @ R_est[i].T + t_est[i]).query(pts @ R_gt[i].T + t_gt[i], k=1)

    best, _ = timed(per_instance, 1)
    print(f"  (reference: per-instance KD-tree, as bop_toolkit: {best / loop * n:.3f} s for {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
