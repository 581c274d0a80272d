#!/usr/bin/env bash
# Build and install the project's interface packages (interfaces/vision_msgs, interfaces/tf2_msgs)
# into a Python virtual environment, but only where the messages are not importable already.
#
# Why: ROS 2 from PyPI wheels ships no vision_msgs or tf2_msgs; a real ROS 2 install has both,
# and then this script does nothing. Each package is installed once, into the venv prefix
# (never also into a colcon install that the same process sees: the wheels' LD_LIBRARY_PATH
# order is not stable, so two copies of a typesupport library may shadow each other).
#
# Usage: scripts/build_interfaces.sh            (venv at ./.venv)
#        VENV=/path/to/venv scripts/build_interfaces.sh
#        FORCE=1 scripts/build_interfaces.sh     (rebuild even when importable)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
VENV="$(cd "$VENV" 2>/dev/null && pwd)" || { echo "build_interfaces: no venv at ${VENV}; run 'make setup' first" >&2; exit 1; }
PY="$VENV/bin/python"
FORCE="${FORCE:-0}"

# package -> a message whose Python typesupport proves the package is usable
declare -A PROBE=([vision_msgs]=Detection3DArray [tf2_msgs]=TFMessage)

usable() {  # usable PKG: the message class imports and its C typesupport loads, in a fresh process
  "$PY" -c "from $1.msg import ${PROBE[$1]} as M; M.__class__.__import_type_support__()" >/dev/null 2>&1
}

verify_publish() {  # a fresh process creates a node and publishes both messages (rmw typesupport loads)
  ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="$(( $$ % 100 + 1 ))" "$PY" - <<'EOF'
import rclpy
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3D, Detection3DArray

rclpy.init()
try:
    node = rclpy.create_node("vfm_build_interfaces_check")
    det = Detection3DArray(detections=[Detection3D(id="probe")])
    node.create_publisher(Detection3DArray, "probe_detections", 1).publish(det)
    node.create_publisher(TFMessage, "probe_tf", 1).publish(TFMessage())
    node.destroy_node()
finally:
    rclpy.shutdown()
print("build_interfaces: verified: vision_msgs/Detection3DArray and tf2_msgs/TFMessage publish from a fresh process")
EOF
}

need_build=()
for pkg in vision_msgs tf2_msgs; do
  if [[ "$FORCE" != "1" ]] && usable "$pkg"; then
    echo "build_interfaces: $pkg already importable ($("$PY" -c "import $pkg, os; print(os.path.dirname($pkg.__file__))" 2>/dev/null)); skipping"
  else
    need_build+=("$pkg")
  fi
done
if [[ ${#need_build[@]} -eq 0 ]]; then
  exit 0
fi

for tool in cmake cc c++ make; do
  command -v "$tool" >/dev/null || {
    echo "build_interfaces: '$tool' not found; install it (Debian: apt-get install cmake build-essential) or run 'make setup' as root" >&2
    exit 1
  }
done
"$PY" -c "import rosidl_generator_py, ament_package, catkin_pkg" 2>/dev/null || {
  echo "build_interfaces: the rosidl build tools are missing from $VENV; run: $PY -m pip install -r requirements/ros.txt" >&2
  exit 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vfm_interfaces.XXXXXX")"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
for pkg in "${need_build[@]}"; do
  start=$SECONDS
  log="$WORK/$pkg.log"
  echo "build_interfaces: building $pkg into $VENV (log: $log)"
  if ! {
    cmake -S "$REPO/interfaces/$pkg" -B "$WORK/$pkg" \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF &&
      cmake --build "$WORK/$pkg" -j "$(nproc)" &&
      cmake --install "$WORK/$pkg"
  } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build_interfaces: building $pkg failed; full log in $log" >&2
    exit 1
  fi
  if ! usable "$pkg"; then
    echo "build_interfaces: $pkg was installed into $VENV but '${PROBE[$pkg]}' does not import in a fresh $PY" >&2
    exit 1
  fi
  echo "build_interfaces: $pkg built and installed in $((SECONDS - start)) s"
done
verify_publish
rm -rf "$WORK"
