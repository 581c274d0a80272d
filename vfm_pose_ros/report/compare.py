"""The backend comparison: metrics per backend and object, latency, and the report files.

Metrics come only from :class:`vfm_pose_ros.core.metrics.PoseEvaluator` (through
:func:`score_predictions` here, or :func:`vfm_pose_ros.data.evaluation.evaluate` in the
``vfm-pose compare --dataset`` path, which scores the written BOP results exactly as
``vfm-pose eval`` does). This module adds latency and throughput, then writes into one folder:

* ``results.json``: per backend, the evaluator's report (per object under ``objects``, pooled
  under ``overall``), latency, settings; plus the run's settings and the figure files;
* ``table.csv``: one row per backend and object (and ``all``);
* ``report.md`` and ``report.html``: the paper's Table I with our extra columns, the figures,
  the settings and a short reading of the numbers;
* the figures (:mod:`vfm_pose_ros.report.figures`).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.metrics import InstanceResult, PoseEvaluator, report_settings
from ..core.types import GroundTruthPose, ObjectPose
from . import figures as F
from .compare_text import (  # noqa: F401  (importable from here)
    format_table,
    markdown_tables,
    markdown_to_html,
    print_table,
    reading,
    render_markdown,
)

RESULTS_JSON = "results.json"
TABLE_CSV = "table.csv"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"

# table.csv columns taken from the evaluator's report, in order (units in the names).
METRIC_COLUMNS = [
    "n_gt", "n_predicted", "n_false_positives",
    "add_mean_mm", "add_median_mm", "adds_mean_mm", "adds_median_mm",
    "rot_err_mean_deg", "rot_err_median_deg", "trans_err_mean_mm", "trans_err_median_mm",
    "add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "acc_5cm5deg", "auc_add", "auc_adds",
    "mssd_recall", "mspd_recall", "bop19_average_recall", "bop19_average_recall_vsd",
]
LATENCY_COLUMNS = ["latency_mean_ms", "latency_p95_ms", "throughput_fps"]
TABLE_COLUMNS = ["backend", "object"] + METRIC_COLUMNS + LATENCY_COLUMNS
ALL = "all"  # the object name of the pooled row


@dataclass
class FrameRecord:
    """One evaluated frame: identity, camera and ground truth; images only for frames that are drawn."""

    scene_id: int
    im_id: int
    K: np.ndarray
    gts: list[GroundTruthPose]
    width: int = 640
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None

    @property
    def title(self) -> str:
        return f"scene {self.scene_id}, image {self.im_id}"


@dataclass
class BackendResult:
    """One backend's outcome on the frames: the evaluator's report and instances, latency, drawn poses."""

    name: str
    report: dict
    instances: list[InstanceResult]
    latency: dict
    settings: dict = field(default_factory=dict)
    # predictions of the frames that are drawn, by index into the frame list given to write_report
    drawn: dict[int, list[ObjectPose]] = field(default_factory=dict)
    # the 3D keypoints (object frame) behind the poses' keypoints_2d, by object name, when the backend has them
    keypoints_3d: dict[str, np.ndarray] | None = None


# ----------------------------------------------------------------------------- scoring and latency

def score_predictions(frames: list[FrameRecord], predictions: list[list[ObjectPose]], catalogue: Catalogue,
                      max_points: int | None = None) -> tuple[dict, PoseEvaluator]:
    """The evaluator's report for one backend's per-frame predictions (matched by object name)."""
    if len(frames) != len(predictions):
        raise ValueError(f"{len(predictions)} prediction lists for {len(frames)} frames: give one list per frame")
    ev = PoseEvaluator(catalogue, max_points=max_points)
    for fr, preds in zip(frames, predictions):
        ev.add_frame(fr.gts, preds, K=fr.K, image_width=fr.width, scene_id=fr.scene_id, im_id=fr.im_id)
    return ev.report(), ev


def latency_summary(latency_ms, wall_s: float | None = None, stage_ms: list[dict] | None = None,
                    how: str = "in-process Estimator.predict wall-clock per frame") -> dict:
    """Per-frame latency (mean, median, p95, max), throughput and mean per-stage times.

    ``wall_s``: the run's total wall time for throughput (frames / s); without it throughput is
    frames over the summed latencies. ``stage_ms``: one ``timings_ms`` dict per frame.
    """
    lat = np.asarray(list(latency_ms), dtype=float)
    lat = lat[np.isfinite(lat)]
    n = len(lat)
    out = {
        "how": how,
        "n_frames": int(n),
        "latency_mean_ms": float(lat.mean()) if n else None,
        "latency_median_ms": float(np.median(lat)) if n else None,
        "latency_p95_ms": float(np.percentile(lat, 95)) if n else None,
        "latency_max_ms": float(lat.max()) if n else None,
    }
    total_s = wall_s if wall_s else (lat.sum() / 1000.0 if n else 0.0)
    out["throughput_fps"] = float(n / total_s) if n and total_s > 0 else None
    out["throughput_how"] = "frames / wall time of the run" if wall_s else "frames / summed per-frame latency"
    stages: dict[str, list[float]] = {}
    for d in stage_ms or []:
        for k, v in (d or {}).items():
            stages.setdefault(k, []).append(float(v))
    out["stages_mean_ms"] = {k: float(np.mean(v)) for k, v in stages.items()}
    return out


def frame_stage_timings(poses: list[ObjectPose]) -> dict:
    """A frame's stage timings: the first pose's ``timings_ms`` (backends time the frame, not each object)."""
    for p in poses:
        if p.timings_ms:
            return dict(p.timings_ms)
    return {}


def estimator_keypoints(estimator) -> dict[str, np.ndarray] | None:
    """The 3D keypoints an estimator's keypoints_2d refer to (its ``keypoints`` dict), or None."""
    kp = getattr(estimator, "keypoints", None)
    if isinstance(kp, dict) and kp and all(np.ndim(v) == 2 for v in kp.values()):
        return {str(k): np.asarray(v, dtype=float) for k, v in kp.items()}
    return None


def error_samples(instances: list[InstanceResult]) -> F.ErrorSamples:
    """The figure's per-instance errors from the evaluator's instances (mm, deg; missed: inf / nan)."""
    return F.ErrorSamples(
        objects=[r.name for r in instances],
        add_s_mm=np.array([r.add_s * 1000.0 if r.predicted else np.inf for r in instances], dtype=float),
        re_deg=np.array([r.re if r.predicted else np.nan for r in instances], dtype=float),
        te_mm=np.array([r.te * 1000.0 if r.predicted else np.nan for r in instances], dtype=float),
    )


def pick_figure_frames(n_frames: int, k: int) -> list[int]:
    """k indices spread evenly over the run (first and last included): representative, not hand-picked."""
    if n_frames <= 0 or k <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, min(k, n_frames))})


def run_and_score(frames: list[FrameRecord], runs: dict[str, dict], catalogue: Catalogue,
                  max_points: int | None = None) -> list[BackendResult]:
    """Score in-memory runs: ``runs[backend] = {"predictions": [[ObjectPose]], "latency_ms": [...],
    optional "wall_s", "settings", "keypoints_3d"}``; drawn poses are kept for the frames that carry images."""
    out = []
    for name, run in runs.items():
        preds = run["predictions"]
        report, ev = score_predictions(frames, preds, catalogue, max_points)
        lat = latency_summary(run["latency_ms"], run.get("wall_s"), [frame_stage_timings(p) for p in preds])
        drawn = {i: preds[i] for i, fr in enumerate(frames) if fr.rgb is not None}
        out.append(BackendResult(name, report, ev.instances, lat, dict(run.get("settings", {})), drawn,
                                 run.get("keypoints_3d")))
    return out


# ----------------------------------------------------------------------------- the report files

def table_rows(results: list[BackendResult]) -> list[dict]:
    """One dict per backend and object (then the backend's pooled ``all`` row), TABLE_COLUMNS keys."""
    rows = []
    for b in results:
        items = list(b.report["objects"].items())
        if len(items) != 1:  # with one object the pooled row repeats it
            items.append((ALL, b.report["overall"]))
        for obj, vals in items:
            row = {"backend": b.name, "object": obj}
            row.update({k: vals.get(k) for k in METRIC_COLUMNS})
            row.update({k: b.latency.get(k) for k in LATENCY_COLUMNS})
            rows.append(row)
    return rows


def write_table_csv(path, rows: list[dict]) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in TABLE_COLUMNS})
    return path


FIGURE_CAPTIONS = {
    "panel": "The paper's Figure 3 for {backend}: RGB, ground-truth 3D box (green), predicted box (red), their "
             "overlay with model silhouettes, and 2D keypoints (green circles: ground truth projected; red "
             "crosses: predicted; yellow: error). Frames spread evenly over the run, zoomed on the objects.",
    "pointcloud": "Point cloud from the depth image, coloured by the RGB image, with ground-truth (green) and "
                  "predicted (red) 3D boxes, seen from a viewpoint turned 30 degrees from the camera. Renderer: "
                  "{renderer}.",
    "multi_object": "The frame with the most objects: every object's ground-truth (green) and predicted (red) "
                    "box, one panel per backend.",
    "errors": "Error distributions: cumulative ADD(-S) accuracy against the threshold (dashed: 0.1 x each "
              "object's diameter), and histograms of rotation and translation errors of matched instances.",
}


def make_figures(out: Path, frames: list[FrameRecord], results: list[BackendResult], catalogue: Catalogue,
                 renderer: str = "auto", panel_indices: list[int] | None = None
                 ) -> tuple[dict[str, str], dict[str, str], str, dict[str, float]]:
    """Draw every figure; returns (name -> file, name -> caption, point-cloud renderer used, name -> seconds).

    ``panel_indices``: the frames of the Figure 3 panels (default: every frame with images, at most 6);
    the multi-object figure takes the drawn frame with the most objects.
    """
    names = [b.name for b in results]
    kp3d = {b.name: b.keypoints_3d for b in results}
    drawn = [i for i, fr in enumerate(frames) if fr.rgb is not None]
    views = {}
    for i in drawn:
        fr = frames[i]
        preds = {b.name: b.drawn.get(i, []) for b in results}
        views[i] = F.FrameView(fr.rgb, fr.K, fr.gts, preds, depth=fr.depth, title=fr.title)
    files, captions, used, secs = {}, {}, "none (no frame with depth)", {}
    clock = time.perf_counter
    if panel_indices is None:
        panel_idx = [i for i in drawn if frames[i].gts][:6] or drawn[:6]
    else:
        panel_idx = [i for i in panel_indices if i in views]
    if panel_idx:
        for b in names:
            key, t0 = f"panel_{b}", clock()
            files[key] = F.pose_panel(out / f"fig_panel_{b}.png", [views[i] for i in panel_idx], b, catalogue,
                                      keypoints_3d=kp3d.get(b)).name
            captions[key] = FIGURE_CAPTIONS["panel"].format(backend=b)
            secs[key] = clock() - t0
    if drawn:
        # the most objects; among equals, a frame the panels do not show already
        multi = max(drawn, key=lambda i: (len(frames[i].gts), i not in panel_idx, -i))
        t0 = clock()
        files["multi_object"] = F.multi_object_figure(out / "fig_multi_object.png", views[multi], names,
                                                      catalogue).name
        captions["multi_object"] = FIGURE_CAPTIONS["multi_object"]
        secs["multi_object"], t0 = clock() - t0, clock()
        with_depth = [i for i in [multi] + drawn if frames[i].depth is not None and frames[i].gts]
        if with_depth:
            path, used = F.pointcloud_figure(out / "fig_pointcloud.png", views[with_depth[0]], names, catalogue,
                                             renderer=renderer)
            files["pointcloud"] = path.name
            captions["pointcloud"] = FIGURE_CAPTIONS["pointcloud"].format(renderer=used)
            secs["pointcloud"] = clock() - t0
    t0 = clock()
    diam = {}
    for b in results:
        for r in b.instances:
            diam[r.name] = r.diameter * 1000.0
    files["errors"] = F.error_figure(out / "fig_errors.png", {b.name: error_samples(b.instances) for b in results},
                                     diam, stats={b.name: b.report["overall"] for b in results}).name
    captions["errors"] = FIGURE_CAPTIONS["errors"]
    secs["errors"] = clock() - t0
    return files, captions, used, {k: round(v, 3) for k, v in secs.items()}


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    return o


def write_report(out, frames: list[FrameRecord], results: list[BackendResult], catalogue: Catalogue,
                 settings: dict | None = None, renderer: str = "auto", figures: bool = True,
                 panel_indices: list[int] | None = None) -> dict:
    """Write results.json, table.csv, report.md, report.html and the figures into ``out``; return results.json.

    ``frames``: the frames whose images are drawn (others may be left without rgb);
    ``panel_indices``: which of them the Figure 3 panels show (see :func:`make_figures`);
    ``settings``: what the run was (dataset or bag, frames, device, checkpoints, ...), shown in the report.
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(settings or {})
    settings.setdefault("date", _dt.datetime.now().isoformat(timespec="seconds"))
    settings.setdefault("host", f"{platform.node()} ({platform.machine()}, Python {platform.python_version()})")
    rows = table_rows(results)
    files, captions, renderer_used, fig_secs = ({}, {}, "not drawn", {})
    t_fig = time.perf_counter()
    if figures:
        files, captions, renderer_used, fig_secs = make_figures(out, frames, results, catalogue, renderer,
                                                                panel_indices)
    t_fig = time.perf_counter() - t_fig
    n_frames = settings.get("n_frames", max((b.report.get("n_frames", 0) for b in results), default=0))
    settings["n_frames"] = n_frames
    doc = {
        "settings": settings,
        "metric_settings": report_settings(),
        "backends": {b.name: {"report": b.report, "latency": b.latency, "settings": b.settings} for b in results},
        "table": rows,
        "figures": files,
        "pointcloud_renderer": renderer_used,
        "reading": reading(results, n_frames),
    }
    write_table_csv(out / TABLE_CSV, rows)
    md = render_markdown(doc, results, captions)
    (out / REPORT_MD).write_text(md)
    (out / REPORT_HTML).write_text(markdown_to_html(md, title="vfm_pose_ros: backend comparison"))
    doc["timings_s"] = {"figures": round(t_fig, 3), "per_figure": fig_secs,
                        "report_total": round(time.perf_counter() - t0, 3)}
    doc = _jsonable(doc)
    (out / RESULTS_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def compare(frames: list[FrameRecord], runs: dict[str, dict], catalogue: Catalogue, out,
            settings: dict | None = None, max_points: int | None = None, renderer: str = "auto") -> dict:
    """Score in-memory runs (see :func:`run_and_score`) and write the report; returns results.json."""
    results = run_and_score(frames, runs, catalogue, max_points)
    return write_report(out, frames, results, catalogue, settings, renderer)


def rename_gts(gts: list[GroundTruthPose], catalogue: Catalogue) -> list[GroundTruthPose]:
    """Ground truth named by the catalogue's class ids (as data.evaluation.evaluate names it)."""
    return [dataclasses.replace(g, name=catalogue.by_id[g.obj_id].name) if g.obj_id in catalogue.by_id else g
            for g in gts]
