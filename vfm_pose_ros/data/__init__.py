"""Datasets and recordings: BOP-format datasets and results (``bop``), scoring a BOP dataset (``evaluation``).

Modules are imported on demand (``from vfm_pose_ros.data.bop import BopDataset``) so that importing
the package pulls in neither OpenCV nor trimesh.
"""
