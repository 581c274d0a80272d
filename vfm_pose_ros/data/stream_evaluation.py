"""Scoring a stream of frames whose ground truth and detections arrive separately, matched by stamp.

The ROS evaluator node (:mod:`vfm_pose_ros.ros.evaluator_node`) feeds :class:`Scorer` from its
subscriptions; the benchmark and the tests feed it directly, without ROS. Scoring is
:class:`vfm_pose_ros.core.metrics.PoseEvaluator`, the code ``vfm-pose eval`` uses, so the report has the
same keys and numbers as the offline evaluation of the same predictions.
"""
from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path


class Scorer:
    """Stamp matching and scoring, without ROS (the node feeds it; tests can too).

    ``add_ground_truth`` / ``add_detections`` take a stamp and a list of poses; a frame is
    scored as soon as both halves are there; :meth:`expire` scores ground truth that waited
    longer than ``timeout_s`` as a gap.
    """

    def __init__(self, catalogue, max_points: int | None = None, timeout_s: float = 10.0, frame_ids=None,
                 camera=None, depth=None, vsd_delta: float = 0.015, objects=None, frames_in_bag: int | None = None):
        from ..core.metrics import PoseEvaluator

        self.catalogue = catalogue
        missing = [n for n in objects or [] if n not in catalogue]
        if missing:
            raise ValueError(f"objects {missing} are not in the catalogue; it has: {', '.join(catalogue.names)}")
        self.objects = set(objects) if objects else None  # score only these; None = every catalogue object
        self.left_out: set[str] = set()  # catalogue objects seen but not scored (objects given)
        self.camera = camera  # stamp -> (K, image width) or None: intrinsics looked up when a frame is scored
        self.depth = depth  # stamp -> depth (metres) or None, looked up (and released) when a frame is scored
        renderer = None
        if depth is not None:
            from ..data.render import DepthPatches

            renderer = DepthPatches()
        self.evaluator = PoseEvaluator(catalogue, max_points=max_points, renderer=renderer, vsd_delta=vsd_delta)
        self.timeout_s = float(timeout_s)
        self.frame_ids = frame_ids or {}  # stamp -> (scene_id, im_id)
        self.frames_in_bag = frames_in_bag  # None: not known (no bag given), so completeness cannot be judged
        self.received: set[int] = set()  # stamps of the ground-truth frames that arrived (frames played)
        self.unplayed: list[int] = []  # bag frames never played, scored as failures (score_unplayed)
        self.lock = threading.Lock()
        self.pending_gt: OrderedDict[int, tuple] = OrderedDict()  # stamp -> (gts, K, width, t)
        self.pending_det: OrderedDict[int, tuple] = OrderedDict()  # stamp -> (poses, t)
        self.waiting_camera: OrderedDict[int, tuple] = OrderedDict()  # complete, no intrinsics yet: (gts, poses,
        # matched, t)
        self.problems: dict[str, int] = {}  # bad input seen by the node, by kind (report: ros.input_problems)
        self.scored: set[int] = set()
        self.rows: list[dict] = []
        self.gaps: list[int] = []
        self.matched = 0
        self.det_without_gt = 0
        self.duplicates = 0
        self.unknown_classes: dict[str, int] = {}
        self.n_detections = 0

    def _known(self, poses):
        out = []
        for p in poses:
            if p.name not in self.catalogue:
                self.unknown_classes[p.name] = self.unknown_classes.get(p.name, 0) + 1
            elif self.objects is None or p.name in self.objects:
                out.append(p)
            else:
                self.left_out.add(p.name)
        return out

    def _scored_gts(self, gts):
        if self.objects is None:
            return gts
        self.left_out.update(g.name for g in gts if g.name not in self.objects)
        return [g for g in gts if g.name in self.objects]

    def count_problem(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.problems[kind] = self.problems.get(kind, 0) + n

    def add_ground_truth(self, stamp: int, gts, K=None, width=None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.received.add(stamp)
            gts = self._scored_gts(gts)
            if stamp in self.scored or stamp in self.pending_gt or stamp in self.waiting_camera:
                self.duplicates += 1
                return
            if stamp in self.pending_det:
                poses, _ = self.pending_det.pop(stamp)
                self._score(stamp, gts, poses, K, width, matched=True, now=now)
            else:
                self.pending_gt[stamp] = (gts, K, width, now)

    def add_detections(self, stamp: int, poses, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.n_detections += len(poses)
            poses = self._known(poses)
            if stamp in self.scored or stamp in self.pending_det or stamp in self.waiting_camera:
                self.duplicates += 1
                return
            if stamp in self.pending_gt:
                gts, K, width, _ = self.pending_gt.pop(stamp)
                self._score(stamp, gts, poses, K, width, matched=True, now=now)
            else:
                self.pending_det[stamp] = (poses, now)

    def expire(self, now: float | None = None, everything: bool = False) -> None:
        """Score ground truth that waited too long as gaps; drop detections that found no ground truth; score
        frames that waited too long for camera info without it."""
        now = time.monotonic() if now is None else now
        with self.lock:
            for stamp in [s for s, v in self.pending_gt.items() if everything or now - v[3] > self.timeout_s]:
                gts, K, width, _ = self.pending_gt.pop(stamp)
                self._score(stamp, gts, [], K, width, matched=False, now=now)
            for stamp in [s for s, v in self.pending_det.items() if everything or now - v[1] > self.timeout_s]:
                self.pending_det.pop(stamp)
                self.det_without_gt += 1
            for stamp in [s for s, v in self.waiting_camera.items() if everything or now - v[3] > self.timeout_s]:
                gts, poses, matched, _ = self.waiting_camera.pop(stamp)
                self._score(stamp, gts, poses, None, None, matched, force=True)

    def mark_received(self, stamp: int) -> None:
        """A ground-truth frame arrived but was not usable (the node skipped it): it was played all the same."""
        with self.lock:
            self.received.add(stamp)

    def score_unplayed(self, bag_frames: dict) -> int:
        """Score the ground truth of bag frames (stamp -> ground truth) that never arrived as frames without
        detections (every instance a failure): the graph stopped before the bag was played. Returns how many."""
        with self.lock:
            todo = sorted(s for s in bag_frames if s not in self.received and s not in self.scored)
            for stamp in todo:
                self._score(stamp, self._scored_gts(bag_frames[stamp]), [], None, None, matched=False, force=True)
                self.gaps.remove(stamp)  # gaps: frames played whose detections never came; these were not played
                self.unplayed.append(stamp)
        return len(todo)

    def camera_arrived(self) -> None:
        """Score the frames that were waiting for intrinsics (the node calls this on camera info)."""
        with self.lock:
            for stamp in list(self.waiting_camera):
                gts, poses, matched, t = self.waiting_camera.pop(stamp)
                self._score(stamp, gts, poses, None, None, matched, now=t)

    def _score(self, stamp, gts, poses, K, width, matched: bool, now: float | None = None,
               force: bool = False) -> None:
        if K is None and self.camera is not None:  # camera info can arrive after the ground truth (other topic)
            K, width = self.camera(stamp) or (None, None)
            if K is None and not force:  # none yet: wait (MSPD needs K), at most timeout_s
                self.waiting_camera[stamp] = (gts, poses, matched, time.monotonic() if now is None else now)
                return
        scene_id, im_id = self.frame_ids.get(stamp, (None, None))
        depth = self.depth(stamp) if self.depth is not None else None
        results = self.evaluator.add_frame(gts, poses, K=K, image_width=width, scene_id=scene_id, im_id=im_id,
                                           depth=depth)
        self.scored.add(stamp)
        if matched:
            self.matched += 1
        else:
            self.gaps.append(stamp)
        for r in results:
            self.rows.append({"stamp_ns": stamp, "detections_received": matched, **r.to_dict()})

    def report(self) -> dict:
        """``PoseEvaluator.report()`` (the keys of ``vfm-pose eval``), plus ``dataset`` and ``ros`` sections."""
        with self.lock:
            rep = self.evaluator.report()
            rep["dataset"] = {
                "root": None, "split": None, "targets": False,
                "n_results": self.n_detections,
                "n_results_scored": self.n_detections - sum(self.unknown_classes.values()),
                "n_results_outside_dataset": self.det_without_gt,
                "unknown_obj_ids": sorted(self.unknown_classes),
                "mean_time_per_image_s": None,
                "objects_scored": sorted(self.objects) if self.objects else None,
                "objects_left_out": sorted(self.left_out),
            }
            played = len(self.received)
            if self.frames_in_bag is not None:
                rep["status"] = "incomplete" if played < self.frames_in_bag else "complete"
            else:
                rep["status"] = None  # no bag given: the frames that should have come are unknown
            rep["ros"] = {
                "frames_played": played,
                "frames_in_bag": self.frames_in_bag,
                "unplayed_frames": len(self.unplayed),
                "frames_matched": self.matched,
                "gaps": sorted(self.gaps),
                "n_gaps": len(self.gaps),
                "detections_without_ground_truth": self.det_without_gt,
                "detections_unknown_class": sum(self.unknown_classes.values()),
                "unknown_classes": dict(sorted(self.unknown_classes.items())),
                "duplicate_messages": self.duplicates,
                "pending_ground_truth": len(self.pending_gt),
                "pending_detections": len(self.pending_det),
                "waiting_for_camera_info": len(self.waiting_camera),
                "input_problems": dict(sorted(self.problems.items())),
            }
            return rep

    def write(self, out_dir, markdown=None) -> dict:
        """Write frames.csv, report.md and report.json under ``out_dir``; returns the report.

        ``markdown(report) -> str`` formats report.md (``report.tables.markdown_report``); it comes from the
        caller because ``data`` sits below ``report``. None: no report.md."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rep = self.report()
        with self.lock:
            rows = sorted(self.rows, key=lambda r: (r["stamp_ns"], r["name"], r["gt_id"]))
        fields = list(rows[0]) if rows else ["stamp_ns", "detections_received"]  # InstanceResult.to_dict's order
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        _write_atomic(out / "frames.csv", buf.getvalue())
        if markdown is not None:
            _write_atomic(out / "report.md", markdown(rep))
        _write_atomic(out / "report.json", json.dumps(rep, indent=2) + "\n")  # last: its presence means complete
        return rep

    def summary(self) -> dict:
        """Running totals for ~/summary (cheap: the overall row only)."""
        rep = self.report()
        o = rep["overall"]
        keep = ("n_gt", "n_predicted", "add_mean_mm", "adds_mean_mm", "rot_err_mean_deg", "trans_err_mean_mm",
                "add_01d_acc", "add_s_01d_acc", "acc_5cm5deg", "auc_add", "bop19_average_recall")
        return {"n_frames": rep["n_frames"], "status": rep["status"], **{k: o.get(k) for k in keep}, **rep["ros"],
                "gaps": rep["ros"]["gaps"][-20:]}


def _write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename: a reader (or a kill mid-write) sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
