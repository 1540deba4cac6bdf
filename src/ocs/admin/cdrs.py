"""CDRs for people and billing systems: pages of closed sessions and whole exports.

Rules of this file:
- The query is ``ocs.store.cdrs.closed_sessions`` (the one place that reads sessions as CDRs);
  this file pages through it by (end, id), so an export of any size never holds more than a page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from ocs.admin.lookup import account_id
from ocs.store.cdrs import Cdr, closed_sessions
from ocs.store.errors import Executor

__all__ = ["Cdr", "cdr_page", "iter_cdrs"]


async def cdr_page(
    db: Executor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    account: str | None = None,
    after: tuple[datetime, int] | None = None,
    limit: int = 100,
) -> list[Cdr]:
    """Up to ``limit`` CDRs of sessions that ended in ``[since, until)``, after the key
    ``after`` (the previous page's last (ended_at, cdr_id)), oldest end first."""
    acct = await account_id(db, account) if account is not None else None
    return await closed_sessions(
        db, since=since, until=until, account_id=acct, after=after, limit=limit
    )


async def iter_cdrs(
    db: Executor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    account: str | None = None,
    page_size: int = 5000,
) -> AsyncIterator[list[Cdr]]:
    """Every CDR in the range, a page at a time."""
    after: tuple[datetime, int] | None = None
    while True:
        page = await cdr_page(
            db, since=since, until=until, account=account, after=after, limit=page_size
        )
        if page:
            yield page
        if len(page) < page_size:
            return
        after = (page[-1].ended_at, page[-1].cdr_id)
