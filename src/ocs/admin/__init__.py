"""The administrative service layer: every change an operator or a billing system makes.

Accounts and identities, payments, credits, refunds and transfers, credit limits (permanent and
temporary) with their history, warning thresholds, tariffs, rate plans and rate decks
(``ocs.admin.rates``, ``ocs.admin.rate_import``), operators, prepaid services, the outbox, API
tokens and idempotency keys, CDRs. The ``ocs`` CLI (``ocs.cli``) and the account API
(``ocs.api``) call these functions and hold no SQL of their own; the rules stay in PostgreSQL,
whose refusals arrive here as ``Refused`` with the database's text.

Rules of this package:
- Functions take an asyncpg connection (the pool for single reads) and name accounts, operators
  and tariffs by name. Changes run in one transaction each, nested (a savepoint) when the
  caller already has one, as the API's idempotency record does.
- Money is integer micro-units; time instants are timezone-aware; ``now`` is the caller's to
  pass where a figure depends on it.
- Errors: ``InvalidRequest`` (malformed before any data is read), ``NotFound``, ``Conflict``,
  ``Refused`` (a rule, with its SQLSTATE as ``rule``), all ``StoreError`` but the first.
"""

from ocs.admin.accounts import (
    AccountOverview,
    AccountRow,
    AccountSettings,
    TransfersSetting,
    account_overview,
    account_settings,
    add_identity,
    create_account,
    identities_of,
    list_account_classes,
    list_accounts,
    set_account_class,
    transfer_settings,
    update_account,
)
from ocs.admin.limits import (
    WarningThreshold,
    available_credit_in_database,
    credit_limit_history,
    give_temporary_increase,
    set_credit_limit,
    set_permanent_limit,
    set_temporary_credit_limit,
    set_warning_thresholds,
    warning_thresholds,
)
from ocs.admin.lookup import (
    account_class_id,
    account_id,
    account_time_zone,
    database_now,
    operator_id,
    rate_plan_id,
    tariff_id,
)
from ocs.admin.money import (
    LEDGER_KINDS,
    LedgerEntry,
    LedgerResult,
    TransferResult,
    add_ledger_entry,
    ledger_entries,
    record_credit,
    record_payment,
    record_refund,
    transfer,
)
from ocs.admin.parsing import InvalidRequest
from ocs.admin.tariffs import TariffSettings, list_tariffs, set_tariff
from ocs.store.errors import Conflict, NotFound, Refused, StoreError

__all__ = [
    "LEDGER_KINDS",
    "AccountOverview",
    "AccountRow",
    "AccountSettings",
    "Conflict",
    "InvalidRequest",
    "LedgerEntry",
    "LedgerResult",
    "NotFound",
    "Refused",
    "StoreError",
    "TariffSettings",
    "TransferResult",
    "TransfersSetting",
    "WarningThreshold",
    "account_class_id",
    "account_id",
    "account_overview",
    "account_settings",
    "account_time_zone",
    "add_identity",
    "add_ledger_entry",
    "available_credit_in_database",
    "create_account",
    "credit_limit_history",
    "database_now",
    "give_temporary_increase",
    "identities_of",
    "ledger_entries",
    "list_account_classes",
    "list_accounts",
    "list_tariffs",
    "operator_id",
    "rate_plan_id",
    "record_credit",
    "record_payment",
    "record_refund",
    "set_account_class",
    "set_credit_limit",
    "set_permanent_limit",
    "set_tariff",
    "set_temporary_credit_limit",
    "set_warning_thresholds",
    "tariff_id",
    "transfer",
    "transfer_settings",
    "update_account",
    "warning_thresholds",
]
