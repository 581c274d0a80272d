"""BOP-format datasets and results (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md).

Layout::

    <root>/camera.json                     optional: fx, fy, cx, cy, width, height, depth_scale
    <root>/models/obj_XXXXXX.ply           meshes in mm, models_info.json (+ our catalogue.json: id -> name)
    <root>/models_eval/                    optional decimated meshes for metrics
    <root>/test_targets_bop19.json         optional: [{scene_id, im_id, obj_id, inst_count}]
    <root>/<split>/<scene:06d>/scene_camera.json   {im_id: {cam_K, depth_scale}}
                               scene_gt.json       {im_id: [{cam_R_m2c, cam_t_m2c (mm), obj_id}]}
                               scene_gt_info.json  {im_id: [{bbox_obj, bbox_visib, px_count_*, visib_fract}]}
                               rgb/ or gray/ <im:06d>.png|jpg|tif, depth/<im:06d>.png, mask_visib/<im>_<gt>.png

Millimetres live only in the files: :class:`BopDataset` hands out metres (t, depth) and
:class:`BopWriter` / :func:`write_results_csv` convert back. Images are read and written with
OpenCV (imported lazily); frames load one at a time.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.bop_models import bop_object_name, known_dataset_names, read_name_mapping
from ..core.catalogue import Catalogue
from ..core.types import Frame, GroundTruthPose
from .bop_files import (  # noqa: F401  (file primitives, importable from here as before)
    BOP19_MIN_VISIB,
    IMAGE_DIRS,
    IMAGE_EXTS,
    TARGETS_BOP19,
    _int_keys,
    bbox_from_mask,
    bbox_from_points,
    load_json,
    read_depth,
    read_image,
    read_mask,
    save_json,
)
from .bop_results import RESULTS_HEADER, BopResult, read_results_csv, write_results_csv  # noqa: F401
from .bop_writer import BopWriter, write_models_info, write_targets_bop19  # noqa: F401


@dataclass
class SceneFrame:
    """One image of a BOP scene with its camera and ground truth (metres)."""

    scene_id: int
    im_id: int
    rgb: np.ndarray | None  # HxWx3 uint8; None when loaded with load_images=False
    depth: np.ndarray | None  # HxW float32 metres, 0 = no measurement
    K: np.ndarray
    gts: list[GroundTruthPose] = field(default_factory=list)
    width: int = 0
    height: int = 0
    depth_scale: float = 1.0

    def to_frame(self, prompt: str | None = None) -> Frame:
        """The estimator input for this image."""
        if self.rgb is None:
            raise ValueError(f"scene {self.scene_id} image {self.im_id} was loaded without images (load_images=False)")
        return Frame(rgb=self.rgb, K=self.K.copy(), depth=self.depth, prompt=prompt,
                     frame_id="camera_color_optical_frame")


@dataclass
class _Scene:
    path: Path
    camera: dict
    gt: dict
    gt_info: dict
    image_dir: Path | None = None
    image_ext: str | None = None


class BopDataset:
    """A BOP split read lazily, frame by frame.

    ``catalogue`` names objects by class id; without one, names come from the dataset's
    ``models/catalogue.json``, then the LineMOD table for LM/LM-O datasets, else ``obj_XXXXXX``.
    ``targets="bop19"`` (or a path to a targets JSON) keeps only the listed images and, per image
    and object, the ``inst_count`` most visible instances (BOP 2019's valid ground truth).
    """

    def __init__(self, root, split: str = "test", catalogue: Catalogue | None = None, load_masks: bool = False,
                 targets: str | Path | None = None, load_depth: bool = True):
        self.root = Path(root)
        self.split = split
        self.catalogue = catalogue
        self.load_masks = load_masks
        self.load_depth = load_depth
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root} (pass the BOP dataset root, e.g. .../lmo)")
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("models"))
            raise FileNotFoundError(
                f"split folder not found: {self.split_dir}; this dataset has: {', '.join(found) or 'no split folders'} "
                "(choose one with --split)"
            )
        self.scene_dirs = {int(p.name): p for p in sorted(self.split_dir.iterdir()) if p.is_dir() and p.name.isdigit()}
        if not self.scene_dirs:
            raise FileNotFoundError(f"no scene folders (000000, 000001, ...) in {self.split_dir}")
        self.id_names: dict[int, str] = {}
        for d in (self.root / "models", self.root / "models_eval", self.root):
            for k, v in read_name_mapping(d).items():
                self.id_names.setdefault(k, v["name"])
        self._name_table = known_dataset_names(self.root)
        self.camera = load_json(self.root / "camera.json") if (self.root / "camera.json").is_file() else None
        self.targets = self._read_targets(targets)
        self._scenes: dict[int, _Scene] = {}
        self._keys: list[tuple[int, int]] | None = None

    # -- names and targets --------------------------------------------------------------

    def object_name(self, obj_id: int) -> str:
        obj_id = int(obj_id)
        if self.catalogue is not None and obj_id in self.catalogue.by_id:
            return self.catalogue.by_id[obj_id].name
        if obj_id in self.id_names:
            return self.id_names[obj_id]
        return self._name_table.get(obj_id) or bop_object_name(obj_id)

    def _read_targets(self, targets) -> dict | None:
        if targets is None or targets == "none":
            return None
        path = self.root / TARGETS_BOP19 if targets == "bop19" else Path(targets)
        if not path.is_file():
            if targets == "bop19":
                warnings.warn(f"{path} not found: evaluating all ground truth of {self.split_dir}", stacklevel=3)
                return None
            raise FileNotFoundError(f"targets file not found: {path}")
        out: dict[tuple[int, int], dict[int, int]] = {}
        for t in load_json(path):
            out.setdefault((int(t["scene_id"]), int(t["im_id"])), {})[int(t["obj_id"])] = int(t.get("inst_count", 1))
        return out

    # -- scenes ---------------------------------------------------------------------------

    def scene_ids(self) -> list[int]:
        return sorted(self.scene_dirs)

    def _scene(self, scene_id: int) -> _Scene:
        scene_id = int(scene_id)
        if scene_id not in self._scenes:
            if scene_id not in self.scene_dirs:
                raise KeyError(f"scene {scene_id} not in {self.split_dir} (scenes: {self.scene_ids()})")
            path = self.scene_dirs[scene_id]
            hint = " (a BOP scene needs scene_camera.json with cam_K and depth_scale per image)"
            camera = _int_keys(load_json(path / "scene_camera.json", hint))
            gt = _int_keys(load_json(path / "scene_gt.json")) if (path / "scene_gt.json").is_file() else {}
            info_path = path / "scene_gt_info.json"
            gt_info = _int_keys(load_json(info_path)) if info_path.is_file() else {}
            self._scenes[scene_id] = _Scene(path, camera, gt, gt_info)
        return self._scenes[scene_id]

    def keys(self) -> list[tuple[int, int]]:
        """(scene_id, im_id) of every image in order (only target images when targets are set)."""
        if self._keys is None:
            keys = []
            for sid in self.scene_ids():
                sc = self._scene(sid)
                ims = sorted(sc.gt) if sc.gt else sorted(sc.camera)
                keys += [(sid, i) for i in ims if self.targets is None or (sid, i) in self.targets]
            self._keys = keys
        return list(self._keys)

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self):
        for sid, iid in self.keys():
            yield self.frame(sid, iid)

    def iter_frames(self, load_images: bool = True):
        for sid, iid in self.keys():
            yield self.frame(sid, iid, load_images=load_images)

    # -- frames ---------------------------------------------------------------------------

    def _image_path(self, sc: _Scene, im_id: int) -> Path:
        if sc.image_dir is not None:
            p = sc.image_dir / f"{im_id:06d}{sc.image_ext}"
            if p.is_file():
                return p
        for d in IMAGE_DIRS:
            for ext in IMAGE_EXTS:
                p = sc.path / d / f"{im_id:06d}{ext}"
                if p.is_file():
                    sc.image_dir, sc.image_ext = p.parent, ext
                    return p
        raise FileNotFoundError(
            f"no image for scene {sc.path.name} image {im_id}: looked for {{rgb,gray}}/{im_id:06d}"
            f"{{{','.join(IMAGE_EXTS)}}} in {sc.path} (is the dataset fully extracted?)"
        )

    def _gts(self, scene_id: int, im_id: int, sc: _Scene) -> list[GroundTruthPose]:
        entries = sc.gt.get(im_id, [])
        infos = sc.gt_info.get(im_id, [])
        gts = []
        for gt_id, e in enumerate(entries):
            info = infos[gt_id] if gt_id < len(infos) else {}
            try:
                R = np.asarray(e["cam_R_m2c"], dtype=float).reshape(3, 3)
                t = np.asarray(e["cam_t_m2c"], dtype=float).reshape(3) / 1000.0
                obj_id = int(e["obj_id"])
            except (KeyError, ValueError) as exc:
                where = sc.path / "scene_gt.json"
                raise ValueError(f"{where}: image {im_id} entry {gt_id} is malformed ({exc})") from exc
            gts.append(GroundTruthPose(
                obj_id=obj_id, name=self.object_name(obj_id), R=R, t=t,
                visib_fract=float(info.get("visib_fract", 1.0)),
                bbox_visib=np.asarray(info["bbox_visib"]) if "bbox_visib" in info else None,
                bbox_obj=np.asarray(info["bbox_obj"]) if "bbox_obj" in info else None,
                gt_id=gt_id,
            ))
        if self.targets is not None:
            gts = self._valid_targets(gts, self.targets.get((scene_id, im_id), {}))
        return gts

    @staticmethod
    def _valid_targets(gts: list[GroundTruthPose], wanted: dict[int, int]) -> list[GroundTruthPose]:
        """BOP 2019 (visib_gt_min = -1): per target object, its inst_count most visible instances."""
        to_add = dict(wanted)
        keep = set()
        for g in sorted(gts, key=lambda g: -g.visib_fract):
            if to_add.get(g.obj_id, 0) > 0:
                keep.add(g.gt_id)
                to_add[g.obj_id] -= 1
        return [g for g in gts if g.gt_id in keep]

    def frame(self, scene_id: int, im_id: int, load_images: bool = True) -> SceneFrame:
        """One image: rgb, depth (metres), K, ground truth; ``load_images=False`` reads annotations only."""
        sc = self._scene(scene_id)
        im_id = int(im_id)
        if im_id not in sc.camera:
            raise KeyError(f"image {im_id} not in {sc.path / 'scene_camera.json'}")
        cam = sc.camera[im_id]
        if "cam_K" not in cam:
            raise ValueError(f"{sc.path / 'scene_camera.json'}: image {im_id} has no cam_K")
        K = np.asarray(cam["cam_K"], dtype=float).reshape(3, 3)
        depth_scale = float(cam.get("depth_scale", 1.0))
        gts = self._gts(int(scene_id), im_id, sc)
        rgb = depth = None
        if load_images:
            rgb = read_image(self._image_path(sc, im_id))
            height, width = rgb.shape[:2]
            if self.load_depth:
                depth = self.depth(scene_id, im_id)
            if self.load_masks:
                for g in gts:
                    p = sc.path / "mask_visib" / f"{im_id:06d}_{g.gt_id:06d}.png"
                    if p.is_file():
                        g.mask = read_mask(p)
        else:
            width, height = self._image_size(sc, im_id, cam)
        return SceneFrame(int(scene_id), im_id, rgb, depth, K, gts, int(width), int(height), depth_scale)

    def depth(self, scene_id: int, im_id: int) -> np.ndarray | None:
        """Only the depth image (metres, 0 = no measurement) of one frame; None where the frame has none."""
        sc = self._scene(scene_id)
        im_id = int(im_id)
        depth_scale = float(sc.camera.get(im_id, {}).get("depth_scale", 1.0))
        for ext in (".png", ".tif", ".tiff"):
            p = sc.path / "depth" / f"{im_id:06d}{ext}"
            if p.is_file():
                return read_depth(p, depth_scale)
        return None

    def _image_size(self, sc: _Scene, im_id: int, cam: dict) -> tuple[int, int]:
        if "im_size" in cam:  # BOP 2024 per-image size [width, height]
            return int(cam["im_size"][0]), int(cam["im_size"][1])
        if self.camera and "width" in self.camera and "height" in self.camera:
            return int(self.camera["width"]), int(self.camera["height"])
        from PIL import Image  # header only: no decoding

        with Image.open(self._image_path(sc, im_id)) as im:
            return im.size

    def load_catalogue(self, prefer_eval: bool = True, names=None) -> Catalogue:
        """The dataset's own objects (``models_eval/`` for metrics when present, else ``models/``)."""
        for d in (("models_eval", "models") if prefer_eval else ("models",)):
            if (self.root / d / "models_info.json").is_file():
                return Catalogue.from_bop_models(self.root / d, names=names, id_names=self.id_names)
        raise FileNotFoundError(
            f"no models/models_info.json under {self.root}: pass the object models with --objects-dir "
            "(a BOP models folder or a YAML catalogue directory)"
        )
