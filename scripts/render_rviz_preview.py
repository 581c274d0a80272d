"""Render what RViz shows with config/pose.rviz, without RViz: the pose node's debug image and its MarkerArray.

RViz needs a display, which these machines lack, so the README's screenshot is drawn here with
matplotlib from the very messages the pose node publishes (vfm_pose_ros.ros.convert.pose_markers:
LINE_LIST boxes, axes, TEXT labels; draw_debug_image for the image panel), in camera_link
(the Fixed Frame of config/pose.rviz: x forward, y left, z up).

    python scripts/render_rviz_preview.py --dataset DS [--checkpoint CKPT] --out docs/rviz_preview.png

Without --checkpoint the ground-truth poses stand in for detections (to show the layout).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def marker_segments(marker) -> tuple[np.ndarray, list]:
    """LINE_LIST points of a Marker in its header frame: (N, 2, 3) segments and per-segment colours."""
    from vfm_pose_ros.core.transforms import transform_points
    from vfm_pose_ros.ros.convert import msg_to_pose

    R, t = msg_to_pose(marker.pose)
    pts = transform_points(R, t, np.array([[p.x, p.y, p.z] for p in marker.points]))
    if marker.colors:
        cols = [(c.r, c.g, c.b) for c in marker.colors[::2]]
    else:
        cols = [(marker.color.r, marker.color.g, marker.color.b)] * (len(pts) // 2)
    return pts.reshape(-1, 2, 3), cols


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, type=Path, help="BOP dataset (e.g. from vfm-pose synth)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--index", type=int, default=0, help="which frame")
    ap.add_argument("--checkpoint", default=None, help="run this estimator (default: draw the ground truth)")
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.core.types import ObjectPose
    from vfm_pose_ros.data.bop import BopDataset
    from vfm_pose_ros.data.rosbag import OPTICAL_ROTATION_XYZW
    from vfm_pose_ros.paths import default_catalogue_dir
    from vfm_pose_ros.pipeline import CameraFrame, FramePipeline, PipelineSettings
    from vfm_pose_ros.ros import convert

    catalogue = Catalogue.from_dir(default_catalogue_dir())
    frame = list(BopDataset(args.dataset, split=args.split, catalogue=catalogue))[args.index]
    if args.checkpoint:
        from vfm_pose_ros.models import load_estimator

        est = load_estimator(args.checkpoint, device="cpu")
        pipeline = FramePipeline(est, catalogue, PipelineSettings(prompt=args.prompt or ""))
        poses = pipeline.process(CameraFrame.of(frame)).poses
        source = f"estimator {Path(args.checkpoint).name}"
    else:
        poses = [ObjectPose(g.name, g.R, g.t, score=1.0) for g in frame.gts]
        source = "ground truth as detections"
    header = convert.make_header(1_000_000_000, "camera_color_optical_frame")
    markers = convert.pose_markers(poses, catalogue, header)
    debug = convert.draw_debug_image(frame.rgb, frame.K, poses, catalogue)

    # optical frame -> camera_link (the bag's /tf_static; RViz's Fixed Frame in config/pose.rviz)
    from vfm_pose_ros.core.transforms import quat_to_matrix

    R_link = quat_to_matrix(OPTICAL_ROTATION_XYZW)
    fig = plt.figure(figsize=(13, 5.2), facecolor=(0.19, 0.19, 0.19))
    ax_img = fig.add_subplot(1, 2, 1)
    ax_img.imshow(debug)
    ax_img.set_title("~/debug_image", color="w")
    ax_img.axis("off")
    ax = fig.add_subplot(1, 2, 2, projection="3d", facecolor=(0.19, 0.19, 0.19))
    for m in markers.markers[1:]:
        if m.type == m.LINE_LIST:
            segs, cols = marker_segments(m)
            for (a, b), c in zip(segs @ R_link.T, cols):
                ax.plot(*zip(a, b), color=c, lw=1.5 if "boxes" in m.ns else 2.5)
        elif m.type == m.TEXT_VIEW_FACING:
            p = R_link @ np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
            ax.text(*p, m.text, color="w", fontsize=8)
    ax.plot([0, 0.1], [0, 0], [0, 0], color="r")  # camera_link axes at the origin
    ax.plot([0, 0], [0, 0.1], [0, 0], color="g")
    ax.plot([0, 0], [0, 0], [0, 0.1], color="b")
    ax.text(0, 0, 0.02, "camera_link", color="w", fontsize=8)
    ax.set_xlabel("x (m)", color="w")
    ax.set_ylabel("y (m)", color="w")
    ax.set_zlabel("z (m)", color="w")
    ax.tick_params(colors="w")
    ax.view_init(elev=25, azim=200)
    pts = np.vstack([R_link @ p.t for p in poses] + [np.zeros(3)])
    lo, hi = pts.min(0) - 0.15, pts.max(0) + 0.15
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(hi - lo)  # metres look like metres, as in RViz
    ax.set_title("~/markers + TF in camera_link", color="w")
    fig.suptitle(f"config/pose.rviz content, drawn with matplotlib from the node's messages ({source})",
                 color="w", fontsize=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, facecolor=fig.get_facecolor(), bbox_inches="tight")
    print(f"wrote {args.out} ({len(poses)} poses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
