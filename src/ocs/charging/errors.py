"""What the charging pipeline's sources and sinks raise (``ocs.charging.pipeline`` re-exports
them). Kept in a module of their own that is never compiled (``scripts/build_native.py``): the
store subclasses them (``ocs.store.spool.SpoolUnwritable``), and compiled code refuses a
Python subclass of a compiled class where it expects the class."""

from __future__ import annotations


class SourceUnavailable(Exception):
    """The database could not answer (down, timed out, or failing)."""


class SourceRefused(ValueError):
    """The database refused a value as data (asyncpg ``DataError`` and the like): the input
    is bad, the database is fine."""


class SpoolFull(RuntimeError):
    """Neither the database nor the local spool can take usage now: do not acknowledge it."""
