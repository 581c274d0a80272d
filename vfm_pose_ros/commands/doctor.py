"""Report what is installed and usable: ROS 2 (rclpy, rmw, messages), torch and CUDA, backbones, DDS profile.

Each line is OK, WARN (works, with a limitation) or MISSING, with details and a fix. The exit status is 1
only when a required piece (numpy, rclpy, vision_msgs, tf2_msgs) is missing or broken.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata

OK, WARN, MISSING = "OK", "WARN", "MISSING"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of text")
    parser.add_argument("--no-ros-init", action="store_true",
                        help="skip the real rclpy init/shutdown (no DDS participant is created)")


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "?"


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def _import(module: str):
    """Import a module, returning (module, None) or (None, error text)."""
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # any import-time failure (missing .so, libusb, ABI) means "not usable"
        return None, _error(exc)


def check_python() -> Check:
    return Check("python", OK, f"{platform.python_version()} ({sys.executable})")


def check_numpy() -> Check:
    np, err = _import("numpy")
    if np is None:
        return Check("numpy", MISSING, err, "make setup (pip install -r requirements/base.txt)", required=True)
    return Check("numpy", OK, np.__version__, required=True)


def check_rclpy(init: bool) -> list[Check]:
    rclpy, err = _import("rclpy")
    if rclpy is None:
        fix = ("make setup (ROS 2 wheels: requirements/ros.txt), or source a ROS 2 install "
               "(source /opt/ros/<distro>/setup.bash)")
        return [Check("rclpy", MISSING, err, fix, required=True),
                Check("rmw", MISSING, "needs rclpy", "see rclpy")]
    where = os.path.dirname(rclpy.__file__)
    distro = os.environ.get("ROS_DISTRO") or "from PyPI wheels"
    version = _version("ros-rclpy", "rclpy")
    from rclpy.utilities import get_rmw_implementation_identifier

    if not init:
        return [Check("rclpy", OK, f"{version} ({distro}; {where}); init not tried (--no-ros-init)", required=True),
                Check("rmw", OK, get_rmw_implementation_identifier())]
    try:
        context = rclpy.Context()
        rclpy.init(context=context)
        try:
            node = rclpy.create_node("vfm_pose_doctor", context=context)
            node.destroy_node()
        finally:
            rclpy.shutdown(context=context)
    except Exception as exc:
        return [Check("rclpy", MISSING, f"imports but init/shutdown failed: {_error(exc)}",
                      "check RMW_IMPLEMENTATION and the Fast DDS profile below", required=True),
                Check("rmw", MISSING, get_rmw_implementation_identifier(), "see rclpy")]
    rmw = get_rmw_implementation_identifier()
    rclpy_check = Check("rclpy", OK, f"{version} ({distro}; {where}); init, node, shutdown work", required=True)
    if rmw != "rmw_fastrtps_cpp":
        return [rclpy_check, Check("rmw", WARN, f"{rmw}: the package's Fast DDS profile does not apply",
                                   "export RMW_IMPLEMENTATION=rmw_fastrtps_cpp for lossless local image transport")]
    return [rclpy_check, Check("rmw", OK, rmw)]


def check_interface(pkg: str, message: str) -> Check:
    """A message package imports, its C typesupport loads, and its type hash is upstream ROS 2's."""
    from vfm_pose_ros.ros.env import UPSTREAM_TYPE_HASHES, installed_type_hash

    fix = (f"make setup (builds interfaces/{pkg} into the venv: scripts/build_interfaces.sh), or on a ROS 2 "
           f"install: sudo apt install ros-$ROS_DISTRO-{pkg.replace('_', '-')}")
    mod, err = _import(f"{pkg}.msg")
    if mod is None:
        return Check(pkg, MISSING, err, fix, required=True)
    try:
        cls = getattr(mod, message)
        cls.__class__.__import_type_support__()
    except Exception as exc:
        return Check(pkg, MISSING, f"imports but the typesupport does not load: {_error(exc)}", fix, required=True)
    where = os.path.dirname(importlib.import_module(pkg).__file__)
    type_name = f"{pkg}/msg/{message}"
    installed = installed_type_hash(type_name)
    if installed is None:
        return Check(pkg, WARN, f"{where}; type hash of {message} unknown (no {message}.json installed)",
                     "reinstall the package; a real ROS 2 peer may reject mismatched types", required=True)
    if installed != UPSTREAM_TYPE_HASHES[type_name]:
        return Check(pkg, WARN, f"{where}; {message} hash {installed} differs from upstream ROS 2",
                     f"rebuild: FORCE=1 scripts/build_interfaces.sh; peers will not match {type_name}", required=True)
    return Check(pkg, OK, f"{where}; {message} type hash matches upstream ROS 2", required=True)


def check_optional_ros(module: str, name: str, why: str, fix: str) -> Check:
    mod, err = _import(module)
    if mod is None:
        return Check(name, WARN, f"not installed ({why})", fix)
    return Check(name, OK, os.path.dirname(mod.__file__))


def check_torch() -> Check:
    torch, err = _import("torch")
    if torch is None:
        return Check("torch", MISSING, err,
                     "make setup (pip install -c requirements/constraints.txt -r requirements/ml.txt)")
    build = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "CPU build"
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("torch", OK, f"{torch.__version__} ({build}); CUDA available: {names}")
    fix = ("no NVIDIA GPU or driver is visible to this CUDA build (check nvidia-smi)" if torch.version.cuda
           else "for GPU inference install a CUDA build of torch (https://pytorch.org/get-started/locally/)")
    return Check("torch", WARN, f"{torch.__version__} ({build}); CUDA not available: models run on the CPU", fix)


def check_module(module: str, name: str, fix: str, dist: str | None = None, why: str = "") -> Check:
    mod, err = _import(module)
    if mod is None:
        return Check(name, MISSING, err + (f" ({why})" if why else ""), fix)
    version = getattr(mod, "__version__", None) or _version(dist or module)
    return Check(name, OK, str(version))


def check_open3d(fix: str) -> Check:
    """Open3D, and whether the depth stage can run it on one thread, which makes its poses reproducible."""
    check = check_module("open3d", "open3d", fix)
    if check.status != OK:
        return check
    if hasattr(importlib.import_module("open3d").utility, "set_max_threads"):
        return Check("open3d", OK, f"{check.detail}; the depth stage is deterministic (Open3D on one thread in it)")
    return Check("open3d", WARN, f"{check.detail} cannot limit its threads: the depth stage's sums change order run to "
                 "run, so a near-tie between ICP starts can give another pose for the same frame",
                 "pip install 'open3d>=0.20' for reproducible poses")


def check_dds_profile(user_set: bool) -> Check:
    path = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if not path:
        return Check("fastdds profile", WARN, "FASTDDS_DEFAULT_PROFILES_FILE unset: Fast DDS defaults lose most "
                     "sensor-data images between processes", "run from the repository or a colcon install "
                     "(config/fastdds.xml), or export FASTDDS_DEFAULT_PROFILES_FILE")
    origin = "set by you" if user_set else "package default"
    if not os.path.isfile(path):
        return Check("fastdds profile", WARN, f"{path} ({origin}) does not exist", "fix FASTDDS_DEFAULT_PROFILES_FILE")
    return Check("fastdds profile", OK, f"{path} ({origin}, exists)")


def check_discovery() -> Check:
    domain = os.environ.get("ROS_DOMAIN_ID", "0 (default)")
    scope = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET (default)")
    detail = f"ROS_DOMAIN_ID={domain}, ROS_AUTOMATIC_DISCOVERY_RANGE={scope}"
    if scope.startswith("LOCALHOST"):
        return Check("discovery", OK, detail + ": this host only")
    return Check("discovery", OK, detail + ": other hosts on the network can see these nodes")


def check_ament_index() -> Check:
    from vfm_pose_ros.ros.env import find_package_file, package_share_dir

    share = package_share_dir()
    if share is not None:
        return Check("ament index", OK, f"vfm_pose_ros share directory: {share}")
    try:
        config = find_package_file("config").parent
    except FileNotFoundError:
        config = "nowhere"
    return Check("ament index", WARN, f"vfm_pose_ros is not in the ament index (pip -e installs no data files); "
                 f"launch/config files come from {config}",
                 "for `ros2 launch vfm_pose_ros ...`: colcon build in a workspace and source install/setup.bash")


def run_checks(ros_init: bool = True) -> list[Check]:
    from vfm_pose_ros.ros.env import configure_ros_env

    user_profile = "FASTDDS_DEFAULT_PROFILES_FILE" in os.environ
    configure_ros_env()
    checks = [check_python(), check_numpy(), *check_rclpy(ros_init),
              check_interface("vision_msgs", "Detection3DArray"), check_interface("tf2_msgs", "TFMessage")]
    checks += [
        check_optional_ros("tf2_ros", "tf2_ros", "TF is published as tf2_msgs/TFMessage directly",
                           "optional; on a ROS 2 install: sudo apt install ros-$ROS_DISTRO-tf2-ros"),
        check_optional_ros("cv_bridge", "cv_bridge", "images are converted with numpy",
                           "optional; on a ROS 2 install: sudo apt install ros-$ROS_DISTRO-cv-bridge"),
        check_optional_ros("launch_ros", "launch_ros", "`vfm-pose launch` starts the graph without it",
                           "optional, for `ros2 launch`: sudo apt install ros-$ROS_DISTRO-launch-ros"),
    ]
    ml_fix = "make setup (pip install -c requirements/constraints.txt -r requirements/ml.txt)"
    base_fix = "make setup (pip install -r requirements/base.txt)"
    checks += [
        check_torch(),
        check_module("open_clip", "open_clip", ml_fix, dist="open_clip_torch"),
        check_module("timm", "timm", ml_fix),
        check_open3d(base_fix + "; Debian needs libusb-1.0-0 (and libvulkan1 mesa-vulkan-drivers for offscreen "
                     "rendering)"),
        check_module("pykdtree", "pykdtree", base_fix),
        check_module("cv2", "opencv", base_fix, dist="opencv-python-headless"),
        check_module("rosbags", "rosbags", base_fix),
        check_dds_profile(user_profile),
        check_discovery(),
        check_ament_index(),
    ]
    return checks


def run(args: argparse.Namespace) -> int:
    checks = run_checks(ros_init=not args.no_ros_init)
    broken = [c.name for c in checks if c.required and c.status == MISSING]
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "required_missing": broken}, indent=2))
        return 1 if broken else 0
    print("vfm-pose doctor: what this environment can run")
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"  {c.status:<8} {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            print(f"  {'':<8} {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, MISSING)}
    print(f"summary: {counts[OK]} OK, {counts[WARN]} WARN, {counts[MISSING]} MISSING; "
          + (f"required pieces missing: {', '.join(broken)}" if broken else "all required pieces are usable"))
    return 1 if broken else 0
