"""What the pose node's worker thread and diagnostics share: the newest-frames queue and the counters.

ROS-free (threading and numpy): the pose node (:mod:`vfm_pose_ros.ros.pose_node`) owns one of each.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque

import numpy as np


class LatestQueue:
    """A bounded queue that keeps the newest items: putting into a full queue drops (and counts) the oldest."""

    def __init__(self, size: int = 1):
        self.q: queue.Queue = queue.Queue(maxsize=max(1, int(size)))
        self._lock = threading.Lock()

    def put(self, item) -> int:
        """Add an item; returns how many stale items were dropped to make room."""
        dropped = 0
        with self._lock:
            while True:
                try:
                    self.q.put_nowait(item)
                    return dropped
                except queue.Full:
                    try:
                        self.q.get_nowait()
                        dropped += 1
                    except queue.Empty:
                        pass

    def get(self, timeout: float):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None


class Stats:
    """Counters and latency window behind /diagnostics (thread-safe: executor and worker both write)."""

    def __init__(self, window: int = 200):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)
        self.latency_ms: deque = deque(maxlen=window)
        self.infer_ms: deque = deque(maxlen=window)
        # the estimator's own time per stage and frame (backbone, head, icp, ...): where a frame's time goes,
        # and the bench's ratio of latency to the backbone time of the same frames; 0 where a stage did not run
        self.stage_ms: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self.last_empty_reason = ""
        self.last_frame_empty = False
        self.last_frame_rejected = False  # the last frame was refused for bad input (diagnostics WARN)
        self._mark = (time.monotonic(), 0, 0)

    def add(self, key: str, n: int = 1) -> int:
        with self.lock:
            self.counts[key] += n
            return self.counts[key]

    def rates(self) -> tuple[float, float]:
        """(input Hz, processed Hz) since the previous call."""
        with self.lock:
            now = time.monotonic()
            t0, n_in0, n_done0 = self._mark
            n_in, n_done = self.counts["frames_in"], self.counts["frames_processed"]
            self._mark = (now, n_in, n_done)
        dt = max(now - t0, 1e-6)
        return (n_in - n_in0) / dt, (n_done - n_done0) / dt

    def add_stages(self, stages_ms: dict[str, float]) -> None:
        """One frame's stage times; every stage seen before gets a value (0 where it did not run this frame)."""
        with self.lock:
            for name in set(self.stage_ms) | set(stages_ms):
                self.stage_ms[name].append(float(stages_ms.get(name, 0.0)))

    def percentiles(self) -> tuple[float | None, float | None, float | None, dict[str, float]]:
        """(latency p50, latency p95, inference median, {stage: median}) over the window; None before any frame."""
        with self.lock:
            lat = np.array(self.latency_ms, float)
            inf = np.array(self.infer_ms, float)
            stages = {name: float(np.median(v)) for name, v in self.stage_ms.items() if len(v)}
        if not len(lat):
            return None, None, None, stages
        return float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), \
            (float(np.median(inf)) if len(inf) else None), stages
