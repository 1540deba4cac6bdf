"""The usage spool: where usage goes when PostgreSQL cannot take it, until it can.

Rules of this file:
- A record is acknowledged (the NAS or PCEF gets its answer) only after it is on disk: written,
  flushed and fsync'd. A crash after that loses nothing; a crash before it loses nothing either,
  because nothing was acknowledged and the client sends it again.
- One record a line: ``<crc32 hex> <json>``. A torn last line (a crash mid-write) is ignored: it
  was never acknowledged. A damaged line elsewhere is counted, logged and kept aside in
  ``<file>.damaged`` for an operator; the rest is replayed.
- The spool is bounded (``max_bytes``). When full, ``SpoolFull`` is raised and the request is not
  acknowledged, so the client retransmits later, instead of the disk filling up.
- Replay is idempotent: every record carries its idempotency key and the database ignores a key
  it has seen (``ocs_record_session_usage``), so replaying twice, or replaying a record that did
  reach the database before a crash, charges once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import Any

from ocs.charging.pipeline import SpoolFull

log = logging.getLogger("ocs.spool")

__all__ = ["Spool", "SpoolError", "SpoolFull"]


class SpoolError(RuntimeError):
    pass


class Spool:
    def __init__(self, path: str | Path, *, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # appends run in worker threads (fsync off the loop)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        except OSError as exc:
            raise SpoolError(f"cannot open the usage spool {self.path}: {exc}") from exc
        self.damaged = 0

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    @property
    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (blocking: call it in a thread). Raises SpoolFull."""
        body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        line = b"%08x %s\n" % (zlib.crc32(body), body)
        with self._lock:
            if self._handle.tell() + len(line) > self.max_bytes:
                raise SpoolFull(
                    f"the usage spool {self.path} is full ({self.max_bytes} bytes): "
                    "usage is not acknowledged until the database is back"
                )
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """Every intact record, and the byte offset up to which they were read."""
        records: list[dict[str, Any]] = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        offset = 0
        damaged: list[bytes] = []
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:
                break  # a torn last line: never acknowledged
            line = data[offset:end]
            offset = end + 1
            record = _decode(line)
            if record is None:
                damaged.append(line)
                continue
            records.append(record)
        if damaged:
            self.damaged += len(damaged)
            with (self.path.parent / (self.path.name + ".damaged")).open("ab") as aside:
                aside.write(b"\n".join(damaged) + b"\n")
            log.error(
                "usage spool: %d damaged records moved to %s.damaged", len(damaged), self.path
            )
        return records, offset

    def consume(self, offset: int) -> None:
        """Drop the first ``offset`` bytes (replayed); keep anything appended since."""
        with self._lock:
            self._handle.flush()
            data = self.path.read_bytes()
            rest = data[offset:]
            temporary = self.path.with_suffix(self.path.suffix + ".tmp")
            with temporary.open("wb") as out:
                out.write(rest)
                out.flush()
                os.fsync(out.fileno())
            self._handle.close()
            os.replace(temporary, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._handle = self.path.open("ab")


def _decode(line: bytes) -> dict[str, Any] | None:
    checksum, _, body = line.partition(b" ")
    try:
        if int(checksum, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
