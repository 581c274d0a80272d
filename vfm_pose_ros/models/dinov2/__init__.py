"""DINOv2 backend: dense ViT patch features, a PVNet-style keypoint head, PnP-RANSAC and ICP.

Pipeline:

1. *Detection* (stage 1): the full image, letterboxed to ``det_img_size``, goes through the
   backbone and head; each connected component of an object's segmentation (at least
   ``min_det_cells`` cells and ``min_instance_frac`` of the object's largest component) is one
   instance with its own 2D box, so several copies of one object are posed separately. External
   boxes (``Frame.boxes_2d``: name -> one box or an Nx4 array of boxes) skip this stage.
2. *Keypoints* (stage 2): a square crop around each box (side ``crop_margin`` x the box's
   longer side), all crops of a batch of frames in one backbone batch. The head predicts, at
   stride 4, the object mask and for every keypoint a unit vector pointing from each object
   pixel towards the keypoint's projection (PVNet, Peng et al. 2019). RANSAC voting
   (vectorised torch) intersects pairs of vectors, keeps the hypothesis most pixels agree
   with and refines it by least squares over its inliers; the inlier fraction is the
   keypoint's confidence.
3. *Pose*: confidence-weighted PnP-RANSAC (vfm_pose_ros.core.pnp) on the 2D-3D keypoints,
   then, with depth, ICP of the model against the masked depth cloud (vfm_pose_ros.core.icp:
   visible-centroid alignment, multi-start, point-to-plane). Instances of one object are
   numbered by score (``ObjectPose.instance``); one whose centre lies within ``instance_nms``
   diameters of a better one (an object split into two components) is dropped.

Modules: ``config`` (defaults, typed inference settings), ``network`` (PoseNet), ``data`` (training samples and
augmentation), ``voting`` (RANSAC voting), ``estimator`` (the stages above), ``oracle`` (perfect network
outputs from ground truth, for tests and benchmarks).

Tracking mode (:meth:`Estimator.track`): ICP warm-started from the previous poses against the new
depth image (vfm_pose_ros.core.tracking.warm_start_icp), skipping both network stages.
:class:`OracleEstimator` replaces the network by perfect outputs made from ground truth: an upper
bound that isolates the geometric stages (voting, PnP, ICP, tracking) in tests and benchmarks.

Network: a timm DINOv2 ViT (``vit_base_patch14_dinov2`` by default; small/large/giant and
``_reg4`` variants by name; optional intermediate-layer features) plus a *detail branch*: a
three-layer conv stem (stride 4) alongside the patch embedding whose features are fused with
the upsampled patch features in the head. A ViT trained from scratch learns slowly on a CPU
while a CNN learns about twice as fast per second; the branch gives the head
local, high-resolution evidence from the first step and costs
little (about 25 MMAC at 112 px), and with a frozen pretrained backbone it is the trainable
part that sharpens the patch-level (stride 14) localisation.

Keypoints: ``config["keypoints"]`` is 'box' (8 box corners + centre), 'fps:N' (N
farthest-point surface points + centre) or 'catalogue' (each object's own spec). On-surface
keypoints are predicted far better than box corners that lie off the object, so the shipped configs use 'fps:8'.

Representation (``config["representation"]``): "votes" (above, the default) or "coords": the head
regresses, per object and cell, the model coordinates of the surface seen there (CDPN / GDR-Net / NOCS),
normalised by the object's bounding box; targets come from the mesh rasterised in the canonical pose
(data.coord_targets). Inference then solves PnP-RANSAC on all the object's mask cells (cell centre in the
image, predicted coordinates), draws the keypoints with the PnP pose and scores with the inlier fraction.

Symmetric objects: a keypoint on a can is ambiguous under rotation about its axis, so
training targets use a *canonical* pose (core.symmetry.canonical_pose): the symmetric equivalent
that turns a fixed object direction towards the camera. Predictions are then canonical
poses, which ADD-S and MSSD score correctly.
"""
from __future__ import annotations

from .config import DEFAULT_CONFIG, OUT_STRIDE, PATCH, SMALL_CONFIG, InferenceConfig, merged_config
from .data import KeypointDataset, coord_targets, make_dataset, vote_targets
from .estimator import CropJob, Estimator
from .network import PoseNet, build_net, object_keypoints
from .oracle import OracleEstimator
from .voting import ransac_vote

__all__ = ["DEFAULT_CONFIG", "OUT_STRIDE", "PATCH", "SMALL_CONFIG", "CropJob", "Estimator", "InferenceConfig",
           "KeypointDataset", "OracleEstimator", "PoseNet", "build_net", "coord_targets", "make_dataset",
           "merged_config", "object_keypoints", "ransac_vote", "vote_targets"]
