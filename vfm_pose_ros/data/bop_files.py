"""BOP file primitives: JSON in BOP's layout, images, depth and masks read with OpenCV (imported lazily),
and 2D boxes as the toolkit computes them. Millimetres live only in the files: depth comes out in metres."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

IMAGE_DIRS = ("rgb", "gray")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TARGETS_BOP19 = "test_targets_bop19.json"
BOP19_MIN_VISIB = 0.1  # test_targets_bop19.json counts instances at least 10 % visible


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
