"""Idempotency keys of the account API (the ``Idempotency-Key`` header on money-moving POSTs).

Rules of this file:
- A key belongs to an operator (the token's). The first request with it records the SHA-256 of
  its method, path and body and, in the same transaction as the change it makes, its answer.
- The same key again with the same request gets the recorded answer and changes nothing; with
  another request it is ``KeyReused`` (the API's 409). A request still running under the key
  holds its row locked, so a concurrent repeat waits for the first answer instead of acting.
- Refusals by a rule are answers too (recorded, replayed); errors that are not (the database
  away) are not recorded, so the client may retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from ocs.store.errors import Conflict


class KeyReused(Conflict):
    """The key was used before for another request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedAnswer:
    status: int
    body: dict[str, Any]


def request_digest(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).digest()


async def claim(
    conn: asyncpg.Connection,
    *,
    operator_id: int,
    key: str,
    method: str,
    path: str,
    body: bytes,
) -> RecordedAnswer | None:
    """Inside the caller's transaction: claim ``key`` for this request. ``None``: the key is
    new, go ahead and :func:`record` the answer before committing. Else the recorded answer of
    the same request. Raises ``KeyReused`` for another request."""
    digest = request_digest(method, path, body)
    inserted = await conn.fetchval(
        """INSERT INTO api_idempotency_keys (operator_id, key, method, path, body_sha256)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (operator_id, key) DO NOTHING
           RETURNING true""",
        operator_id,
        key,
        method,
        path,
        digest,
    )
    if inserted:
        return None
    row = await conn.fetchrow(
        """SELECT method, path, body_sha256, status, response::text AS response
           FROM api_idempotency_keys WHERE operator_id = $1 AND key = $2""",
        operator_id,
        key,
    )
    assert row is not None and row["status"] is not None
    if bytes(row["body_sha256"]) != digest:
        raise KeyReused(
            f"Idempotency-Key {key!r} was used before for another request "
            f"({row['method']} {row['path']} with another body); use a new key for a new request"
        )
    return RecordedAnswer(status=row["status"], body=json.loads(row["response"]))


async def record(
    conn: asyncpg.Connection, *, operator_id: int, key: str, status: int, body: dict[str, Any]
) -> None:
    """The answer to the request that claimed ``key`` (same transaction)."""
    await conn.execute(
        """UPDATE api_idempotency_keys SET status = $3, response = $4::jsonb
           WHERE operator_id = $1 AND key = $2""",
        operator_id,
        key,
        status,
        json.dumps(body),
    )


async def forget_older_than(conn: asyncpg.Connection, seconds: float) -> int:
    """Delete keys recorded more than ``seconds`` ago; returns how many."""
    status: str = await conn.execute(
        "DELETE FROM api_idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        seconds,
    )
    return int(status.rsplit(maxsplit=1)[-1])
