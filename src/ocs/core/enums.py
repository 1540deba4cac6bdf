"""The credit core's enumerations: account status, limit basis, service unit, refusal reason.

They live apart from ``ocs.core.model`` (which imports them, and is where the rest of the code
imports them from) so that ``scripts/build_native.py`` can compile them with the hot paths:
compiled code reads a member of an enumeration compiled with it as a constant, and one that is
not through ``EnumType.__getattr__`` on Python 3.11 (about 60 ns, ten times per request).
"""

from enum import StrEnum


class AccountStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    CLOSED = "closed"


class LimitBasis(StrEnum):
    """What the credit limit is measured against (seed 002, B3Networks)."""

    BALANCE = "balance"  # the running balance, accumulated over all transactions
    UNBILLED = "unbilled"  # postpaid: usage not yet billed in the current monthly period


class ServiceUnit(StrEnum):
    TIME = "time"  # seconds
    VOLUME = "volume"  # bytes
    EVENT = "event"  # a count of events (SMS, MMS, API calls)


class RefusalReason(StrEnum):
    """Why a new session is refused. Adapters map these to wire codes and texts."""

    UNKNOWN_ACCOUNT = "unknown_account"
    INSUFFICIENT_CREDIT = "insufficient_credit"
    # The balance would do, but running sessions hold the credit (their grants' price).
    CREDIT_HELD = "credit_held"
    BLOCKED = "blocked"
    CLOSED = "closed"
    TOO_MANY_SESSIONS = "too_many_sessions"
    SETUP_RATE_EXCEEDED = "setup_rate_exceeded"
    # Not a rule of the account: the figures are too old to trust and policy says refuse.
    CREDIT_DATA_UNAVAILABLE = "credit_data_unavailable"
    # The identity has a credential and the request's password (PAP, CHAP, MS-CHAPv2) is wrong
    # or missing: decided before the credit is looked at.
    BAD_CREDENTIAL = "bad_credential"
    # The account's rate plan prices no prefix of the called number (issue 13).
    NO_RATE = "no_rate"


# What a subscriber or an operator reads (RADIUS Reply-Message, the CLI).
REFUSAL_TEXT: dict[RefusalReason, str] = {
    RefusalReason.UNKNOWN_ACCOUNT: "unknown account",
    RefusalReason.INSUFFICIENT_CREDIT: "insufficient credit",
    RefusalReason.CREDIT_HELD: "insufficient credit: held by running sessions",
    RefusalReason.BLOCKED: "account blocked",
    RefusalReason.CLOSED: "account closed",
    RefusalReason.TOO_MANY_SESSIONS: "too many sessions",
    RefusalReason.SETUP_RATE_EXCEEDED: "session setup rate exceeded",
    RefusalReason.CREDIT_DATA_UNAVAILABLE: "credit data unavailable",
    RefusalReason.BAD_CREDENTIAL: "authentication failed",
    RefusalReason.NO_RATE: "no rate for the destination",
}
