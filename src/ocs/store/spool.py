"""The usage spool: where usage goes when PostgreSQL cannot take it, until it can.

Rules of this file:
- A record is acknowledged (the NAS or PCEF gets its answer) only after it is on disk: written,
  flushed and fsync'd. A crash after that loses nothing; a crash before it loses nothing either,
  because nothing was acknowledged and the client sends it again.
- One record a line: ``<crc32 hex> <json>``. A torn last line (a crash mid-write) is ignored: it
  was never acknowledged. A damaged line elsewhere is counted, logged and kept aside in
  ``<file>.damaged`` for an operator; the rest is replayed.
- The spool is bounded (``max_bytes``). When full, ``SpoolFull`` is raised and the request is not
  acknowledged, so the client retransmits later, instead of the disk filling up. The same
  when the file system refuses the write (ENOSPC, EDQUOT, EIO: ``SpoolUnwritable``): what was
  partly written is cut off again, so the records already acknowledged stay intact and the
  next one starts on a line of its own.
- Replay is idempotent: every record carries its idempotency key and the database ignores a key
  it has seen (``ocs_record_session_usage``), so replaying twice, or replaying a record that did
  reach the database before a crash, charges once.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import Any

from ocs.charging.errors import SpoolFull

log = logging.getLogger("ocs.spool")

__all__ = ["Spool", "SpoolError", "SpoolFull", "SpoolUnwritable"]


class SpoolError(RuntimeError):
    pass


class SpoolUnwritable(SpoolFull):
    """The file system refused a spool write (no space, quota, I/O error)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # a bounded label: no_space, quota, io_error


class Spool:
    def __init__(self, path: str | Path, *, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # appends run in worker threads (fsync off the loop)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = self._open()
        except OSError as exc:
            raise SpoolError(f"cannot open the usage spool {self.path}: {exc}") from exc
        self.damaged = 0

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

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
            start = os.fstat(self._fd).st_size
            if start + len(line) > self.max_bytes:
                raise SpoolFull(
                    f"the usage spool {self.path} is full ({self.max_bytes} bytes): "
                    "usage is not acknowledged until the database is back"
                )
            try:
                written = 0
                while written < len(line):
                    written += os.write(self._fd, line[written:])
                os.fsync(self._fd)
            except OSError as exc:
                self._cut_back(start)
                reason = _REASONS.get(exc.errno or 0, "io_error")
                raise SpoolUnwritable(
                    f"the usage spool {self.path} cannot be written ({exc.strerror or exc}): "
                    "usage is not acknowledged until the database is back or space is freed",
                    reason,
                ) from exc

    def _cut_back(self, size: int) -> None:
        """Remove a partly written record (the file system refused the rest)."""
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as exc:  # the torn line stays; read() sets it aside, nothing is lost
            log.error("usage spool: cannot cut back a partial record: %s", exc)

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
            try:
                with (self.path.parent / (self.path.name + ".damaged")).open("ab") as aside:
                    aside.write(b"\n".join(damaged) + b"\n")
            except OSError as exc:
                log.error("usage spool: cannot keep the damaged records aside: %s", exc)
            log.error(
                "usage spool: %d damaged records moved to %s.damaged", len(damaged), self.path
            )
        return records, offset

    def consume(self, offset: int) -> bool:
        """Drop the first ``offset`` bytes (replayed); keep anything appended since. Returns
        False (the spool unchanged) when the file system cannot take the shorter copy: the
        records stay and are replayed again later, which their keys make harmless."""
        with self._lock:
            data = self.path.read_bytes()
            rest = data[offset:]
            if not rest:  # all replayed: no copy needed, so a full disk cannot stop it
                os.ftruncate(self._fd, 0)
                os.fsync(self._fd)
                return True
            temporary = self.path.with_suffix(self.path.suffix + ".tmp")
            try:
                with temporary.open("wb") as out:
                    out.write(rest)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                log.error("usage spool: cannot shorten the spool (%s); replayed later again", exc)
                temporary.unlink(missing_ok=True)
                return False
            os.close(self._fd)
            os.replace(temporary, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._fd = self._open()
            return True


_REASONS = {errno.ENOSPC: "no_space", errno.EDQUOT: "quota", errno.EIO: "io_error"}


def _decode(line: bytes) -> dict[str, Any] | None:
    checksum, _, body = line.partition(b" ")
    try:
        if int(checksum, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
