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

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.bop_models import (
    CATALOGUE_JSON,
    bop_object_name,
    known_dataset_names,
    object_metadata,
    read_name_mapping,
)
from ..core.catalogue import Catalogue
from ..core.types import Frame, GroundTruthPose, ObjectPose

IMAGE_DIRS = ("rgb", "gray")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TARGETS_BOP19 = "test_targets_bop19.json"
BOP19_MIN_VISIB = 0.1  # test_targets_bop19.json counts instances at least 10 % visible
RESULTS_HEADER = ["scene_id", "im_id", "obj_id", "score", "R", "t", "time"]


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is a base requirement
        raise ImportError("reading BOP images needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


def load_json(path: Path, what: str = "") -> dict | list:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {path.name}: {path}{what}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-create it or restore it from the archive") from exc


def save_json(path: Path, data) -> None:
    """BOP style: one top-level key per line (readable diffs, compact files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        if isinstance(data, dict):
            items = [f"  {json.dumps(str(k))}: {json.dumps(v, sort_keys=True)}" for k, v in data.items()]
            f.write("{\n" + ",\n".join(items) + "\n}\n")
        elif isinstance(data, list):
            f.write("[\n" + ",\n".join(f"  {json.dumps(v, sort_keys=True)}" for v in data) + "\n]\n")
        else:
            json.dump(data, f)
    tmp.replace(path)


def _int_keys(d: dict) -> dict:
    return {int(k): v for k, v in d.items()}


def read_image(path) -> np.ndarray:
    """RGB (HxWx3 uint8) from a colour or grey image file; 16-bit grey is scaled to 8 bits."""
    cv2 = _cv2()
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path} (missing, truncated or an unsupported format): restore it from "
                         "the dataset archive")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth(path, depth_scale: float) -> np.ndarray:
    """Depth in metres (float32, 0 = no measurement): stored value * depth_scale = millimetres."""
    cv2 = _cv2()
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read depth image {path} (truncated or not an image): restore it from the dataset "
                         "archive")
    if raw.ndim == 3:
        raw = raw[:, :, 0]
    return (raw.astype(np.float32) * np.float32(depth_scale / 1000.0)).astype(np.float32)


def read_mask(path) -> np.ndarray:
    cv2 = _cv2()
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f"cannot read mask {path} (truncated or not an image): restore it from the dataset archive")
    if m.ndim == 3:
        m = m[:, :, 0]
    return m > 0


def bbox_from_mask(mask) -> list[int]:
    """[x, y, w, h] of a mask as BOP's ``misc.calc_2d_bbox`` (w = x_max - x_min); [-1]*4 when empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        return [-1, -1, -1, -1]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


def bbox_from_points(uv) -> list[int]:
    """[x, y, w, h] of projected points, as BOP's bbox_obj (may extend past the image)."""
    uv = np.asarray(uv, dtype=float)
    uv = uv[np.all(np.isfinite(uv), axis=1)]
    if len(uv) == 0:
        return [-1, -1, -1, -1]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int)
    x1, y1 = np.floor(uv.max(axis=0)).astype(int)
    return [int(x0), int(y0), int(x1 - x0), int(y1 - y0)]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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
