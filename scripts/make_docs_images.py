#!/usr/bin/env python3
"""Render one synthetic frame of the default objects into docs/: render_rgb.png, render_depth.png, render_mask.png.

    .venv/bin/python scripts/make_docs_images.py [--seed 3] [--out docs]

Depth is colour-mapped (turbo, near = red, far = blue, black = no depth); the mask image shows each
object's visible mask in its own colour and the rest of its full (unoccluded) mask darker.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vfm_pose_ros.core.catalogue import Catalogue  # noqa: E402
from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator  # noqa: E402
from vfm_pose_ros.paths import default_catalogue_dir  # noqa: E402

COLOURS = np.array([[230, 80, 60], [60, 170, 240], [250, 210, 50], [120, 220, 120], [200, 120, 230]], np.uint8)


def depth_image(depth: np.ndarray, masks) -> np.ndarray:
    """Turbo colours over the objects' depth range (+-10 cm); the table beyond saturates."""
    import cv2

    valid = depth > 0
    on_objects = depth[np.logical_or.reduce(masks)]
    lo, hi = on_objects.min() - 0.1, on_objects.max() + 0.1
    t = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    img = cv2.applyColorMap((255 * (1 - t)).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    img[~valid] = 0
    return img


def mask_image(masks_visib, masks_full, shape) -> np.ndarray:
    img = np.full((*shape, 3), 30, np.uint8)
    for i, (mv, mf) in enumerate(zip(masks_visib, masks_full)):
        c = COLOURS[i % len(COLOURS)]
        img[mf & ~mv] = (0.35 * c).astype(np.uint8)
        img[mv] = c
    return img


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    import cv2

    objects = sorted(Catalogue.from_dir(default_catalogue_dir()), key=lambda o: o.class_id)
    # a table scene, one distractor; no sensor noise so the PNG stays small
    cfg = SceneConfig(placement="table", distractors=1, noise_std=0.0, blur_prob=0.0, distance=(0.6, 0.8),
                      elevation_deg=(25.0, 40.0))
    fr = SceneGenerator(objects, cfg, seed=args.seed).frame(args.index)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "render_rgb.png": fr.rgb,
        "render_depth.png": depth_image(fr.depth, fr.masks_full),
        "render_mask.png": mask_image(fr.masks_visib, fr.masks_full, fr.depth.shape),
    }
    for name, img in files.items():
        path = out / name
        cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    for g in fr.gts:
        print(f"  {g.name}: t = {np.round(g.t, 3)} m, visible {g.visib_fract:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
