"""Scoring BOP results against a BOP dataset: the one path `vfm-pose eval`, `vfm-pose compare` and the tests use.

The scoring itself is :class:`vfm_pose_ros.core.metrics.PoseEvaluator` (the ROS evaluator node feeds
the same class frame by frame); this module only walks the dataset's annotations (no images are
decoded) and turns BOP result rows into poses.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.catalogue_loader import load_catalogue
from ..core.metrics import VSD_DELTA_ITODD_M, VSD_DELTA_M, PoseEvaluator
from .bop import TARGETS_BOP19, BopDataset, BopResult


def default_targets(root, split: str) -> str | None:
    """'bop19' where the dataset has BOP's ``test_targets_bop19.json`` and the split is a test split (the
    file lists test images), else None (all ground truth): what ``--targets auto`` means."""
    return "bop19" if split.startswith("test") and (Path(root) / TARGETS_BOP19).is_file() else None


def vsd_delta_for(root) -> float:
    """BOP 2019's VSD visibility tolerance for a dataset (metres): 5 mm for ITODD, 15 mm for the others."""
    return VSD_DELTA_ITODD_M if Path(root).resolve().name.lower().startswith("itodd") else VSD_DELTA_M


def make_evaluator(catalogue, max_points: int | None = None, vsd: bool = True, vsd_delta: float = VSD_DELTA_M
                   ) -> PoseEvaluator:
    """A PoseEvaluator that computes VSD (the package renderer, on the object's pixels) unless ``vsd`` is off."""
    renderer = None
    if vsd:
        from .render import DepthPatches

        renderer = DepthPatches()
    return PoseEvaluator(catalogue, max_points=max_points, renderer=renderer, vsd_delta=vsd_delta)


def resolve_catalogue(dataset: BopDataset, objects_dir=None) -> Catalogue:
    """The catalogue to score with: ``objects_dir`` (any source core/catalogue_loader.py reads), else the
    dataset's own ``models_eval/`` or ``models/``, named like the dataset names its ground truth."""
    if objects_dir is not None:
        return load_catalogue(objects_dir, id_names=dataset.id_names or None, prefer_eval=True)
    if dataset.catalogue is not None:
        return dataset.catalogue
    return dataset.load_catalogue(prefer_eval=True)


def first_frames(root, split: str, max_frames: int | None, scene: int | None = None) -> set | None:
    """The frames ``--max-frames N`` keeps: the first N (scene, image) of the split in sorted order, whether or not
    they are BOP targets; the one definition ``vfm-pose predict`` and ``vfm-pose eval`` share. None = all."""
    if not max_frames:
        return None
    keys = [k for k in BopDataset(root, split).keys() if scene is None or k[0] == scene]
    return set(keys[: int(max_frames)])


def _frame_gts_and_preds(dataset, catalogue, sid, iid, frame_results, scored_ids, unknown_ids):
    """(frame, ground truth, predictions) of one frame, named by the catalogue, of the scored objects only."""
    fr = dataset.frame(sid, iid, load_images=False)
    gts = []
    for g in fr.gts:
        if scored_ids is not None and g.obj_id not in scored_ids:
            continue
        if g.obj_id not in catalogue.by_id:
            raise KeyError(
                f"ground truth of scene {sid} image {iid} has obj_id {g.obj_id}, which the catalogue lacks "
                f"(it has ids {sorted(catalogue.by_id)}): pass the dataset's models with --objects-dir"
            )
        gts.append(dataclasses.replace(g, name=catalogue.by_id[g.obj_id].name))
    preds = []
    for r in frame_results:
        if r.obj_id not in catalogue.by_id:
            unknown_ids.add(int(r.obj_id))
        elif scored_ids is None or r.obj_id in scored_ids:
            preds.append(r.to_pose(catalogue.by_id[r.obj_id].name))
    return fr, gts, preds


def _scored_ids(catalogue: Catalogue, objects) -> set[int] | None:
    if not objects:
        return None
    missing = [n for n in objects if n not in catalogue]
    if missing:
        raise KeyError(f"--objects names {missing}, which the catalogue lacks; it has: {', '.join(catalogue.names)}")
    return {catalogue[n].class_id for n in objects}


def evaluate(dataset: BopDataset, results: list[BopResult], catalogue: Catalogue | None = None,
             max_points: int | None = None, progress: bool = True,
             evaluator: PoseEvaluator | None = None, objects=None, frames=None) -> dict:
    """Score ``results`` on every frame of ``dataset`` (its target frames when it has targets).

    Ground truth is renamed by the catalogue's class ids, so the dataset's own naming does not
    matter. Results for frames outside the dataset, or for objects the catalogue lacks, are
    counted in ``report["dataset"]`` and otherwise ignored. ``objects`` (names) scores only those
    objects: the others' ground truth and results are left out, and the report names them.
    ``frames`` (a set of (scene, image), see :func:`first_frames`) keeps only those frames. Pass
    ``evaluator`` to keep the per-instance results (``evaluator.instances``). Depth images are read
    (not the colour images) only when the evaluator computes VSD (it has a renderer).
    """
    from tqdm import tqdm

    catalogue = catalogue or resolve_catalogue(dataset)
    scored_ids = _scored_ids(catalogue, objects)
    ev = evaluator or make_evaluator(catalogue, max_points=max_points, vsd_delta=vsd_delta_for(dataset.root))
    by_frame: dict[tuple[int, int], list[BopResult]] = defaultdict(list)
    for r in results:
        by_frame[(int(r.scene_id), int(r.im_id))].append(r)
    keys = [k for k in dataset.keys() if frames is None or k in frames]
    if not keys:
        raise ValueError(f"{dataset.split_dir} has no frames to evaluate (check --split, --targets and --max-frames)")
    unknown_ids: set[int] = set()
    seen_ids: set[int] = set()
    n_used = 0
    invalid_before = ev.n_invalid_predictions
    # VSD reads each frame's depth image: the next one is decoded on a thread while this one is scored
    # (PNG decoding releases the GIL; about 3 ms of a VGA frame's 20)
    pool = ThreadPoolExecutor(1) if ev.renderer is not None else None
    try:
        pending = pool.submit(dataset.depth, *keys[0]) if pool is not None else None
        for k, (sid, iid) in enumerate(tqdm(keys, desc="evaluating", unit="frame", disable=not progress)):
            depth = pending.result() if pending is not None else None
            pending = pool.submit(dataset.depth, *keys[k + 1]) if pool is not None and k + 1 < len(keys) else None
            frame_results = by_frame.get((sid, iid), [])
            seen_ids.update(int(r.obj_id) for r in frame_results)
            fr, gts, preds = _frame_gts_and_preds(dataset, catalogue, sid, iid, frame_results, scored_ids,
                                                  unknown_ids)
            seen_ids.update(g.obj_id for g in fr.gts)
            n_used += len(preds)
            ev.add_frame(gts, preds, K=fr.K, image_width=fr.width, scene_id=sid, im_id=iid, depth=depth)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    report = ev.report()
    _add_dataset_info(report, dataset, results, by_frame, set(keys), n_used, ev.n_invalid_predictions - invalid_before,
                      unknown_ids)
    left_out = sorted(catalogue.by_id[i].name for i in seen_ids - (scored_ids or seen_ids) if i in catalogue.by_id)
    report["dataset"]["objects_scored"] = sorted(objects) if objects else None
    report["dataset"]["objects_left_out"] = left_out
    return report


def _add_dataset_info(report, dataset, results, by_frame, keyset, n_used, n_invalid, unknown_ids) -> None:
    # BOP's time per image (inout.check_consistent_timings): every estimate of an image carries the image's
    # time; the mean over images, only when every result has one.
    times: dict[tuple[int, int], float] = {}
    all_timed = bool(results)
    for r in results:
        if r.time >= 0:
            times.setdefault((r.scene_id, r.im_id), r.time)
        else:
            all_timed = False
    report["overall"]["bop19_average_time_per_image"] = float(np.mean(list(times.values()))) if all_timed else None
    report["dataset"] = {
        "root": str(dataset.root),
        "split": dataset.split,
        "targets": dataset.targets is not None,
        "n_results": len(results),
        "n_results_scored": n_used - n_invalid,
        "n_results_invalid": n_invalid,  # not finite, or R not a rotation: counted, never scored
        "n_results_outside_dataset": sum(len(v) for k, v in by_frame.items() if k not in keyset),
        "unknown_obj_ids": sorted(unknown_ids),
        "mean_time_per_image_s": float(np.mean(list(times.values()))) if times else None,
    }
