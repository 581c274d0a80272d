#!/usr/bin/env bash
# Install the Debian packages `make setup` needs, only those missing, and only when allowed to
# (root, or password-less sudo). Elsewhere it prints what to install and carries on.
#
#   libusb-1.0-0                    open3d does not import without it
#   libvulkan1 mesa-vulkan-drivers  open3d's OffscreenRenderer (renders on the CPU)
#   cmake, g++/make                 building interfaces/vision_msgs and interfaces/tf2_msgs
#   python3-dev, python3-venv       Debian's python3 only: headers for those builds, and `python3 -m venv`
#
# Usage: PYTHON=python3 scripts/setup_system.sh
set -euo pipefail

PYTHON="${PYTHON:-python3}"

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "setup_system: not a Debian/Ubuntu system; make sure libusb-1.0, a Vulkan loader + Mesa drivers," \
    "cmake, a C/C++ compiler and Python headers are installed"
  exit 0
fi

missing=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing+=("$1"); }

need_pkg libusb-1.0-0
need_pkg libvulkan1
need_pkg mesa-vulkan-drivers
command -v cmake >/dev/null || missing+=(cmake)
{ command -v c++ >/dev/null && command -v make >/dev/null; } || missing+=(g++ make)

python_path="$(command -v "$PYTHON" || true)"
if [[ -z "$python_path" ]]; then
  missing+=(python3 python3-venv python3-dev)
elif [[ "$(readlink -f "$python_path")" == /usr/bin/python3* ]]; then  # Debian's own Python
  "$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
  "$PYTHON" -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || missing+=(python3-dev)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ "$(id -u)" == 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo)
else
  echo "setup_system: WARNING: missing Debian packages: ${missing[*]}" >&2
  echo "setup_system: install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi

echo "setup_system: installing Debian packages: ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
