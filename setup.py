"""ament_python packaging for vfm_pose_ros (colcon build, or `pip install -e .` for development).

`pip install -e .` installs no data_files: code finds launch/config files through
vfm_pose_ros.ros.env.find_package_file, which looks in the source tree first.
"""
import os
import re
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vfm_pose_ros"
HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = re.search(r"<version>([^<]+)</version>", open(os.path.join(HERE, "package.xml")).read()).group(1)
SHARE = os.path.join("share", PACKAGE)


def files(pattern):
    """Files (not directories) matching a glob relative to the package root, sorted for stable installs."""
    paths = glob(pattern, recursive=True)
    return sorted(p for p in paths if os.path.isfile(p) and not os.path.basename(p).startswith("."))  # no .gitkeep


def tree(root):
    """data_files entries installing every file under `root` into share/<package>/<same relative dir>."""
    entries = {}
    for path in files(os.path.join(root, "**", "*")):
        entries.setdefault(os.path.join(SHARE, os.path.dirname(path)), []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [os.path.join("resource", PACKAGE)]),
        (SHARE, ["package.xml"]),
        (os.path.join(SHARE, "launch"), files("launch/*.py")),
        *tree("config"),  # *.yaml, fastdds.xml, *.rviz, objects/ (yaml + meshes), train/
        (os.path.join(SHARE, "models"), files("models/*")),
    ],
    install_requires=["setuptools"],
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="vfm_pose_ros maintainers",
    maintainer_email="vfm-pose-ros@example.com",
    description="6D object pose with vision foundation models (CLIP, DINOv2) for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vfm-pose = vfm_pose_ros.cli:main",
            "pose_node = vfm_pose_ros.ros.start:pose_node",
            "evaluator_node = vfm_pose_ros.ros.start:evaluator_node",
            "bag_player = vfm_pose_ros.ros.start:bag_player",
        ],
    },
)
