"""Reading what is left of a damaged rosbag2 storage file: MCAP without its footer, SQLite cut short.

rosbags refuses both (it has no recovery mode, sqlite3 no recovery API), so a crashed recording or a
truncated copy would yield nothing; these readers scan record by record and stop at the first record that
is incomplete. They yield raw ``(topic, msgtype, log_time_ns, cdr_bytes)`` tuples in file order and
finally report how far they got through ``problem(text)``; :func:`vfm_pose_ros.data.rosbag.iter_messages`
calls them when rosbags cannot open a bag.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

RawMessage = tuple[str, str, int, bytes]  # topic, msgtype, log time (ns), CDR bytes

MCAP_MAGIC = b"\x89MCAP0\r\n"
RECORD_HEADER = 9  # opcode u8, length u64
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x03, 0x04, 0x05, 0x06
OPS_AFTER_DATA = (0x02, 0x0E, 0x0F)  # footer, data end, summary offset: the data section is over


def read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged bag raises while being read (rosbags, struct, sqlite3, apsw where installed)."""
    import sqlite3

    from rosbags.rosbag2 import ReaderError

    errs: list[type[BaseException]] = [ReaderError, OSError, EOFError, struct.error, ValueError, IndexError,
                                       sqlite3.DatabaseError]
    try:
        import apsw

        errs.append(apsw.Error)
    except ImportError:
        pass
    return tuple(errs)


class _Cut(Exception):
    """The record sequence ends inside a record; the message says where."""


class _McapScanner:
    """Walks MCAP records, remembering schemas and channels, and yields the messages it reaches."""

    def __init__(self):
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}
        self.end = "the end of the file"  # where the scan ended when it ended without a cut

    def messages(self, buf, nested: bool = False) -> Iterator[RawMessage]:
        """Messages of a record sequence (the file after its magic, or a chunk's records); _Cut at a cut."""
        pos, end = 0, len(buf)
        while pos < end:
            if pos + RECORD_HEADER > end:
                raise _Cut("an incomplete record header")
            op, length = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
            body = buf[pos + RECORD_HEADER: pos + RECORD_HEADER + length]
            if op == OP_CHUNK and not nested:
                yield from self._chunk(body, end)
            elif pos + RECORD_HEADER + length > end:
                raise _Cut(f"an incomplete record at byte {pos}" + (" of a chunk" if nested else ""))
            elif op in OPS_AFTER_DATA and not nested:
                self.end = "the end of the data section (the summary is damaged)"
                return
            else:
                message = self._record(op, body)
                if message is not None:
                    yield message
            pos += RECORD_HEADER + length

    def _chunk(self, body, end: int) -> Iterator[RawMessage]:
        """A chunk's messages; an uncompressed chunk cut short still yields the messages before the cut."""
        _start, _stop, uncompressed_size, _crc = struct.unpack_from("<QQQI", body, 0)
        compression, off = _string(body, 28)
        size = struct.unpack_from("<Q", body, off)[0]
        payload = body[off + 8: off + 8 + size]
        if compression and len(payload) == size:
            from rosbags.rosbag2.storage_mcap import decompress

            payload = decompress(bytes(payload), compression, uncompressed_size, 0)
        elif compression:
            raise _Cut(f"a {compression}-compressed chunk cut at byte {end} (its messages are lost)")
        yield from self.messages(payload, nested=True)
        if len(payload) < size:
            raise _Cut(f"a chunk cut at byte {end}")

    def _record(self, op: int, body) -> RawMessage | None:
        if op == OP_SCHEMA:
            schema_id = struct.unpack_from("<H", body, 0)[0]
            self.schemas[schema_id], _ = _string(body, 2)
        elif op == OP_CHANNEL:
            channel_id, schema_id = struct.unpack_from("<HH", body, 0)
            topic, _ = _string(body, 4)
            self.channels[channel_id] = (topic, self.schemas.get(schema_id, ""))
        elif op == OP_MESSAGE:
            channel_id, _sequence, log_time = struct.unpack_from("<HIQ", body, 0)
            if channel_id in self.channels:
                topic, msgtype = self.channels[channel_id]
                return topic, msgtype, log_time, bytes(body[22:])
        return None


def _string(body, off: int) -> tuple[str, int]:
    """An MCAP string (u32 length, bytes) at ``off``, and the offset after it."""
    n = struct.unpack_from("<I", body, off)[0]
    if off + 4 + n > len(body):
        raise EOFError("string runs past the record")
    return bytes(body[off + 4: off + 4 + n]).decode(), off + 4 + n


def salvage_mcap(path: Path, already: int, problem) -> Iterator[RawMessage]:
    """Messages of an MCAP file without a valid footer, in file order, up to the first incomplete record.

    MCAP: magic, then records ``opcode u8, length u64, body``; schema 0x03, channel 0x04, message 0x05,
    chunk 0x06 (whose body holds more records, possibly zstd/lz4 compressed). ``already``: messages read
    from earlier files, for the report.
    """
    data = path.read_bytes()
    if data[:8] != MCAP_MAGIC:
        raise ValueError(f"{path} is not an MCAP file (bad magic): a corrupt or foreign file; re-record the bag "
                         "or write it again with `vfm-pose make-bag`")
    scanner = _McapScanner()
    count = 0
    try:
        for message in scanner.messages(memoryview(data)[8:]):
            count += 1
            yield message
        where = scanner.end
    except _Cut as cut:
        where = str(cut)
    except read_errors() as exc:
        where = f"{type(exc).__name__}: {exc}"
    problem(f"{path}: salvaged {count} messages ({already + count} in all) up to {where}")


def message_decompressor(bag: Path):
    """zstd decompression for bags written with per-message compression (salvage bypasses rosbags), else None."""
    meta_file = bag / "metadata.yaml" if bag.is_dir() else None
    if meta_file is None or not meta_file.is_file():
        return None
    import yaml

    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    if str(info.get("compression_mode", "")).lower() != "message":
        return None
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    return zstd.decompress


def _readable_sqlite_copy(path: Path, copy: Path) -> None:
    """Copy ``path`` to ``copy`` cut to whole pages, with the header's page count fixed to match.

    SQLite refuses a file shorter than its header says ("malformed"); rows whose pages lie past the cut
    then end the scan instead.
    """
    import shutil

    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        header = f.read(100)
        if header[:16] != b"SQLite format 3\x00":
            raise ValueError(f"{path} is not an SQLite file: a corrupt or foreign file; re-record the bag or "
                             "write it again with `vfm-pose make-bag`")
        page = struct.unpack(">H", header[16:18])[0]
        page = 65536 if page == 1 else page
        pages = copy.stat().st_size // page
        f.truncate(pages * page)
        f.seek(28)
        f.write(struct.pack(">I", pages))


def salvage_sqlite(path: Path, already: int, problem) -> Iterator[RawMessage]:
    """Messages of a truncated rosbag2 SQLite file, in insertion order, up to the first unreadable row."""
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vfm_bag_salvage_") as tmp:
        copy = Path(tmp) / path.name
        _readable_sqlite_copy(path, copy)
        count = 0
        where = "the end of the file"
        con = sqlite3.connect(f"file:{copy}?immutable=1", uri=True)
        try:
            topics = {i: (name, typ) for i, name, typ in con.execute("SELECT id, name, type FROM topics")}
            for topic_id, ts, data in con.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
                if topic_id in topics:
                    count += 1
                    yield topics[topic_id][0], topics[topic_id][1], int(ts), bytes(data)
        except sqlite3.DatabaseError as exc:
            where = f"{type(exc).__name__}: {exc}"
        finally:
            con.close()
    problem(f"{path}: salvaged {count} messages ({already + count} in all) up to {where}")


def salvage(path: Path, already: int, problem) -> Iterator[RawMessage]:
    """The salvage reader for a storage file by its suffix (.mcap, else SQLite)."""
    reader = salvage_mcap if path.suffix == ".mcap" else salvage_sqlite
    return reader(path, already, problem)
