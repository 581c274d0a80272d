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
    """The catalogue to score with: ``objects_dir`` (BOP models folder or YAML directory), else the
    dataset's own ``models_eval/`` or ``models/``, named like the dataset names its ground truth."""
    if objects_dir is not None:
        path = Path(objects_dir)
        if (path / "models_info.json").is_file() or (path / "models" / "models_info.json").is_file():
            return Catalogue.from_bop_models(path, id_names=dataset.id_names or None)
        return Catalogue.from_dir(path)
    if dataset.catalogue is not None:
        return dataset.catalogue
    return dataset.load_catalogue(prefer_eval=True)


def evaluate(dataset: BopDataset, results: list[BopResult], catalogue: Catalogue | None = None,
             max_points: int | None = None, progress: bool = True,
             evaluator: PoseEvaluator | None = None) -> dict:
    """Score ``results`` on every frame of ``dataset`` (its target frames when it has targets).

    Ground truth is renamed by the catalogue's class ids, so the dataset's own naming does not
    matter. Results for frames outside the dataset, or for objects the catalogue lacks, are
    counted in ``report["dataset"]`` and otherwise ignored. Pass ``evaluator`` to keep the
    per-instance results (``evaluator.instances``). Depth images are read (not the colour images)
    only when the evaluator computes VSD (it has a renderer).
    """
    from tqdm import tqdm

    catalogue = catalogue or resolve_catalogue(dataset)
    ev = evaluator or make_evaluator(catalogue, max_points=max_points, vsd_delta=vsd_delta_for(dataset.root))
    by_frame: dict[tuple[int, int], list[BopResult]] = defaultdict(list)
    for r in results:
        by_frame[(int(r.scene_id), int(r.im_id))].append(r)
    keys = dataset.keys()
    if not keys:
        raise ValueError(f"{dataset.split_dir} has no frames to evaluate (check --split and --targets)")
    unknown_ids: set[int] = set()
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
            fr = dataset.frame(sid, iid, load_images=False)
            gts = []
            for g in fr.gts:
                if g.obj_id not in catalogue.by_id:
                    raise KeyError(
                        f"ground truth of scene {sid} image {iid} has obj_id {g.obj_id}, which the catalogue lacks "
                        f"(it has ids {sorted(catalogue.by_id)}): pass the dataset's models with --objects-dir"
                    )
                gts.append(dataclasses.replace(g, name=catalogue.by_id[g.obj_id].name))
            preds = []
            for r in by_frame.get((sid, iid), []):
                if r.obj_id not in catalogue.by_id:
                    unknown_ids.add(int(r.obj_id))
                    continue
                preds.append(r.to_pose(catalogue.by_id[r.obj_id].name))
            n_used += len(preds)
            ev.add_frame(gts, preds, K=fr.K, image_width=fr.width, scene_id=sid, im_id=iid, depth=depth)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    n_invalid = ev.n_invalid_predictions - invalid_before
    report = ev.report()
    keyset = set(keys)
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
    return report
