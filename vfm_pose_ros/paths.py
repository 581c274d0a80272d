"""Where the package's own files lie: the source tree (a clone, an editable install) or the ament share directory.

Every layer needs these (the models find their checkpoints, the commands the catalogue, the nodes their
configuration), so they live outside ``core`` (which imports nothing of ROS) and outside ``ros`` (which the
models must not import). The ament index is consulted lazily and only when installed.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_NAME = "vfm_pose_ros"

# Source tree (or editable install) root: vfm_pose_ros/paths.py -> parents[1].
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_share_dir() -> Path | None:
    """The package's ament share directory (colcon or apt install), or None when the ament index
    does not know the package (``pip install -e .`` installs no data_files)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE_NAME))
    except (PackageNotFoundError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return None


def find_package_file(relpath: str | os.PathLike) -> Path:
    """Locate a data file of the package (``launch/pose.launch.py``, ``config/fastdds.xml``, ...).

    Looks in the source tree first (running from a clone or an editable install), then in the ament
    share directory (colcon or apt install). Raises FileNotFoundError naming every place searched.
    """
    rel = Path(relpath)
    candidates = [SOURCE_ROOT / rel]
    share = package_share_dir()
    if share is not None:
        candidates.append(share / rel)
    for path in candidates:
        if path.exists():
            return path
    searched = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"{rel} not found (searched: {searched}). Run from a clone of the repository, or build and "
        f"source the package with colcon (`colcon build && source install/setup.bash`)."
    )


def default_catalogue_dir() -> Path:
    """config/objects of this package: the source tree, or the installed share directory."""
    try:
        return find_package_file("config/objects")
    except FileNotFoundError:  # reported by whoever reads it, with the path it tried
        return SOURCE_ROOT / "config" / "objects"
