"""vfm_pose_ros: 6D object pose from a camera stream with vision foundation models.

Conventions used everywhere in this package (one place, stated once):

* Units: metres inside the package. Millimetres appear only where BOP files
  (meshes, scene_gt.json, results CSV) and reported metrics use them; the
  conversion happens in ``vfm_pose_ros.data.bop`` and ``vfm_pose_ros.core.metrics``.
* Quaternions: ``(x, y, z, w)``, w last, as ROS messages and scipy use, so the
  ROS edge needs no reordering.
* Poses: ``R`` (3x3) and ``t`` (3,) map object coordinates into the camera
  optical frame (x right, y down, z forward): ``p_cam = R @ p_obj + t``.
"""

__version__ = "0.1.0"
