"""Training data for the DINOv2 network: crops and whole letterboxed frames with segmentation labels and
vote-vector targets (keypoints projected with the symmetry-canonical pose) or model-coordinate targets (the
mesh rasterised in the symmetry-canonical pose), and their augmentation."""
from __future__ import annotations

import functools

import numpy as np
import torch

from ...core.affine import apply_affine, crop_affine, letterbox_affine, out_affine, out_grid
from ...core.catalogue import Catalogue, ObjectModel
from ...core.symmetry import canonical_pose
from ...core.transforms import project, transform_points
from ..sampling import split_key
from .config import OUT_STRIDE, merged_config
from .network import object_keypoints, to_tensor


def silhouette(obj: ObjectModel, R, t, K, shape) -> np.ndarray:
    """Full (unoccluded) silhouette of a meshed object by filling its projected triangles (cv2)."""
    import cv2

    if obj.faces is None or not len(obj.faces):
        raise ValueError(f"object {obj.name!r} has no faces: the dataset must provide visible masks")
    uv = project(K, transform_points(R, t, obj.vertices))
    tris = np.round(uv[obj.faces] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, list(tris), 1, lineType=cv2.LINE_8, shift=2)
    return mask.astype(bool)


def _frame_access(dataset):
    """(n, get(i)) for a BopDataset (keys() + frame()), any indexable dataset, or an iterable kept in memory."""
    if hasattr(dataset, "keys") and hasattr(dataset, "frame"):
        keys = dataset.keys()
        return len(keys), (lambda i: dataset.frame(*keys[i]))
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return len(dataset), dataset.__getitem__
    frames = list(dataset)
    return len(frames), frames.__getitem__


def _augment(img: np.ndarray, label: np.ndarray, rng: np.random.Generator, aug: dict, out_stride: int):
    """Colour jitter, blur, noise and random occluders (in place on copies); occluded cells become background."""
    import cv2

    img = img.copy()
    label = label.copy()
    S = img.shape[0]
    if rng.random() < aug.get("occluders", 0.0):
        for _ in range(int(rng.integers(1, 3))):
            occ = np.zeros((S, S), np.uint8)
            w, h = (rng.uniform(0.15, 0.45, 2) * S).astype(int)
            cx, cy = rng.uniform(0, S, 2).astype(int)
            if rng.random() < 0.5:
                cv2.rectangle(occ, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), 1, -1)
            else:
                cv2.ellipse(occ, (cx, cy), (max(w // 2, 1), max(h // 2, 1)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
            m = occ.astype(bool)
            if rng.random() < 0.5:
                img[m] = rng.integers(0, 256, 3, dtype=np.uint8)
            else:
                img[m] = rng.integers(0, 256, (int(m.sum()), 3), dtype=np.uint8)
            small = cv2.resize(occ, (label.shape[1], label.shape[0]), interpolation=cv2.INTER_AREA)
            label[small > 0] = 0
    f = img.astype(np.float32)
    if rng.random() < aug.get("color", 0.0):
        f *= rng.uniform(0.7, 1.3)  # brightness
        mean = f.mean()
        f = (f - mean) * rng.uniform(0.7, 1.3) + mean  # contrast
        gray = f.mean(axis=2, keepdims=True)
        f = (f - gray) * rng.uniform(0.6, 1.4) + gray  # saturation
        f *= rng.uniform(0.9, 1.1, 3)  # white balance / hue drift
    if rng.random() < aug.get("blur", 0.0):
        f = cv2.GaussianBlur(f, (0, 0), float(rng.uniform(0.3, 1.5)))
    if rng.random() < aug.get("noise", 0.0):
        f += rng.normal(0.0, rng.uniform(1.0, 8.0), f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8), label


class KeypointDataset(torch.utils.data.Dataset):
    """Crops (and whole letterboxed frames) with segmentation labels and vote-vector targets.

    Each frame gives ``samples_per_frame`` samples; a training sample is a whole frame with
    probability ``full_frame_prob`` (teaches stage 1), otherwise a jittered crop around a random
    visible object. Evaluation samples (train=False) are deterministic crops, no augmentation.
    """

    def __init__(self, dataset, catalogue: Catalogue, config: dict, train: bool):
        self.cfg = merged_config(config)
        self.names = list(self.cfg.get("objects") or catalogue.names)
        self.catalogue = catalogue
        self.train = train
        self.n_frames, self._get = _frame_access(dataset)
        self.spf = max(1, len(self.names))
        self.keypoints = {n: object_keypoints(catalogue[n], self.cfg["keypoints"]) for n in self.names}
        self.size = int(self.cfg["img_size"])
        self.coords = self.cfg["representation"] == "coords"

    def __len__(self) -> int:
        return self.n_frames * self.spf

    def __getitem__(self, key) -> dict:
        """``key``: a SampleKey from the training loop's sampler (augmentation drawn from (seed, epoch, index)),
        or a plain index (training: fresh randomness; evaluation: fixed)."""
        import cv2

        idx, rng = split_key(key)
        if rng is None:
            rng = np.random.default_rng(None if self.train else [idx, 12345])
        sf = self._get(idx // self.spf)
        rgb, K = sf.rgb, np.asarray(sf.K, dtype=float)
        H, W = rgb.shape[:2]
        gts = [g for g in sf.gts if g.name in self.keypoints]
        label_full = np.zeros((H, W), np.uint8)
        for g in gts:
            m = g.mask if g.mask is not None else silhouette(self.catalogue[g.name], g.R, g.t, K, (H, W))
            label_full[np.asarray(m, bool)] = self.names.index(g.name) + 1
        visible = [g for g in gts if g.visib_fract >= self.cfg["min_visib_fract"]
                   and (label_full == self.names.index(g.name) + 1).any()]
        S = self.size
        full = not visible or (self.train and rng.random() < self.cfg["full_frame_prob"])
        if full:
            A = letterbox_affine(H, W, S)
            if self.train:  # mild scale/shift jitter of the whole frame
                s = rng.uniform(0.85, 1.15)
                A = np.array([[s, 0, 0], [0, s, 0]]) @ np.vstack([A, [0, 0, 1]])
                A[:, 2] += rng.uniform(-0.08, 0.08, 2) * S + (1 - s) * (S - 1) / 2
        else:
            g = visible[(idx % self.spf) % len(visible)] if not self.train else visible[rng.integers(len(visible))]
            ys, xs = np.nonzero(label_full == self.names.index(g.name) + 1)
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            side = max(x1 - x0, y1 - y0) + 1.0
            centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
            if self.train:
                lo, hi = self.cfg["train_margin_range"]
                margin = rng.uniform(lo, hi)
                centre = centre + rng.uniform(-1, 1, 2) * self.cfg["train_shift"] * side
            else:
                margin = self.cfg["crop_margin"]
            A = crop_affine(centre, side * margin, S)
        img = cv2.warpAffine(rgb, A, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        Ao = out_affine(A, OUT_STRIDE)
        n = S // OUT_STRIDE
        label = cv2.warpAffine(label_full, Ao, (n, n), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        if self.train:
            img, label = _augment(img, label, rng, self.cfg["aug"], OUT_STRIDE)
        sample = {
            "image": to_tensor(img),
            "label": torch.from_numpy(label.astype(np.int64)),
            "vec_weight": torch.tensor(0.0 if full else 1.0),
        }
        if self.coords:
            coord, valid = coord_targets(gts, K, Ao, n, self.names, self.catalogue, surface_renderer(W, H))
            sample["coord"], sample["coord_valid"] = torch.from_numpy(coord), torch.from_numpy(valid)
        else:
            vec = vote_targets(gts, K, A, self.names, self.keypoints, self.catalogue, S)
            sample["vec"] = torch.from_numpy(vec.reshape(-1, n, n))
        return sample


def vote_targets(gts, K, A, names, keypoints: dict, catalogue: Catalogue, size: int) -> np.ndarray:
    """Unit vectors (C, Kp, 2, n, n) from each head-output cell to each keypoint of each object in ``gts``.

    The keypoints are projected with the symmetry-canonical pose, then mapped into the crop by ``A``.
    """
    grid = out_grid(size, OUT_STRIDE)
    n = grid.shape[0]
    Kp = len(next(iter(keypoints.values())))
    vec = np.zeros((len(names), Kp, 2, n, n), np.float32)
    for g in gts:
        if g.name not in keypoints:
            continue
        R, t = canonical_pose(catalogue[g.name], g.R, g.t)
        kp = apply_affine(A, project(K, transform_points(R, t, keypoints[g.name])))  # (Kp, 2) crop pixels
        d = kp[:, None, None, :] - grid[None]  # (Kp, n, n, 2)
        d /= np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-6)
        vec[names.index(g.name)] = d.transpose(0, 3, 1, 2)
    return vec


@functools.lru_cache(maxsize=4)
def surface_renderer(width: int, height: int):
    """The rasteriser of the coordinate targets for one image size, one per process (it caches its rays per size
    and meshes per object); the camera matrix is passed per frame."""
    from ...data.render import Renderer

    return Renderer(width, height, K=np.eye(3))


def coord_targets(gts, K, Ao, n: int, names, catalogue: Catalogue, renderer) -> tuple[np.ndarray, np.ndarray]:
    """Model coordinates (C, 3, n, n) in metres of the surface seen at each head-output cell, and their
    validity (C, n, n) bool, for each object in ``gts``.

    Each object's mesh is rasterised (z-buffer, data.render.Renderer.surface_points) in its
    symmetry-canonical pose at the frame's full resolution; instances of one object share its image (the
    nearer surface wins). The image is then sampled per cell like the label: warped by the output affine
    ``Ao`` (image -> output grid) with INTER_NEAREST. Occlusion by other objects is the label's business
    (the loss only counts cells labelled with the object).
    """
    import cv2

    H, W = renderer.height, renderer.width
    coord = np.zeros((len(names), 3, n, n), np.float32)
    valid = np.zeros((len(names), n, n), bool)
    images: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # object index -> (H*W x 3 points, H*W depth)
    for g in gts:
        if g.name not in names:
            continue
        obj = catalogue[g.name]
        R, t = canonical_pose(obj, g.R, g.t)
        found = renderer.surface_points(obj, R, t, K)
        if found is None:
            continue
        pix, pts = found
        ci = names.index(g.name)
        xyz, depth = images.setdefault(ci, (np.zeros((H * W, 3), np.float32), np.full(H * W, np.inf)))
        z = transform_points(R, t, pts)[:, 2]
        nearer = z < depth[pix]
        depth[pix[nearer]] = z[nearer]
        xyz[pix[nearer]] = pts[nearer]
    for ci, (xyz, depth) in images.items():
        coord[ci] = cv2.warpAffine(xyz.reshape(H, W, 3), Ao, (n, n), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT).transpose(2, 0, 1)
        seen = np.isfinite(depth).reshape(H, W).astype(np.uint8)
        valid[ci] = cv2.warpAffine(seen, Ao, (n, n), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT) > 0
    return coord, valid


def make_dataset(dataset, catalogue: Catalogue, config: dict, train: bool) -> KeypointDataset:
    return KeypointDataset(dataset, catalogue, config, train)
