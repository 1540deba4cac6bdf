"""The account API's JSON documents (pydantic models, and so the OpenAPI schemas).

Rules of this file:
- Money is a decimal string (``"10.00"``, at most 6 decimals), never a number; instants are
  RFC 3339 strings; percentages are decimal strings without the ``%``.
- Request models refuse unknown fields, so a misspelt field is a 422, not silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ocs.core.identity import IdentityKind

MONEY_PATTERN = r"^-?[0-9]{1,12}(\.[0-9]{1,6})?$"
POSITIVE_MONEY_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
PERCENT_PATTERN = r"^[0-9]{1,5}(\.[0-9]{1,2})?$"

Money = Annotated[str, Field(pattern=MONEY_PATTERN, examples=["10.00"])]
PositiveMoney = Annotated[
    str, Field(pattern=POSITIVE_MONEY_PATTERN, examples=["10.00"], description="> 0")
]
# What the API answers: balances may grow past what one request may move.
Amount = Annotated[str, Field(pattern=r"^-?[0-9]{1,13}(\.[0-9]{1,6})?$", examples=["10.00"])]
Percent = Annotated[str, Field(pattern=PERCENT_PATTERN, examples=["10"])]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Text = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]
ExternalId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
Status = Literal["active", "blocked", "closed"]
Basis = Literal["balance", "unbilled"]
Transfers = Literal["yes", "no", "class"]
Currency = Annotated[str, Field(min_length=3, max_length=3, examples=["EUR"])]
Kind = Literal["user_name", "e164", "imsi", "sip_uri", "nai", "calling_station_id", "private"]
assert set(Kind.__args__) == {k.value for k in IdentityKind}  # type: ignore[attr-defined]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- accounts -----------------------------------------------------------------------------------


class RateLimitIn(Request):
    """Both 0 removes the limit."""

    up_kbps: int = Field(ge=0, le=2_000_000_000, description="from the subscriber, kbit/s")
    down_kbps: int = Field(ge=0, le=2_000_000_000, description="towards the subscriber, kbit/s")


class RateLimitOut(BaseModel):
    up_kbps: int
    down_kbps: int


class AccountSettingsIn(Request):
    status: Status | None = None
    credit_limit: Money | None = None
    min_balance: Money | None = None
    limit_basis: Basis | None = None
    time_zone: Name | None = Field(default=None, examples=["Europe/Zurich"])
    max_sessions: int | None = Field(
        default=None, ge=-1, le=2_000_000_000, description="-1: no cap"
    )
    max_setups_per_s: int | None = Field(
        default=None, ge=-1, le=2_000_000_000, description="-1: no cap"
    )
    tariff: Name | None = None
    account_class: str | None = Field(default=None, max_length=200, description='"" removes it')
    transfers: Transfers | None = None
    rate_limit: RateLimitIn | None = Field(
        default=None,
        description="bandwidth sent to data NAS (Mikrotik-Rate-Limit, WISPr); both 0 removes it",
    )
    rate_plan: str | None = Field(
        default=None,
        max_length=200,
        description='the account\'s own rate plan (rating by destination); "" removes it (its '
        "class's plan applies then, else its tariff). It must be in the account's currency.",
    )
    currency: Currency | None = Field(
        default=None, description="ISO 4217; an account created without one is in USD"
    )


class AccountCreate(AccountSettingsIn):
    name: Name


class Account(BaseModel):
    id: int
    name: str
    status: Status
    balance: Amount
    credit_limit: Amount
    min_balance: Amount
    limit_basis: Basis
    time_zone: str
    max_sessions: int | None
    max_setups_per_s: int | None
    tariff: str | None
    account_class: str | None
    transfers: Transfers
    blocked_reason: str | None
    created_at: datetime
    rate_limit: RateLimitOut | None
    currency: str
    rate_plan: str | None = Field(description="the account's own rate plan")
    rate_plan_in_force: str | None = Field(
        description="its own plan, else its class's; null: its tariff prices every destination"
    )


class AccountSummary(BaseModel):
    id: int
    name: str
    status: Status
    balance: Amount
    credit_limit: Amount
    min_balance: Amount
    limit_basis: Basis
    tariff: str | None
    identities: int


class Page(BaseModel):
    next_cursor: str | None = Field(description="pass as cursor= for the next page; null: last")


class AccountPage(Page):
    items: list[AccountSummary]


class TemporaryIncreaseOut(BaseModel):
    amount: Amount | None
    percent: Percent | None
    increase: Amount = Field(description="what it adds to the permanent limit now")
    valid_until: datetime


class Decision(BaseModel):
    admitted: bool
    reason: str | None = Field(description="why refused (null when admitted)")
    reason_text: str | None
    granted_units: int
    unit: Literal["time", "volume", "event"]
    available: Amount


class Balance(BaseModel):
    """The figures ``ocs account show`` prints, and the decision a new session would get now
    (from the database's figures; the daemon also counts running sessions and setups)."""

    account: str
    account_id: int
    status: Status
    at: datetime
    balance: Amount
    credit_limit: Amount
    temporary_increase: TemporaryIncreaseOut | None
    effective_credit_limit: Amount
    min_balance: Amount
    limit_basis: Basis
    unbilled_this_period: Amount | None
    available_credit: Amount
    decision: Decision


class IdentityIn(Request):
    kind: Kind
    value: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


class Identity(BaseModel):
    kind: str
    value: str


# --- money --------------------------------------------------------------------------------------


class PaymentIn(Request):
    amount: PositiveMoney
    kind: Literal["payment", "card_charge"] = "payment"
    external_id: ExternalId | None = Field(
        default=None, description="the payment's id elsewhere; the same id again is a no-op"
    )
    note: Text | None = None


class CreditIn(Request):
    amount: PositiveMoney
    promotional: bool = False
    external_id: ExternalId | None = None
    note: Text | None = None


class RefundIn(Request):
    amount: PositiveMoney = Field(description="taken off the balance")
    external_id: ExternalId | None = None
    note: Text | None = None


class LedgerEntryOut(BaseModel):
    entry_id: int
    account: str
    kind: str
    amount: Amount = Field(description="signed: its effect on the balance")
    created: bool = Field(description="false: the external_id was recorded before")
    balance: Amount = Field(description="the account's balance after it")
    operator: str


class LedgerItem(BaseModel):
    id: int
    kind: str
    amount: Amount
    external_id: str | None
    operator: str | None
    changed_by: str | None
    note: str | None
    transfer_id: int | None
    created_at: datetime


class LedgerPage(Page):
    items: list[LedgerItem]


class TransferIn(Request):
    from_account: Name
    to_account: Name
    amount: PositiveMoney
    external_id: ExternalId | None = None
    note: Text | None = None


class TransferOut(BaseModel):
    transfer_id: int
    from_account: str
    to_account: str
    amount: Amount
    from_balance: Amount
    to_balance: Amount


# --- limits -------------------------------------------------------------------------------------


class CreditLimitIn(Request):
    amount: Money
    reason: Text | None = None


class CreditLimitOut(BaseModel):
    account: str
    credit_limit: Amount


class TemporaryIncreaseIn(Request):
    amount: Money | None = Field(default=None, description="an amount, or ...")
    percent: Percent | None = Field(default=None, description="... a percentage of the limit")
    until: Annotated[str, Field(min_length=1, max_length=40)] = Field(
        examples=["+7d", "2026-12-31", "2026-12-31T18:00:00Z"],
        description="+7d, +12h, a date (00:00 in the account's zone) or a date-time",
    )
    reason: Text | None = None


class TemporaryIncreaseCreated(BaseModel):
    id: int
    account: str
    amount: Amount | None
    percent: Percent | None
    valid_until: datetime


class LimitChange(BaseModel):
    changed_at: datetime
    operator: str | None
    changed_by: str
    temporary: bool
    old_limit: Amount | None
    new_limit: Amount | None
    temporary_amount: Amount | None
    temporary_percent: Percent | None
    valid_until: datetime | None
    reason: str | None


class ThresholdsIn(Request):
    thresholds: list[Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,6})?%?$")]] = Field(
        max_length=50, examples=[["50", "10", "20%"]]
    )


class Threshold(BaseModel):
    amount: Amount | None
    percent: Percent | None
    armed: bool
    fired_at: datetime | None


# --- tariffs, classes, operators ----------------------------------------------------------------


class TariffIn(Request):
    price_per_minute: PositiveMoney | None = None
    billing_increment_s: int | None = Field(default=None, ge=1, le=86400)
    minimum_s: int | None = Field(default=None, ge=0, le=86400)
    price_per_mb: PositiveMoney | None = None
    connection_fee: PositiveMoney | None = None
    price_per_event: PositiveMoney | None = None


class Tariff(BaseModel):
    name: str
    price_per_minute: Amount
    billing_increment_s: int
    minimum_s: int
    price_per_mb: Amount
    connection_fee: Amount
    price_per_event: Amount
    accounts: int


class AccountClassIn(Request):
    transfers_allowed: bool


class AccountClass(BaseModel):
    name: str
    transfers_allowed: bool
    accounts: int


class OperatorIn(Request):
    """``null`` (or absent on a change) leaves a cap as it is; ``clear`` lists caps to remove."""

    time_zone: Name | None = None
    max_temp_increase_amount: PositiveMoney | None = None
    max_temp_increase_percent: Percent | None = None
    max_temp_duration_s: int | None = Field(default=None, ge=0, le=100 * 366 * 86400)
    daily_credit_limit: PositiveMoney | None = None
    transaction_credit_limit: PositiveMoney | None = None
    clear: list[
        Literal[
            "max_temp_increase_amount",
            "max_temp_increase_percent",
            "max_temp_duration",
            "daily_credit_limit",
            "transaction_credit_limit",
        ]
    ] = Field(default=[], max_length=5)


class OperatorCreate(OperatorIn):
    name: Name


class Operator(BaseModel):
    id: int
    name: str
    time_zone: str
    max_temp_increase_amount: Amount | None
    max_temp_increase_percent: Percent | None
    max_temp_duration_s: int | None
    daily_credit_limit: Amount | None
    transaction_credit_limit: Amount | None
    today: str = Field(description="the operator's local date")
    used_today: Amount
    left_today: Amount | None


# --- rate plans ---------------------------------------------------------------------------------


class RatePlanIn(Request):
    name: Name
    currency: Currency
    description: Text = ""


class RateDeck(BaseModel):
    name: str
    priority: int = Field(description="lowest first: the first deck with a rate prices the call")
    prefixes: int
    rates: int


class RatePlan(BaseModel):
    name: str
    currency: str
    description: str
    accounts: int = Field(description="accounts with this plan as their own")
    classes: int = Field(description="account classes with this plan")
    decks: list[RateDeck]


class RateOut(BaseModel):
    price_per_minute: Amount = Field(description="in the plan's currency")
    minimum_s: int
    increment_s: int
    connection_fee: Amount
    effective_from: datetime
    band: str | None = Field(description="the time band the rate is for; null: all day")


class TimeBandOut(BaseModel):
    name: str
    weekdays: list[int] = Field(description="ISO: Monday 1 ... Sunday 7")
    start: str = Field(examples=["08:00"], description="local time on the account's clock")
    end: str = Field(examples=["20:00"], description="at or before start: the next day")


class RateAnswer(BaseModel):
    """Which rate prices a call to ``number`` starting ``at``, and why (as ``ocs rates show``)."""

    number: str = Field(description="the called number as E.164 digits")
    plan: str
    currency: str
    at: datetime
    time_zone: str = Field(description="whose clock the time bands are read on")
    rate: RateOut | None = Field(
        description="null: no prefix of the number has a rate in force (a call is refused)"
    )
    prefix: str | None = Field(description='the longest prefix with a rate ("": every number)')
    description: str | None
    deck: str | None
    skipped_decks: list[str] = Field(description="decks before it that had no rate")
    decks: list[str] = Field(description="the plan's decks in priority order")
    band: TimeBandOut | None
    active_bands: list[str] = Field(description="the deck's bands on at that instant")
    next_change: datetime | None = Field(
        description="when a new rate of the prefix comes into force (a call started before "
        "keeps this one)"
    )


# --- prepaid, outbox, CDRs ----------------------------------------------------------------------


class PrepaidIn(Request):
    name: Name
    amount: PositiveMoney
    every: Annotated[str, Field(max_length=20)] = Field(default="month", examples=["month", "30d"])
    start: Annotated[str, Field(max_length=40)] | None = Field(
        default=None, examples=["2026-01-01", "+1d"]
    )
    grace: Annotated[str, Field(max_length=20)] | None = Field(default=None, examples=["3d"])


class PrepaidService(BaseModel):
    account: str
    name: str
    amount: Amount
    period_days: int | None = Field(description="null: a calendar month")
    start: datetime
    grace_s: int
    next_charge_at: datetime
    active: bool
    unpaid: Amount


class PrepaidRun(BaseModel):
    charged: int
    blocked: int
    unblocked: int


class OutboxEvent(BaseModel):
    id: int
    created_at: datetime
    topic: str
    account: str | None
    attempts: int
    state: Literal["pending", "delivered", "abandoned"]
    delivered_at: datetime | None
    last_error: str | None
    payload: dict[str, object]


class OutboxPage(Page):
    items: list[OutboxEvent]


class Cdr(BaseModel):
    cdr_id: int
    account: str
    account_id: int
    identities: list[str]
    started_at: str
    ended_at: str
    duration_s: int
    octets: int
    events: int
    charged: Amount
    termination_cause: str | None
    destination: str | None
    rate: Amount | None
    source: str
    origin: str
    session_key: str
    generation: int


class CdrPage(Page):
    items: list[Cdr]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["up", "down"]
