"""Scoring BOP results against a BOP dataset: the one path `vfm-pose eval`, `vfm-pose compare` and the tests use.

The scoring itself is :class:`vfm_pose_ros.core.metrics.PoseEvaluator` (the ROS evaluator node feeds
the same class frame by frame); this module only walks the dataset's annotations (no images are
decoded) and turns BOP result rows into poses.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.metrics import PoseEvaluator
from .bop import BopDataset, BopResult


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
    per-instance results (``evaluator.instances``).
    """
    from tqdm import tqdm

    catalogue = catalogue or resolve_catalogue(dataset)
    ev = evaluator or PoseEvaluator(catalogue, max_points=max_points)
    by_frame: dict[tuple[int, int], list[BopResult]] = defaultdict(list)
    for r in results:
        by_frame[(int(r.scene_id), int(r.im_id))].append(r)
    keys = dataset.keys()
    if not keys:
        raise ValueError(f"{dataset.split_dir} has no frames to evaluate (check --split and --targets)")
    unknown_ids: set[int] = set()
    n_used = 0
    for sid, iid in tqdm(keys, desc="evaluating", unit="frame", disable=not progress):
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
        ev.add_frame(gts, preds, K=fr.K, image_width=fr.width, scene_id=sid, im_id=iid)
    report = ev.report()
    keyset = set(keys)
    times = {}
    for r in results:
        if r.time >= 0:
            times[(r.scene_id, r.im_id)] = r.time
    report["dataset"] = {
        "root": str(dataset.root),
        "split": dataset.split,
        "targets": dataset.targets is not None,
        "n_results": len(results),
        "n_results_scored": n_used,
        "n_results_outside_dataset": sum(len(v) for k, v in by_frame.items() if k not in keyset),
        "unknown_obj_ids": sorted(unknown_ids),
        "mean_time_per_image_s": float(np.mean(list(times.values()))) if times else None,
    }
    return report
