"""Bearer tokens of the account API: one operator each, stored as a SHA-256, revocable, with an
expiry.

Rules of this file:
- A token is ``ocs_`` and 43 URL-safe characters (32 random bytes). It is shown once, when it
  is created; the database keeps only its SHA-256, so a copy of the database lets nobody in.
- A token is valid while it is neither revoked nor past ``expires_at`` (at the database's
  ``now``), and its operator exists. Every call made with it acts as that operator.
- ``manage_operators`` tokens may also create operators and change their allowances; no other
  token can raise its own operator's caps.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ocs.admin.lookup import operator_id
from ocs.store.errors import Executor, NotFound

TOKEN_PREFIX = "ocs_"


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiToken:
    id: int
    operator: str
    label: str | None
    manage_operators: bool
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewToken:
    token: str  # the secret: shown once
    record: ApiToken


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who an API request acts as."""

    token_id: int
    operator_id: int
    operator: str
    manage_operators: bool


_SELECT = """
SELECT t.id, o.name AS operator, t.label, t.manage_operators, t.created_by, t.created_at,
       t.expires_at, t.revoked_at, t.last_used_at
FROM api_tokens t JOIN operators o ON o.id = t.operator_id
"""


async def create_token(
    conn: asyncpg.Connection,
    operator: str,
    *,
    expires_at: datetime | None,
    label: str | None = None,
    manage_operators: bool = False,
    created_by: str | None = None,
) -> NewToken:
    """A new token for ``operator``, valid until ``expires_at`` (``None``: until revoked)."""
    op = await operator_id(conn, operator)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    new_id: int = await conn.fetchval(
        """INSERT INTO api_tokens (operator_id, token_sha256, label, manage_operators,
                                   created_by, expires_at)
           VALUES ($1, $2, $3, $4, COALESCE($5, current_user), $6) RETURNING id""",
        op,
        token_digest(token),
        label,
        manage_operators,
        created_by,
        expires_at,
    )
    row = await conn.fetchrow(_SELECT + " WHERE t.id = $1", new_id)
    return NewToken(token=token, record=ApiToken(**dict(row)))


async def list_tokens(db: Executor, operator: str | None = None) -> list[ApiToken]:
    rows = await db.fetch(
        _SELECT + " WHERE $1::text IS NULL OR o.name = $1 ORDER BY t.id", operator
    )
    return [ApiToken(**dict(r)) for r in rows]


async def revoke_token(conn: asyncpg.Connection, token_id: int) -> ApiToken:
    """Revoke a token at once (a revoked token stays listed, refused)."""
    row = await conn.fetchrow(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING id",
        token_id,
    )
    if row is None:
        raise NotFound(f"no API token with id {token_id}")
    found = await conn.fetchrow(_SELECT + " WHERE t.id = $1", token_id)
    return ApiToken(**dict(found))


async def authenticate(db: Executor, token: str) -> Caller | None:
    """The caller a token acts as, or ``None`` for an unknown, revoked or expired token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    row = await db.fetchrow(
        """SELECT t.id, t.operator_id, o.name, t.manage_operators,
                  t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'
           FROM api_tokens t JOIN operators o ON o.id = t.operator_id
           WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL
             AND (t.expires_at IS NULL OR t.expires_at > now())""",
        token_digest(token),
    )
    if row is None:
        return None
    if row[4]:  # last use noted to the minute: not a write per request
        await db.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row[0])
    return Caller(token_id=row[0], operator_id=row[1], operator=row[2], manage_operators=row[3])
