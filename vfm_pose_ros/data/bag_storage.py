"""rosbag2 storage below the package's bag layout: the typestore, CDR (de)serialisation, raw messages.

:func:`iter_messages` reads any rosbag2 (directory, .mcap or .db3) in log-time order through rosbags,
and falls back to :mod:`vfm_pose_ros.data.bag_salvage` for a bag rosbags cannot open (cut short, no
metadata.yaml). What the topics mean and how frames are assembled is :mod:`vfm_pose_ros.data.rosbag`.
"""
from __future__ import annotations

import functools
import os
import struct
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import bag_salvage

INTERFACE_PACKAGES = ("vision_msgs", "tf2_msgs")


class BagReadWarning(UserWarning):
    """A bag could be read only partly (truncated, corrupt, missing metadata)."""


# ----------------------------------------------------------------------------- typestore


def interface_msg_dir(package: str) -> Path:
    """The folder with ``package``'s ``.msg`` files: this repository's ``interfaces/``, else an installed share."""
    candidates = [Path(__file__).resolve().parents[2] / "interfaces" / package / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates += [Path(p) / "share" / package / "msg" for p in prefixes]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.msg")):
            return c
    raise FileNotFoundError(
        f"no .msg definitions for {package} (looked in {', '.join(str(c) for c in candidates)}); "
        "run from the source tree or install the package's interfaces"
    )


@functools.lru_cache(maxsize=1)
def typestore():
    """A rosbags typestore for ROS 2 Kilted (the distro of the ROS wheels) plus vision_msgs and tf2_msgs."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store_id = next(getattr(Stores, s) for s in ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE") if hasattr(Stores, s))
    store = get_typestore(store_id)
    types: dict = {}
    for package in INTERFACE_PACKAGES:
        for path in sorted(interface_msg_dir(package).glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def serialize(msg, msgtype: str) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(data, msgtype: str):
    return typestore().deserialize_cdr(data, msgtype)


# ----------------------------------------------------------------------------- raw messages


@dataclass
class BagMessage:
    """One raw message: CDR bytes as recorded (publishable as is) plus where it came from."""

    topic: str
    msgtype: str
    timestamp: int  # log time, ns
    data: bytes

    def decode(self):
        return deserialize(self.data, self.msgtype)


def storage_files(path: Path) -> list[Path]:
    return sorted([*path.glob("*.mcap"), *path.glob("*.db3")])


def _sources(path: Path, problem) -> list[Path]:
    """Storage units to read in order: the bag directory via rosbags, or its files one by one."""
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = storage_files(path)
        if not files:
            raise FileNotFoundError(f"{path} is neither a rosbag2 (no metadata.yaml) nor holds .mcap/.db3 files")
        problem(f"{path}: no metadata.yaml (recording interrupted?); reading {len(files)} storage file(s) directly")
        return files
    return [path]


def _warn(text: str) -> None:
    warnings.warn(text, BagReadWarning, stacklevel=4)


def iter_messages(path, topics: Iterable[str] | None = None, on_problem=None) -> Iterator[BagMessage]:
    """All messages of a bag (directory, .mcap or .db3) in log-time order, optionally only some topics.

    Reads up to the first unreadable record, then stops; what went wrong goes to
    ``on_problem(text)`` (default: a :class:`BagReadWarning`).
    """
    from rosbags.rosbag2 import Reader, ReaderError

    problem = on_problem or _warn
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag not found: {path}")
    wanted = set(topics) if topics is not None else None
    errors = bag_salvage.read_errors()
    count = 0
    for src in _sources(path, problem):
        try:
            reader = Reader(src)
            reader.open()
        except ReaderError as exc:
            files = [src] if src.is_file() else storage_files(src)
            if not files:
                raise ReaderError(f"cannot open bag {src}: {exc}") from exc
            problem(f"{src}: {exc} (file truncated or recording interrupted?); salvaging what is readable")
            unpack = bag_salvage.message_decompressor(path)
            for file in files:
                for topic, msgtype, log_time, data in bag_salvage.salvage(file, count, problem):
                    if wanted is None or topic in wanted:
                        count += 1
                        yield BagMessage(topic, msgtype, log_time, unpack(data) if unpack is not None else data)
            continue
        try:
            conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
            if not conns:
                continue
            it = reader.messages(connections=conns)
            while True:
                try:
                    conn, ts, data = next(it)
                except StopIteration:
                    break
                except errors as exc:
                    problem(f"{src}: read {count} messages, then stopped: {type(exc).__name__}: {exc}")
                    return
                count += 1
                yield BagMessage(conn.topic, conn.msgtype, ts, bytes(data))
        finally:
            reader.close()


def header_stamp_from_cdr(data: bytes) -> int:
    """Stamp (ns) of a CDR message whose first field is ``std_msgs/Header``, without decoding the rest.

    Hand-written shortcut: the stamp is the first 8 bytes after the 4-byte encapsulation
    header (int32 sec, uint32 nanosec; byte order from the encapsulation id).
    """
    if len(data) < 12:
        raise ValueError("message too short for a header")
    fmt = "<iI" if data[1] & 1 else ">iI"
    sec, nsec = struct.unpack_from(fmt, data, 4)
    return sec * 1_000_000_000 + nsec
