"""Writing BOP datasets: frames and annotations of a split (:class:`BopWriter`), the BOP 2019 test targets
and a ``models/`` folder from a catalogue. Metres in, millimetres in the files."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..core.bop_models import CATALOGUE_JSON, object_metadata
from ..core.catalogue import Catalogue
from ..core.types import GroundTruthPose
from .bop_files import (
    BOP19_MIN_VISIB,
    TARGETS_BOP19,
    _cv2,
    _int_keys,
    bbox_from_mask,
    bbox_from_points,
    load_json,
    save_json,
)


class BopWriter:
    """Writes frames as a BOP split; JSON files are written by :meth:`close` (or leaving a ``with`` block).

    Existing scene JSON files are merged, so a split can be written in several sessions. For test
    splits, ``close`` also (re)writes ``<root>/test_targets_bop19.json`` from every scene on disk.
    ``catalogue`` (optional) lets ``bbox_obj`` come from the projected model when no full mask is given.
    """

    def __init__(self, root, split: str = "train", K_default=None, catalogue: Catalogue | None = None,
                 image_ext: str = ".png"):
        if image_ext not in (".png", ".jpg"):
            raise ValueError(f"image_ext must be .png or .jpg, got {image_ext!r}")
        self.root = Path(root)
        self.split = split
        self.split_dir = self.root / split
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.K_default = None if K_default is None else np.asarray(K_default, dtype=float).reshape(3, 3)
        self.catalogue = catalogue
        self.image_ext = image_ext
        self._scenes: dict[int, dict] = {}
        self._size: tuple[int, int] | None = None
        self.n_frames = 0
        self._clipped_depth = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def scene_dir(self, scene_id: int) -> Path:
        return self.split_dir / f"{int(scene_id):06d}"

    def add_frame(self, scene_id: int, im_id: int, rgb, depth_m=None, K=None, gts=(), masks_visib=None,
                  masks=None, depth_scale: float = 0.1) -> None:
        """Write one image and queue its annotations.

        ``depth_m``: HxW metres (0/NaN = none), stored as uint16 ``round(mm / depth_scale)``;
        ``masks_visib`` / ``masks``: one HxW bool per ground truth (visible part / whole object).
        """
        cv2 = _cv2()
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be HxWx3 uint8, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        K = self.K_default if K is None else np.asarray(K, dtype=float).reshape(3, 3)
        if K is None:
            raise ValueError("no camera matrix: pass K to add_frame or K_default to BopWriter")
        gts = list(gts)
        for name, ms in (("masks_visib", masks_visib), ("masks", masks)):
            if ms is not None and len(ms) != len(gts):
                raise ValueError(f"{name} has {len(ms)} masks for {len(gts)} ground-truth poses: give one per pose")
        sdir = self.scene_dir(scene_id)
        (sdir / "rgb").mkdir(parents=True, exist_ok=True)
        stem = f"{int(im_id):06d}"
        if not cv2.imwrite(str(sdir / "rgb" / f"{stem}{self.image_ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {sdir / 'rgb' / (stem + self.image_ext)}")
        depth = None
        if depth_m is not None:
            depth = np.asarray(depth_m, dtype=np.float64)
            if depth.shape != (h, w):
                raise ValueError(f"depth shape {depth.shape} differs from the image's {(h, w)}")
            raw = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * 1000.0 / depth_scale), 0.0)
            over = raw > 65535
            if over.any():  # out of uint16 range at this depth_scale: store as "no measurement"
                self._clipped_depth += int(over.sum())
                raw[over] = 0
            (sdir / "depth").mkdir(exist_ok=True)
            cv2.imwrite(str(sdir / "depth" / f"{stem}.png"), raw.astype(np.uint16))
        for sub, ms in (("mask_visib", masks_visib), ("mask", masks)):
            if ms is None:
                continue
            (sdir / sub).mkdir(exist_ok=True)
            for gt_id, m in enumerate(ms):
                m = np.asarray(m).astype(bool)
                if m.shape != (h, w):
                    raise ValueError(f"{sub} {gt_id} has shape {m.shape}, the image {(h, w)}")
                cv2.imwrite(str(sdir / sub / f"{stem}_{gt_id:06d}.png"), m.astype(np.uint8) * 255)

        scene = self._scenes.setdefault(int(scene_id), {"camera": {}, "gt": {}, "gt_info": {}})
        scene["camera"][int(im_id)] = {"cam_K": [float(v) for v in K.reshape(-1)], "depth_scale": float(depth_scale)}
        scene["gt"][int(im_id)] = [
            {"cam_R_m2c": [float(v) for v in np.asarray(g.R, float).reshape(-1)],
             "cam_t_m2c": [float(v) * 1000.0 for v in np.asarray(g.t, float).reshape(-1)],
             "obj_id": int(g.obj_id)}
            for g in gts
        ]
        scene["gt_info"][int(im_id)] = [
            self._gt_info(g, K, (h, w), depth,
                          None if masks_visib is None else np.asarray(masks_visib[i]).astype(bool),
                          None if masks is None else np.asarray(masks[i]).astype(bool))
            for i, g in enumerate(gts)
        ]
        self._size = (w, h)
        self.n_frames += 1

    def _gt_info(self, g: GroundTruthPose, K, size, depth, mask_visib, mask) -> dict:
        """scene_gt_info.json entry (BOP calc_gt_info.py); -1 where the masks needed are not given."""
        px_visib = int(mask_visib.sum()) if mask_visib is not None else -1
        px_all = int(mask.sum()) if mask is not None else -1
        if mask is not None:
            bbox_obj = bbox_from_mask(mask)
        elif self.catalogue is not None and int(g.obj_id) in self.catalogue.by_id:
            from ..core.transforms import project_object

            model = self.catalogue.by_id[int(g.obj_id)]
            bbox_obj = bbox_from_points(project_object(K, g.R, g.t, model.vertices))
        else:
            bbox_obj = [-1, -1, -1, -1]
        silhouette = mask if mask is not None else mask_visib
        if silhouette is None:
            px_valid = -1
        elif depth is None:
            px_valid = 0
        else:
            px_valid = int(np.sum(np.isfinite(depth[silhouette]) & (depth[silhouette] > 0)))
        if px_all > 0 and px_visib >= 0:
            visib_fract = px_visib / px_all
        elif px_all == 0:
            visib_fract = 0.0
        else:
            visib_fract = float(g.visib_fract)
        return {
            "bbox_obj": bbox_obj,
            "bbox_visib": bbox_from_mask(mask_visib) if mask_visib is not None else [-1, -1, -1, -1],
            "px_count_all": px_all,
            "px_count_valid": px_valid,
            "px_count_visib": px_visib,
            "visib_fract": float(visib_fract),
        }

    def close(self) -> None:
        """Write (merge) the scene JSON files, camera.json and, for test splits, the BOP 2019 targets."""
        for sid, scene in sorted(self._scenes.items()):
            sdir = self.scene_dir(sid)
            files = (("scene_camera.json", "camera"), ("scene_gt.json", "gt"), ("scene_gt_info.json", "gt_info"))
            for name, key in files:
                merged = _int_keys(load_json(sdir / name)) if (sdir / name).is_file() else {}
                merged.update(scene[key])
                save_json(sdir / name, {str(k): merged[k] for k in sorted(merged)})
        self._scenes = {}
        if self.K_default is not None and self._size is not None and not (self.root / "camera.json").is_file():
            K = self.K_default
            save_json(self.root / "camera.json", {"cx": K[0, 2], "cy": K[1, 2], "depth_scale": 1.0, "fx": K[0, 0],
                                                  "fy": K[1, 1], "height": self._size[1], "width": self._size[0]})
        if self.split.startswith("test"):
            write_targets_bop19(self.root, self.split)
        if self._clipped_depth:
            warnings.warn(f"{self._clipped_depth} depth pixels exceeded uint16 at the chosen depth_scale and were "
                          "stored as 0 (no measurement): use a larger depth_scale", stacklevel=2)
            self._clipped_depth = 0


def write_targets_bop19(root, split: str = "test", min_visib: float = BOP19_MIN_VISIB) -> Path:
    """``test_targets_bop19.json`` from a split's ground truth: per image and object, instances >= 10 % visible."""
    root = Path(root)
    targets = []
    for sdir in sorted(p for p in (root / split).iterdir() if p.is_dir() and p.name.isdigit()):
        if not (sdir / "scene_gt.json").is_file():
            continue
        gt = _int_keys(load_json(sdir / "scene_gt.json"))
        info = _int_keys(load_json(sdir / "scene_gt_info.json")) if (sdir / "scene_gt_info.json").is_file() else {}
        for im_id in sorted(gt):
            counts: dict[int, int] = {}
            infos = info.get(im_id, [])
            for gt_id, e in enumerate(gt[im_id]):
                vis = infos[gt_id].get("visib_fract", 1.0) if gt_id < len(infos) else 1.0
                if vis >= min_visib:
                    counts[int(e["obj_id"])] = counts.get(int(e["obj_id"]), 0) + 1
            targets += [{"im_id": im_id, "inst_count": n, "obj_id": o, "scene_id": int(sdir.name)}
                        for o, n in sorted(counts.items())]
    path = root / TARGETS_BOP19
    save_json(path, targets)
    return path


def write_models_info(models_dir, catalogue: Catalogue) -> Path:
    """A BOP ``models/`` folder: ``obj_XXXXXX.ply`` (mm), ``models_info.json`` and our ``catalogue.json`` (names)."""
    import trimesh

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    infos, meta = {}, {}
    for obj in sorted(catalogue, key=lambda o: o.class_id):
        v_mm = obj.vertices * 1000.0
        if obj.faces is not None and len(obj.faces):
            mesh = trimesh.Trimesh(v_mm, obj.faces, vertex_colors=obj.vertex_colors, process=False)
        else:
            mesh = trimesh.PointCloud(v_mm, colors=obj.vertex_colors)
        mesh.export(models_dir / f"obj_{obj.class_id:06d}.ply")
        bmin, size = v_mm.min(axis=0), v_mm.max(axis=0) - v_mm.min(axis=0)
        info = {"diameter": float(obj.diameter * 1000.0),
                "min_x": float(bmin[0]), "min_y": float(bmin[1]), "min_z": float(bmin[2]),
                "size_x": float(size[0]), "size_y": float(size[1]), "size_z": float(size[2])}
        info.update(obj.symmetry.to_bop())
        infos[str(obj.class_id)] = info
        meta[str(obj.class_id)] = object_metadata(obj)
    save_json(models_dir / "models_info.json", infos)
    save_json(models_dir / CATALOGUE_JSON, {"objects": meta})
    return models_dir
