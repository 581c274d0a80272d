"""Shared pieces of the benchmark: statistics, machine facts, process memory, sections, test frames.

Nothing here imports torch or rclpy at module level, so the harness can report a missing
dependency per section instead of failing as a whole.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The scene objects every section uses (the package's default catalogue, config/objects/).
PROMPT = "the driller"  # prompt-driven backends (clip) need one; dinov2 ignores it


def summarize(values_ms: Iterable[float]) -> dict:
    """Median, p95, mean, min, max and count of timings (ms); empty dict when there are none."""
    a = np.asarray([v for v in values_ms if v is not None and np.isfinite(v)], dtype=float)
    if not len(a):
        return {}
    return {"median": round(float(np.median(a)), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "mean": round(float(a.mean()), 3),
            "min": round(float(a.min()), 3), "max": round(float(a.max()), 3), "n": int(len(a))}


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1, desc: str | None = None,
               progress: bool = True, cpu_ms: list | None = None) -> list[float]:
    """Wall milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    ``cpu_ms``, when given, receives each call's CPU time of this process (all threads): on a loaded
    machine wall time includes waiting for a core, CPU time does not.
    """
    from tqdm import tqdm

    for _ in range(max(0, warmup)):
        fn()
    out = []
    for _ in tqdm(range(max(1, repeats)), desc=desc, leave=False, disable=not progress or desc is None):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
        if cpu_ms is not None:
            cpu_ms.append((time.process_time() - c0) * 1e3)
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def machine_info() -> dict:
    """CPU, memory, torch threads and devices: what the figures depend on."""
    info: dict = {
        "hostname": platform.node(), "platform": platform.platform(), "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": None, "load_average": load_average(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        info["memory_total_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["memory_available_gb"] = round(psutil.virtual_memory().available / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_interop_threads=torch.get_num_interop_threads(), cuda=torch.cuda.is_available())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info["cpu_bf16_hint"] = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() \
            else None
    except ImportError:
        info["torch"] = None
    return info


def process_memory_mb(pid: int) -> dict:
    """Resident memory of a process: current RSS and the kernel's peak (VmHWM), in MB (None when unknown)."""
    out = {"rss_mb": None, "peak_rss_mb": None}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("VmHWM:"):
                out["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        try:
            import psutil

            out["rss_mb"] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except Exception:  # the process is gone, or no psutil
            pass
    return out


@dataclass
class Section:
    """Outcome of one part of the benchmark; a failure is recorded and the run goes on."""

    name: str
    status: str = "ok"  # ok | failed | skipped
    seconds: float = 0.0
    note: str = ""
    error: str = ""
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"status": self.status, "seconds": round(self.seconds, 1)}
        if self.note:
            d["note"] = self.note
        if self.error:
            d["error"] = self.error
        return d


class SkipSection(Exception):
    """Raised inside a section that cannot run here (no GPU, no rclpy); the message says why."""


@contextlib.contextmanager
def section(record: dict, name: str, log=print):
    """Run a block as a named section: time it, print its outcome, record a failure instead of raising."""
    sec = Section(name)
    log(f"[bench] {name} ...", flush=True) if log is print else log(f"[bench] {name} ...")
    t0 = time.perf_counter()
    try:
        yield sec
    except SkipSection as exc:
        sec.status, sec.note = "skipped", str(exc)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one section failing must not abort the others
        sec.status = "failed"
        sec.error = f"{type(exc).__name__}: {exc}"
        sec.data["traceback"] = traceback.format_exc(limit=8)
    sec.seconds = time.perf_counter() - t0
    record[name] = sec.to_dict()
    text = {"ok": "done", "skipped": f"skipped: {sec.note}", "failed": f"FAILED: {sec.error}"}[sec.status]
    msg = f"[bench] {name}: {text} ({sec.seconds:.1f} s)"
    log(msg, flush=True) if log is print else log(msg)
    if sec.status == "failed":
        print(sec.data["traceback"], file=sys.stderr, flush=True)


def default_catalogue():
    from ..core.catalogue import Catalogue
    from ..paths import default_catalogue_dir

    return Catalogue.from_dir(default_catalogue_dir())


def scaled_K(width: int, height: int) -> np.ndarray:
    """The LM-O camera scaled to another image size (same field of view)."""
    from ..data.scenes import LMO_K

    K = LMO_K.copy()
    K[0] *= width / 640.0
    K[1] *= height / 480.0
    return K


def synthetic_frames(catalogue, n: int, width: int = 640, height: int = 480, seed: int = 0) -> list:
    """``n`` rendered frames (data.scenes.SceneGenerator) with every catalogue object, depth and ground truth."""
    from ..data.scenes import SceneConfig, SceneGenerator

    cfg = SceneConfig(width=width, height=height, K=scaled_K(width, height), distractors=0,
                      min_visib_pixels=max(4, (width * height) // 3000), max_tries=10)
    gen = SceneGenerator(list(catalogue), cfg, seed=seed)
    return [gen.frame(i, stream=1) for i in range(n)]


def to_frame(sf, prompt: str | None = None, boxes: bool = False):
    """A core Frame of a synthetic frame; ``boxes``: the ground-truth boxes as external 2D boxes."""
    from ..core.types import Frame

    boxes_2d = None
    if boxes:
        boxes_2d = {}
        for g in sf.gts:
            x, y, w, h = (float(v) for v in g.bbox_visib)
            if w > 0:
                boxes_2d[g.name] = [x, y, x + w, y + h]
    return Frame(rgb=sf.rgb, K=sf.K, depth=sf.depth, prompt=prompt, boxes_2d=boxes_2d)


def gt_poses(sf) -> list:
    """The ground truth of a frame as ObjectPoses (what message building is timed with: content does not
    depend on whether a randomly initialised network found anything)."""
    from ..core.types import ObjectPose

    return [ObjectPose(name=g.name, R=np.asarray(g.R, float), t=np.asarray(g.t, float), score=0.9)
            for g in sf.gts]
