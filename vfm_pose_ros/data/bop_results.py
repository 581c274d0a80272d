"""BOP results files: one pose estimate per row of ``scene_id,im_id,obj_id,score,R,t,time`` (t in mm)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.types import ObjectPose

RESULTS_HEADER = ["scene_id", "im_id", "obj_id", "score", "R", "t", "time"]

@dataclass
class BopResult:
    """One pose estimate in the BOP results format (t in metres here, millimetres in the file)."""

    scene_id: int
    im_id: int
    obj_id: int
    score: float
    R: np.ndarray
    t: np.ndarray
    time: float = -1.0  # seconds for the whole image; -1 = unknown

    @classmethod
    def from_pose(cls, scene_id: int, im_id: int, pose: ObjectPose, obj_id: int, time: float = -1.0) -> BopResult:
        return cls(int(scene_id), int(im_id), int(obj_id), float(pose.score), np.asarray(pose.R, float),
                   np.asarray(pose.t, float).reshape(3), float(time))

    def to_pose(self, name: str) -> ObjectPose:
        return ObjectPose(name=name, R=np.asarray(self.R, float), t=np.asarray(self.t, float), score=self.score)


def write_results_csv(path, results) -> Path:
    """BOP results CSV: ``scene_id,im_id,obj_id,score,R,t,time`` (R row-major, t in mm, space-separated)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULTS_HEADER)
        for r in results:
            R = np.asarray(r.R, float).reshape(-1)
            t = np.asarray(r.t, float).reshape(-1) * 1000.0
            w.writerow([int(r.scene_id), int(r.im_id), int(r.obj_id), repr(float(r.score)),
                        " ".join(repr(float(v)) for v in R), " ".join(repr(float(v)) for v in t),
                        repr(float(r.time))])
    return path


def read_results_csv(path) -> list[BopResult]:
    """Read a BOP results CSV (header optional); t is returned in metres."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    out = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (lineno == 1 and row[0].strip() == "scene_id"):
                continue
            if len(row) not in (6, 7):
                raise ValueError(f"{path}:{lineno}: expected 7 columns {','.join(RESULTS_HEADER)}, got {len(row)}")
            try:
                R = np.array([float(v) for v in row[4].split()]).reshape(3, 3)
                t = np.array([float(v) for v in row[5].split()]).reshape(3) / 1000.0
                out.append(BopResult(int(row[0]), int(row[1]), int(row[2]), float(row[3]), R, t,
                                     float(row[6]) if len(row) > 6 and row[6].strip() else -1.0))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: malformed result row ({exc}): R needs 9 numbers, t 3 (mm)") from exc
    return out
