"""Refusals from the database, as exceptions whose message is for the person who asked.

Rules of this file:
- The business rules live in PostgreSQL (migration 0002). Their refusals carry SQLSTATE class
  ``OC`` and a message naming the rule and the figures; :func:`database_rules` turns them into
  :class:`Refused` with that message unchanged and the SQLSTATE kept as ``rule``, so the CLI and
  the account API show the same text.
- Anything that is not a refusal (a bug, a lost connection) propagates as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class StoreError(Exception):
    """A request the data does not allow; the message is for the person who asked."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


class Refused(StoreError):
    """A business rule enforced in the database refused the change (SQLSTATE class ``OC``):
    ``OC001`` an operator's allowance or limit, ``OC002`` insufficient funds, ``OC003`` not
    allowed (transfers disabled, the account blocked or closed)."""

    def __init__(self, message: str, rule: str = "OC000") -> None:
        super().__init__(message)
        self.rule = rule


def postgres_message(exc: asyncpg.PostgresError) -> str:
    message = str(getattr(exc, "message", None) or exc)
    hint = getattr(exc, "hint", None)
    return f"{message} ({hint})" if hint else message


@contextlib.contextmanager
def database_rules() -> Iterator[None]:
    """Turn the database's refusals into ``StoreError``s whose message is the database's own:
    class ``OC`` (business rules) into ``Refused``, ``no_data_found`` into ``NotFound``,
    ``check_violation`` (a bad argument) into ``StoreError``, ``unique_violation`` into
    ``Conflict``. Anything else is a bug and propagates."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        code = str(getattr(exc, "sqlstate", "") or "")
        if code.startswith("OC"):
            raise Refused(postgres_message(exc), code) from None
        if code == "P0002":
            raise NotFound(postgres_message(exc)) from None
        if code == "23514":
            raise StoreError(postgres_message(exc)) from None
        if code == "23505":
            raise Conflict(postgres_message(exc)) from None
        raise
