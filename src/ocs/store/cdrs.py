"""Call detail records: every closed session as one CDR, read from ``sessions``.

Rules of this file:
- :func:`closed_sessions` is the one query that turns sessions into CDRs. The CLI's export, the
  account API's listing and the daemon's exporter all call it, so when the sessions table
  changes only this function changes (migration 0030's trigger queues closing rows for the
  exporter). Each generation of a session key (migration 0014) is its own row, so its own CDR.
- A CDR is what the session was charged in the end: its account and the account's identities,
  start and end, the seconds, octets and events reported, the rated amount (micro-units) and
  why it ended. Destination and rate are left empty until rating by destination records them.
- Pages are keyed by (closed_at, session id), so a page boundary never skips or repeats a CDR.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ocs.store.errors import Executor


@dataclass(frozen=True, slots=True, kw_only=True)
class Cdr:
    cdr_id: int  # the session's id: stable, unique, the receivers' key for deduplication
    source: str  # radius or diameter
    origin: str  # the NAS address or the Diameter Origin-Host
    session_key: str  # Acct-Session-Id or Session-Id
    generation: int  # the key's use: a key reused after its session ended is a new generation
    account_id: int
    account: str
    identities: tuple[str, ...]  # "kind:value" of every identity of the account
    started_at: datetime
    ended_at: datetime
    duration_s: int  # the session time reported (Acct-Session-Time, CC-Time used)
    octets: int
    events: int
    charged: int  # micro-units: the rated amount of the whole session
    termination_cause: str | None
    destination: str | None = None
    rate: int | None = None  # micro-units per unit, once rating by destination records it


_SELECT = """
SELECT s.id, s.source, s.origin, s.session_key, s.generation, s.account_id, a.name,
       COALESCE((SELECT array_agg(i.kind || ':' || i.value ORDER BY i.kind, i.value)
                 FROM account_identities i WHERE i.account_id = s.account_id), '{}'),
       s.started_at, s.closed_at, s.seconds, s.octets, s.events,
       (s.charged * 1000000)::bigint, s.close_reason
FROM sessions s JOIN accounts a ON a.id = s.account_id
WHERE s.closed_at IS NOT NULL
  AND ($1::timestamptz IS NULL OR s.closed_at >= $1)
  AND ($2::timestamptz IS NULL OR s.closed_at < $2)
  AND ($3::bigint IS NULL OR s.account_id = $3)
  AND ($4::timestamptz IS NULL OR (s.closed_at, s.id) > ($4, $5::bigint))
  AND ($6::bigint[] IS NULL OR s.id = ANY($6))
ORDER BY s.closed_at, s.id
LIMIT $7
"""


async def closed_sessions(
    db: Executor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    account_id: int | None = None,
    after: tuple[datetime, int] | None = None,
    session_ids: Sequence[int] | None = None,
    limit: int = 1000,
) -> list[Cdr]:
    """CDRs of sessions that ended in ``[since, until)`` (either bound may be open), of one
    account if given, after the (closed_at, id) key ``after`` (the previous page's last), or
    exactly those in ``session_ids``; oldest end first, at most ``limit``."""
    after_at, after_id = after if after is not None else (None, None)
    rows = await db.fetch(
        _SELECT,
        since,
        until,
        account_id,
        after_at,
        after_id,
        list(session_ids) if session_ids is not None else None,
        limit,
    )
    return [
        Cdr(
            cdr_id=r[0],
            source=r[1],
            origin=r[2],
            session_key=r[3],
            generation=r[4],
            account_id=r[5],
            account=r[6],
            identities=tuple(r[7]),
            started_at=r[8],
            ended_at=r[9],
            duration_s=r[10],
            octets=r[11],
            events=r[12],
            charged=r[13],
            termination_cause=r[14],
        )
        for r in rows
    ]
