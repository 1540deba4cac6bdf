"""RFC 9457 problem details: every error the account API answers, and how the service layer's
exceptions map to them.

Rules of this file:
- ``type`` is a relative URI naming the rule (``/problems/operator-limit``); ``detail`` is the
  text the CLI prints for the same refusal, figures included; ``rule`` repeats the rule's short
  name (and ``sqlstate`` the database's code where the database refused).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from ocs.admin.idempotency import KeyReused
from ocs.admin.parsing import InvalidRequest
from ocs.core.identity import IdentityError
from ocs.core.money import AmountError
from ocs.store.errors import Conflict, NotFound, Refused, StoreError

PROBLEM_MEDIA_TYPE = "application/problem+json"

# rule -> (status, title)
RULES: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "A valid bearer token is needed"),
    "forbidden": (403, "The token's operator may not do this"),
    "operator-limit": (403, "An operator's allowance or limit would be exceeded"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflicts with what exists"),
    "idempotency-key-reused": (409, "The Idempotency-Key was used for another request"),
    "body-too-large": (413, "The request body is too large"),
    "unsupported-media-type": (415, "The request body must be JSON"),
    "invalid-request": (422, "The request is not valid"),
    "insufficient-funds": (422, "The account does not have the available funds"),
    "not-allowed": (422, "Not allowed for this account"),
    "idempotency-key-required": (400, "An Idempotency-Key header or an external_id is needed"),
    "bad-request": (400, "Bad request"),
    "rate-limited": (429, "Too many requests for this token"),
    "database-unavailable": (503, "The database cannot be reached"),
}

_SQLSTATE_RULES = {"OC001": "operator-limit", "OC002": "insufficient-funds", "OC003": "not-allowed"}


class Problem(BaseModel):
    """An error, RFC 9457."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["/problems/operator-limit"])
    title: str
    status: int
    detail: str = Field(
        examples=[
            "operator helpdesk may credit or refund at most 10.00 per transaction; this "
            "credit is 15.00"
        ]
    )
    rule: str = Field(examples=["operator-limit"])


class ApiProblem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, rule: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return RULES[self.rule][0]

    def body(self) -> dict[str, Any]:
        return {
            "type": f"/problems/{self.rule}",
            "title": RULES[self.rule][1],
            "status": self.status,
            "detail": self.detail,
            "rule": self.rule,
            **self.extra,
        }


def problem_from(exc: Exception) -> ApiProblem | None:
    """The problem for an exception of the service layer (or the database's data errors);
    ``None`` for anything else (a bug: 500)."""
    if isinstance(exc, ApiProblem):
        return exc
    if isinstance(exc, KeyReused):
        return ApiProblem("idempotency-key-reused", str(exc))
    if isinstance(exc, Refused):
        rule = _SQLSTATE_RULES.get(exc.rule, "not-allowed")
        return ApiProblem(rule, str(exc), sqlstate=exc.rule)
    if isinstance(exc, NotFound):
        return ApiProblem("not-found", str(exc))
    if isinstance(exc, Conflict):
        return ApiProblem("conflict", str(exc))
    if isinstance(exc, StoreError | InvalidRequest | AmountError | IdentityError):
        return ApiProblem("invalid-request", str(exc))
    if isinstance(exc, asyncpg.DataError):  # out of range, not representable in the database
        return ApiProblem("invalid-request", f"a value cannot be stored: {exc}")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return ApiProblem("conflict", f"exists already: {exc}")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):  # a CHECK the schema holds
        return ApiProblem("invalid-request", f"a value is not allowed: {exc}")
    return None


def problem_responses(*rules: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these rules' statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for rule in rules:
        status = RULES[rule][0]
        entry = out.setdefault(
            status,
            {
                "description": RULES[rule][1],
                "content": {
                    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            },
        )
        if entry["description"] != RULES[rule][1] and RULES[rule][1] not in entry["description"]:
            entry["description"] += "; " + RULES[rule][1]
    return out
