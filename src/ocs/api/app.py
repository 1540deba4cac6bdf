"""The account API's routes: HTTP to the service layer (``ocs.admin``) and back.

Rules of this file:
- Handlers translate: JSON in (validated by the models), one service call, JSON out. No SQL.
- Every money-moving POST runs in one transaction with its ``Idempotency-Key`` record
  (``ocs.admin.idempotency``): the same key and body again answers the recorded first answer
  (``Idempotent-Replayed: true``); the same key with another body is 409. Payments, credits,
  refunds and transfers need a key or an ``external_id`` (400 without either).
- Who: the bearer token's operator; ``changed_by`` records ``api-token:<id>``.
"""

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ocs import __version__, admin
from ocs.admin import idempotency, operators, outbox, prepaid, rates, tokens
from ocs.admin.cdrs import cdr_page
from ocs.admin.lookup import ping
from ocs.admin.parsing import (
    InvalidRequest,
    parse_duration,
    parse_every,
    parse_money,
    parse_until,
    split_thresholds,
)
from ocs.api import models as m
from ocs.api.problems import (
    PROBLEM_MEDIA_TYPE,
    ApiProblem,
    Problem,
    problem_from,
    problem_responses,
)
from ocs.api.ratelimit import RateLimiter
from ocs.billing.cdr_export import cdr_record
from ocs.config import Config
from ocs.core import AccountStatus, LimitBasis, format_amount
from ocs.core.identity import DialPlan, IdentityError, IdentityKind
from ocs.core.model import REFUSAL_TEXT
from ocs.core.money import AmountError
from ocs.store.errors import StoreError

IDEMPOTENCY_KEY = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="makes the request safe to repeat: the same key again answers the first "
        "answer; the same key with another body is 409",
    ),
]
ACCOUNT = Annotated[str, Path(min_length=1, max_length=200, description="the account's name")]
NAME = Annotated[str, Path(min_length=1, max_length=200)]


def money(micros: int) -> str:
    return format_amount(micros)


def money_or_none(micros: int | None) -> str | None:
    return None if micros is None else format_amount(micros)


def percent_or_none(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiProblem("invalid-request", f"cursor {text!r} is not one this API gave") from None


def utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def problem_response(problem: ApiProblem) -> JSONResponse:
    headers: dict[str, str] = {}
    if problem.rule == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="ocs"'
    retry = problem.extra.get("retry_after_s")
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return JSONResponse(
        problem.body(), status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def create_app(config: Config, *, pool: asyncpg.Pool | None = None) -> FastAPI:
    """The API application. ``pool`` is set by the server's lifespan (or a test); building the
    app (and its OpenAPI document) needs no database."""
    api = config.api
    page = Annotated[int, Query(ge=1, le=api.page_max_items, description="items per page")]
    cursor_q = Annotated[str | None, Query(max_length=500, description="from next_cursor")]
    app = FastAPI(
        title="ocs account API",
        version=__version__,
        description=(
            "Accounts, identities, money, credit limits, thresholds, tariffs, rate plans, "
            "operators, prepaid services, the outbox and CDRs of ocs, the online charging "
            "daemon. Every "
            "call but /health needs `Authorization: Bearer <token>` (`ocs api-token create "
            "OPERATOR`) and acts as that operator: the operator's allowances apply. Money is "
            "a decimal string. Errors are RFC 9457 problem documents."
        ),
        responses=problem_responses(
            "bad-request", "unauthorized", "body-too-large", "invalid-request", "rate-limited"
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind a token like every endpoint but /health
    )
    app.state.pool = pool
    limiter = RateLimiter(rate_per_s=api.rate_limit_per_s, burst=api.rate_burst_requests)
    limits = config.grant.limits()
    bearer = HTTPBearer(
        auto_error=False,
        bearerFormat="ocs_...",
        description="a token from `ocs api-token create OPERATOR`",
    )

    def pool_of(request: Request) -> asyncpg.Pool:
        found: asyncpg.Pool | None = request.app.state.pool
        if found is None:
            raise ApiProblem("database-unavailable", "the API has no database connection")
        return found

    async def authenticated(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> tokens.Caller:
        if credentials is None:
            raise ApiProblem(
                "unauthorized", "send Authorization: Bearer <token> (ocs api-token create)"
            )
        caller = await tokens.authenticate(pool_of(request), credentials.credentials)
        if caller is None:
            raise ApiProblem("unauthorized", "the token is unknown, revoked or expired")
        wait_s = limiter.take(caller.token_id)
        if wait_s > 0:
            raise ApiProblem(
                "rate-limited",
                f"more than {api.rate_limit_per_s:g} requests/s (burst "
                f"{api.rate_burst_requests}) for this token; retry in {wait_s:.1f} s",
                retry_after_s=max(1, round(wait_s + 0.5)),
            )
        return caller

    Who = Annotated[tokens.Caller, Depends(authenticated)]

    def by(who: tokens.Caller) -> str:
        return f"api-token:{who.token_id}"

    async def changing(
        request: Request,
        who: tokens.Caller,
        key: str | None,
        action: Callable[[asyncpg.Connection], Awaitable[tuple[int, dict[str, Any]]]],
    ) -> JSONResponse:
        """Run ``action`` in a transaction with the idempotency record of ``key``."""
        body = await request.body()
        async with pool_of(request).acquire() as conn, conn.transaction():
            if key is not None:
                recorded = await idempotency.claim(
                    conn,
                    operator_id=who.operator_id,
                    key=key,
                    method=request.method,
                    path=request.url.path,
                    body=body,
                )
                if recorded is not None:
                    return JSONResponse(
                        recorded.body,
                        status_code=recorded.status,
                        media_type=PROBLEM_MEDIA_TYPE if recorded.status >= 400 else None,
                        headers={"Idempotent-Replayed": "true"},
                    )
            try:
                async with conn.transaction():
                    status, answer = await action(conn)
            except (StoreError, InvalidRequest, AmountError, IdentityError) as exc:
                problem = problem_from(exc)
                assert problem is not None
                if key is None:
                    raise
                await idempotency.record(
                    conn,
                    operator_id=who.operator_id,
                    key=key,
                    status=problem.status,
                    body=problem.body(),
                )
                return problem_response(problem)
            if key is not None:
                await idempotency.record(
                    conn, operator_id=who.operator_id, key=key, status=status, body=answer
                )
        return JSONResponse(answer, status_code=status)

    def need_key(key: str | None, external_id: str | None) -> None:
        if key is None and external_id is None:
            raise ApiProblem(
                "idempotency-key-required",
                "a money-moving request needs an Idempotency-Key header or an external_id, so "
                "that a retry cannot move the money twice",
            )

    # --- errors -------------------------------------------------------------------------------

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc)

    async def _service_error(request: Request, exc: Exception) -> JSONResponse:
        problem = problem_from(exc)
        if problem is None:
            raise exc
        return problem_response(problem)

    for kind in (
        StoreError,
        InvalidRequest,
        AmountError,
        IdentityError,
        asyncpg.DataError,
        asyncpg.IntegrityConstraintViolationError,
    ):
        app.add_exception_handler(kind, _service_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "why": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['where']}: {e['why']}" for e in errors[:5])
        return problem_response(ApiProblem("invalid-request", detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rule = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
        return problem_response(ApiProblem(rule, str(exc.detail)))

    @app.exception_handler(asyncpg.PostgresConnectionError)
    async def _database_away(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(ApiProblem("database-unavailable", "PostgreSQL is unreachable"))

    app.openapi_schema = None

    # --- health -------------------------------------------------------------------------------

    @app.get(
        "/health",
        tags=["health"],
        response_model=m.Health,
        responses=problem_responses("database-unavailable"),
        summary="Liveness and database reachability (no token needed)",
    )
    async def health(request: Request) -> Any:
        pool = request.app.state.pool
        try:
            if pool is None:
                raise OSError("no pool")
            await ping(pool, 2.0)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        return {"status": "ok", "database": "up"}

    # --- accounts -----------------------------------------------------------------------------

    def rate_limit_from(given: m.RateLimitIn | None) -> tuple[int, int] | None:
        if given is None:
            return None
        if (given.up_kbps == 0) != (given.down_kbps == 0):
            raise InvalidRequest(
                "rate_limit: both rates at least 1 kbit/s, or both 0 to remove the limit"
            )
        return (given.up_kbps, given.down_kbps)

    def settings_from(body: m.AccountSettingsIn) -> admin.AccountSettings:
        return admin.AccountSettings(
            status=AccountStatus(body.status) if body.status else None,
            credit_limit=parse_money(body.credit_limit) if body.credit_limit is not None else None,
            min_balance=parse_money(body.min_balance) if body.min_balance is not None else None,
            limit_basis=LimitBasis(body.limit_basis) if body.limit_basis else None,
            time_zone=body.time_zone,
            max_sessions=body.max_sessions,
            max_setups_per_s=body.max_setups_per_s,
            tariff=body.tariff,
            account_class=body.account_class,
            transfers=body.transfers,
            rate_limit_kbps=rate_limit_from(body.rate_limit),
            rate_plan=body.rate_plan,
            currency=body.currency,
        )

    async def account_doc(db: Any, name: str) -> dict[str, Any]:
        row = await admin.account_settings(db, name)
        for field in ("credit_limit", "min_balance", "balance"):
            row[field] = money(row[field])
        up, down = row.pop("rate_limit_up_kbps"), row.pop("rate_limit_down_kbps")
        row["rate_limit"] = None if up is None else {"up_kbps": up, "down_kbps": down}
        return m.Account(**row).model_dump(mode="json")

    @app.get("/accounts", tags=["accounts"], response_model=m.AccountPage)
    async def list_accounts(
        request: Request,
        who: Who,
        limit: page = 100,
        cursor: cursor_q = None,
        prefix: Annotated[str, Query(max_length=200)] = "",
    ) -> Any:
        after = decode_cursor(cursor)
        if after is not None and not isinstance(after, str):
            raise ApiProblem("invalid-request", "cursor is not one this API gave")
        rows = await admin.list_accounts(pool_of(request), limit=limit, prefix=prefix, after=after)
        items = [
            m.AccountSummary(
                id=r.id,
                name=r.name,
                status=r.status,  # type: ignore[arg-type]
                balance=money(r.balance),
                credit_limit=money(r.credit_limit),
                min_balance=money(r.min_balance),
                limit_basis=r.limit_basis,  # type: ignore[arg-type]
                tariff=r.tariff,
                identities=r.identities,
            )
            for r in rows
        ]
        next_cursor = encode_cursor(rows[-1].name) if len(rows) == limit else None
        return m.AccountPage(items=items, next_cursor=next_cursor)

    @app.post(
        "/accounts",
        tags=["accounts"],
        status_code=201,
        response_model=m.Account,
        responses=problem_responses("conflict", "not-found"),
    )
    async def create_account(request: Request, who: Who, body: m.AccountCreate) -> Any:
        async with pool_of(request).acquire() as conn:
            await admin.create_account(
                conn, body.name, settings_from(body), changed_by=by(who), operator=who.operator
            )
            return JSONResponse(await account_doc(conn, body.name), status_code=201)

    @app.get(
        "/accounts/{account}",
        tags=["accounts"],
        response_model=m.Account,
        responses=problem_responses("not-found"),
    )
    async def get_account(request: Request, who: Who, account: ACCOUNT) -> Any:
        return await account_doc(pool_of(request), account)

    @app.patch(
        "/accounts/{account}",
        tags=["accounts"],
        response_model=m.Account,
        responses=problem_responses("not-found"),
    )
    async def update_account(
        request: Request, who: Who, account: ACCOUNT, body: m.AccountSettingsIn
    ) -> Any:
        async with pool_of(request).acquire() as conn:
            await admin.update_account(
                conn, account, settings_from(body), changed_by=by(who), operator=who.operator
            )
            return await account_doc(conn, account)

    @app.get(
        "/accounts/{account}/balance",
        tags=["accounts"],
        response_model=m.Balance,
        responses=problem_responses("not-found"),
        summary="Balance, limits, available credit and the decision a new session gets now",
    )
    async def balance(request: Request, who: Who, account: ACCOUNT) -> Any:
        view = await admin.account_overview(
            pool_of(request), account, now=datetime.now(UTC), limits=limits
        )
        snap = view.snapshot
        increase = snap.temporary_increase
        temporary = None
        if increase is not None and view.now < increase.valid_until:
            temporary = m.TemporaryIncreaseOut(
                amount=money_or_none(increase.amount),
                percent=percent_or_none(
                    Decimal(increase.percent_bp) / 100 if increase.percent_bp is not None else None
                ),
                increase=money(view.effective_limit - snap.credit_limit),
                valid_until=increase.valid_until,
            )
        decision = view.decision
        return m.Balance(
            account=snap.name,
            account_id=snap.account_id,
            status=snap.status.value,
            at=view.now,
            balance=money(snap.balance),
            credit_limit=money(snap.credit_limit),
            temporary_increase=temporary,
            effective_credit_limit=money(view.effective_limit),
            min_balance=money(snap.min_balance),
            limit_basis=snap.limit_basis.value,
            unbilled_this_period=money_or_none(view.unbilled_this_period),
            available_credit=money(view.available),
            decision=m.Decision(
                admitted=decision.admitted,
                reason=None if decision.reason is None else decision.reason.value,
                reason_text=None if decision.reason is None else REFUSAL_TEXT[decision.reason],
                granted_units=decision.granted_units,
                unit=decision.unit.value,
                available=money(decision.available),
            ),
        )

    @app.get(
        "/accounts/{account}/identities",
        tags=["accounts"],
        response_model=list[m.Identity],
        responses=problem_responses("not-found"),
    )
    async def identities(request: Request, who: Who, account: ACCOUNT) -> Any:
        db = pool_of(request)
        rows = await admin.identities_of(db, await admin.account_id(db, account))
        return [m.Identity(kind=k, value=v) for k, v in rows]

    @app.post(
        "/accounts/{account}/identities",
        tags=["accounts"],
        status_code=201,
        response_model=m.Identity,
        responses=problem_responses("not-found", "conflict"),
    )
    async def add_identity(request: Request, who: Who, account: ACCOUNT, body: m.IdentityIn) -> Any:
        normal = await admin.add_identity(
            pool_of(request), account, IdentityKind(body.kind), body.value
        )
        return JSONResponse({"kind": body.kind, "value": normal}, status_code=201)

    # --- money --------------------------------------------------------------------------------

    def entry_doc(
        account: str, kind: str, amount: int, result: admin.LedgerResult, who: Any
    ) -> dict[str, Any]:
        return m.LedgerEntryOut(
            entry_id=result.entry_id,
            account=account,
            kind=kind,
            amount=money(amount),
            created=result.created,
            balance=money(result.balance),
            operator=who.operator,
        ).model_dump(mode="json")

    money_errors: dict[int | str, dict[str, Any]] = {
        200: {
            "model": m.LedgerEntryOut,
            "description": "the external_id was recorded before: nothing changed",
        },
        **problem_responses("idempotency-key-required", "operator-limit", "not-found", "conflict"),
    }

    @app.post(
        "/accounts/{account}/payments",
        tags=["money"],
        status_code=201,
        response_model=m.LedgerEntryOut,
        responses=money_errors,
        summary="Record a payment or card charge (not counted in operators' credit limits)",
    )
    async def add_payment(
        request: Request, who: Who, account: ACCOUNT, body: m.PaymentIn, key: IDEMPOTENCY_KEY = None
    ) -> Any:
        need_key(key, body.external_id)

        async def act(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
            amount = parse_money(body.amount)
            result = await admin.record_payment(
                conn,
                account,
                amount,
                kind=body.kind,
                external_id=body.external_id,
                note=body.note,
                operator=who.operator,
                changed_by=by(who),
            )
            return (201 if result.created else 200), entry_doc(
                account, body.kind, amount, result, who
            )

        return await changing(request, who, key, act)

    @app.post(
        "/accounts/{account}/credits",
        tags=["money"],
        status_code=201,
        response_model=m.LedgerEntryOut,
        responses=money_errors,
        summary="Credit an account (counts towards the operator's limits)",
    )
    async def add_credit(
        request: Request, who: Who, account: ACCOUNT, body: m.CreditIn, key: IDEMPOTENCY_KEY = None
    ) -> Any:
        need_key(key, body.external_id)

        async def act(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
            amount = parse_money(body.amount)
            result = await admin.record_credit(
                conn,
                account,
                amount,
                operator=who.operator,
                promotional=body.promotional,
                external_id=body.external_id,
                note=body.note,
                changed_by=by(who),
            )
            kind = "promotional_credit" if body.promotional else "credit"
            return (201 if result.created else 200), entry_doc(account, kind, amount, result, who)

        return await changing(request, who, key, act)

    @app.post(
        "/accounts/{account}/refunds",
        tags=["money"],
        status_code=201,
        response_model=m.LedgerEntryOut,
        responses=money_errors,
        summary="Refund: take an amount off the balance (counts like a credit)",
    )
    async def add_refund(
        request: Request, who: Who, account: ACCOUNT, body: m.RefundIn, key: IDEMPOTENCY_KEY = None
    ) -> Any:
        need_key(key, body.external_id)

        async def act(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
            amount = parse_money(body.amount)
            result = await admin.record_refund(
                conn,
                account,
                amount,
                operator=who.operator,
                external_id=body.external_id,
                note=body.note,
                changed_by=by(who),
            )
            return (201 if result.created else 200), entry_doc(
                account, "refund", -amount, result, who
            )

        return await changing(request, who, key, act)

    @app.get(
        "/accounts/{account}/ledger",
        tags=["money"],
        response_model=m.LedgerPage,
        responses=problem_responses("not-found"),
        summary="Payments, credits, refunds, transfers and charges, oldest first",
    )
    async def ledger(
        request: Request, who: Who, account: ACCOUNT, limit: page = 100, cursor: cursor_q = None
    ) -> Any:
        after = decode_cursor(cursor)
        if after is not None and not isinstance(after, int):
            raise ApiProblem("invalid-request", "cursor is not one this API gave")
        rows = await admin.ledger_entries(pool_of(request), account, after=after, limit=limit)
        items = [
            m.LedgerItem(
                id=e.id,
                kind=e.kind,
                amount=money(e.amount),
                external_id=e.external_id,
                operator=e.operator,
                changed_by=e.changed_by,
                note=e.note,
                transfer_id=e.transfer_id,
                created_at=e.created_at,
            )
            for e in rows
        ]
        return m.LedgerPage(
            items=items, next_cursor=encode_cursor(rows[-1].id) if len(rows) == limit else None
        )

    @app.post(
        "/transfers",
        tags=["money"],
        status_code=201,
        response_model=m.TransferOut,
        responses=problem_responses(
            "idempotency-key-required",
            "insufficient-funds",
            "not-allowed",
            "not-found",
            "conflict",
        ),
        summary="Move funds between two subscribers (both must allow transfers)",
    )
    async def add_transfer(
        request: Request, who: Who, body: m.TransferIn, key: IDEMPOTENCY_KEY = None
    ) -> Any:
        need_key(key, body.external_id)

        async def act(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
            amount = parse_money(body.amount)
            if amount <= 0:
                raise InvalidRequest("a transfer must be a positive amount")
            result = await admin.transfer(
                conn,
                body.from_account,
                body.to_account,
                amount,
                operator=who.operator,
                changed_by=by(who),
                note=body.note,
                external_id=body.external_id,
            )
            return 201, m.TransferOut(
                transfer_id=result.transfer_id,
                from_account=body.from_account,
                to_account=body.to_account,
                amount=money(amount),
                from_balance=money(result.from_balance),
                to_balance=money(result.to_balance),
            ).model_dump(mode="json")

        return await changing(request, who, key, act)

    # --- limits and thresholds ----------------------------------------------------------------

    @app.put(
        "/accounts/{account}/credit-limit",
        tags=["limits"],
        response_model=m.CreditLimitOut,
        responses=problem_responses("not-found"),
        summary="Set the permanent credit limit (kept in the history)",
    )
    async def set_limit(request: Request, who: Who, account: ACCOUNT, body: m.CreditLimitIn) -> Any:
        amount = parse_money(body.amount)
        async with pool_of(request).acquire() as conn:
            await admin.set_permanent_limit(
                conn, account, amount, changed_by=by(who), reason=body.reason, operator=who.operator
            )
        return m.CreditLimitOut(account=account, credit_limit=money(amount))

    @app.post(
        "/accounts/{account}/temporary-increases",
        tags=["limits"],
        status_code=201,
        response_model=m.TemporaryIncreaseCreated,
        responses=problem_responses("operator-limit", "not-found", "conflict"),
        summary="Give a temporary credit-limit increase (within the operator's allowance)",
    )
    async def add_increase(
        request: Request,
        who: Who,
        account: ACCOUNT,
        body: m.TemporaryIncreaseIn,
        key: IDEMPOTENCY_KEY = None,
    ) -> Any:
        if (body.amount is None) == (body.percent is None):
            raise ApiProblem("invalid-request", "give either amount or percent")

        async def act(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
            amount = parse_money(body.amount) if body.amount is not None else None
            if amount is not None and amount < 0:
                raise InvalidRequest("a temporary increase cannot be negative")
            percent = Decimal(body.percent) if body.percent is not None else None
            zone = await admin.account_time_zone(conn, account)
            until = parse_until(body.until, await admin.database_now(conn), zone, what="until")
            new_id = await admin.give_temporary_increase(
                conn,
                account,
                valid_until=until,
                amount=amount,
                percent=percent,
                changed_by=by(who),
                reason=body.reason,
                operator=who.operator,
            )
            return 201, m.TemporaryIncreaseCreated(
                id=new_id,
                account=account,
                amount=money_or_none(amount),
                percent=percent_or_none(percent),
                valid_until=until,
            ).model_dump(mode="json")

        return await changing(request, who, key, act)

    @app.get(
        "/accounts/{account}/credit-limit/history",
        tags=["limits"],
        response_model=list[m.LimitChange],
        responses=problem_responses("not-found"),
    )
    async def limit_history(request: Request, who: Who, account: ACCOUNT) -> Any:
        db = pool_of(request)
        rows = await admin.credit_limit_history(db, await admin.account_id(db, account))
        return [
            m.LimitChange(
                changed_at=r["changed_at"],
                operator=r["operator"],
                changed_by=r["changed_by"],
                temporary=r["temporary"],
                old_limit=money_or_none(r["old_limit"]),
                new_limit=money_or_none(r["new_limit"]),
                temporary_amount=money_or_none(r["temp_amount"]),
                temporary_percent=percent_or_none(r["temp_percent"]),
                valid_until=r["valid_until"],
                reason=r["reason"],
            )
            for r in rows
        ]

    def threshold_docs(rows: list[admin.WarningThreshold]) -> list[m.Threshold]:
        return [
            m.Threshold(
                amount=money_or_none(t.amount),
                percent=percent_or_none(t.percent),
                armed=t.armed,
                fired_at=t.fired_at,
            )
            for t in rows
        ]

    @app.get(
        "/accounts/{account}/thresholds",
        tags=["limits"],
        response_model=list[m.Threshold],
        responses=problem_responses("not-found"),
    )
    async def thresholds(request: Request, who: Who, account: ACCOUNT) -> Any:
        db = pool_of(request)
        return threshold_docs(
            await admin.warning_thresholds(db, await admin.account_id(db, account))
        )

    @app.put(
        "/accounts/{account}/thresholds",
        tags=["limits"],
        response_model=list[m.Threshold],
        responses=problem_responses("not-found"),
        summary="Replace the warning thresholds (amounts; percentages for postpaid accounts)",
    )
    async def set_thresholds(
        request: Request, who: Who, account: ACCOUNT, body: m.ThresholdsIn
    ) -> Any:
        amounts, percents = split_thresholds(body.thresholds) if body.thresholds else ([], [])
        async with pool_of(request).acquire() as conn:
            await admin.set_warning_thresholds(conn, account, amounts, percents)
            acct = await admin.account_id(conn, account)
            return threshold_docs(await admin.warning_thresholds(conn, acct))

    # --- tariffs and account classes ----------------------------------------------------------

    def tariff_doc(r: Any) -> m.Tariff:
        return m.Tariff(
            name=r["name"],
            price_per_minute=money(r["price_per_minute"]),
            billing_increment_s=r["billing_increment_s"],
            minimum_s=r["minimum_s"],
            price_per_mb=money(r["price_per_mb"]),
            connection_fee=money(r["connection_fee"]),
            price_per_event=money(r["price_per_event"]),
            accounts=r["accounts"],
        )

    @app.get("/tariffs", tags=["tariffs"], response_model=list[m.Tariff])
    async def tariffs(request: Request, who: Who) -> Any:
        return [tariff_doc(r) for r in await admin.list_tariffs(pool_of(request))]

    @app.put(
        "/tariffs/{name}",
        tags=["tariffs"],
        response_model=m.Tariff,
        summary="Create a tariff or change the prices given",
    )
    async def set_tariff(request: Request, who: Who, name: NAME, body: m.TariffIn) -> Any:
        def opt(text: str | None) -> int | None:
            return parse_money(text) if text is not None else None

        settings = admin.TariffSettings(
            price_per_minute=opt(body.price_per_minute),
            billing_increment_s=body.billing_increment_s,
            minimum_s=body.minimum_s,
            price_per_mb=opt(body.price_per_mb),
            connection_fee=opt(body.connection_fee),
            price_per_event=opt(body.price_per_event),
        )
        async with pool_of(request).acquire() as conn:
            await admin.set_tariff(conn, name, settings)
            rows = await admin.list_tariffs(conn)
        return next(tariff_doc(r) for r in rows if r["name"] == name)

    @app.get("/account-classes", tags=["accounts"], response_model=list[m.AccountClass])
    async def account_classes(request: Request, who: Who) -> Any:
        rows = await admin.list_account_classes(pool_of(request))
        return [m.AccountClass(**dict(r)) for r in rows]

    @app.put("/account-classes/{name}", tags=["accounts"], response_model=m.AccountClass)
    async def set_account_class(
        request: Request, who: Who, name: NAME, body: m.AccountClassIn
    ) -> Any:
        async with pool_of(request).acquire() as conn:
            await admin.set_account_class(conn, name, transfers_allowed=body.transfers_allowed)
            rows = await admin.list_account_classes(conn)
        return next(m.AccountClass(**dict(r)) for r in rows if r["name"] == name)

    # --- rate plans (rating by destination) ---------------------------------------------------

    def plan_doc(plan: rates.PlanRow) -> m.RatePlan:
        return m.RatePlan(
            name=plan.name,
            currency=plan.currency,
            description=plan.description,
            accounts=plan.accounts,
            classes=plan.classes,
            decks=[
                m.RateDeck(name=d.name, priority=d.priority, prefixes=d.prefixes, rates=d.rates)
                for d in plan.decks
            ],
        )

    @app.get(
        "/rate-plans",
        tags=["rates"],
        response_model=list[m.RatePlan],
        summary="Rate plans, their decks and how many accounts and classes use them",
    )
    async def rate_plans(request: Request, who: Who) -> Any:
        return [plan_doc(p) for p in await rates.list_rate_plans(pool_of(request))]

    @app.post(
        "/rate-plans",
        tags=["rates"],
        status_code=201,
        response_model=m.RatePlan,
        responses=problem_responses("conflict"),
        summary="Create a rate plan in a currency (its decks come from `ocs rates import`); an "
        'account gets it with PATCH /accounts/{account} {"rate_plan": NAME}',
    )
    async def create_rate_plan(request: Request, who: Who, body: m.RatePlanIn) -> Any:
        async with pool_of(request).acquire() as conn:
            await rates.create_rate_plan(conn, body.name, body.currency, body.description)
            found = next(p for p in await rates.list_rate_plans(conn) if p.name == body.name)
        return JSONResponse(plan_doc(found).model_dump(mode="json"), status_code=201)

    def hhmm(minute: int) -> str:
        return f"{minute // 60:02d}:{minute % 60:02d}"

    @app.get(
        "/rates/{plan}/{number}",
        tags=["rates"],
        response_model=m.RateAnswer,
        responses=problem_responses("not-found"),
        summary="Which rate of a plan prices a call to a number, and why (as `ocs rates show`)",
    )
    async def rate_for(
        request: Request,
        who: Who,
        plan: NAME,
        number: Annotated[
            str,
            Path(
                min_length=1,
                max_length=200,
                description="as a client sends it: +41..., 0041..., sip:+41...@host",
            ),
        ],
        *,
        at: Annotated[
            str | None,
            Query(
                max_length=40,
                description="a date or date-time (default: now), in the time zone unless it "
                "carries an offset",
            ),
        ] = None,
        time_zone: Annotated[
            str | None, Query(max_length=64, description="whose clock the bands use (UTC)")
        ] = None,
        account: Annotated[
            str | None, Query(max_length=200, description="use this account's time zone")
        ] = None,
        country_code: Annotated[
            str, Query(pattern=r"^[0-9]{0,4}$", description="for national numbers (0...)")
        ] = "",
        national_prefix: Annotated[str, Query(pattern=r"^[0-9]{0,4}$")] = "",
        international_prefix: Annotated[str, Query(pattern=r"^[0-9]{0,4}$")] = "00",
    ) -> Any:
        dial_plan = DialPlan(
            country_code=country_code,
            international_prefix=international_prefix,
            national_prefix=national_prefix,
        )
        async with pool_of(request).acquire() as conn:
            found = await rates.explain_rate(
                conn,
                plan,
                number,
                at=at,
                time_zone=time_zone,
                account=account,
                dial_plan=dial_plan,
            )
        rate = found.rate
        band = found.band
        return m.RateAnswer(
            number=found.number,
            plan=found.plan,
            currency=found.currency,
            at=found.at,
            time_zone=found.time_zone,
            rate=None
            if rate is None
            else m.RateOut(
                price_per_minute=money(rate.price_per_minute),
                minimum_s=rate.minimum_s,
                increment_s=rate.increment_s,
                connection_fee=money(rate.connection_fee),
                effective_from=rate.effective_from,
                band=rate.band or None,
            ),
            prefix=found.prefix,
            description=found.description,
            deck=found.deck,
            skipped_decks=list(found.skipped_decks),
            decks=list(found.decks),
            band=None
            if band is None
            else m.TimeBandOut(
                name=band.name,
                weekdays=sorted(band.weekdays),
                start=hhmm(band.start_minute),
                end=hhmm(band.end_minute),
            ),
            active_bands=list(found.active_bands),
            next_change=found.next_change,
        )

    # --- operators ----------------------------------------------------------------------------

    def operator_doc(op: operators.Operator) -> m.Operator:
        return m.Operator(
            id=op.id,
            name=op.name,
            time_zone=op.time_zone,
            max_temp_increase_amount=money_or_none(op.max_temp_increase_amount),
            max_temp_increase_percent=percent_or_none(op.max_temp_increase_percent),
            max_temp_duration_s=int(op.max_temp_duration.total_seconds())
            if op.max_temp_duration is not None
            else None,
            daily_credit_limit=money_or_none(op.daily_credit_limit),
            transaction_credit_limit=money_or_none(op.transaction_credit_limit),
            today=op.today.isoformat(),
            used_today=money(op.used_today),
            left_today=money_or_none(op.left_today),
        )

    def operator_settings(body: m.OperatorIn) -> operators.OperatorSettings:
        def opt(text: str | None) -> int | None:
            return parse_money(text) if text is not None else None

        return operators.OperatorSettings(
            time_zone=body.time_zone,
            max_temp_increase_amount=opt(body.max_temp_increase_amount),
            max_temp_increase_percent=Decimal(body.max_temp_increase_percent)
            if body.max_temp_increase_percent is not None
            else None,
            max_temp_duration=timedelta(seconds=body.max_temp_duration_s)
            if body.max_temp_duration_s is not None
            else None,
            daily_credit_limit=opt(body.daily_credit_limit),
            transaction_credit_limit=opt(body.transaction_credit_limit),
            clear=frozenset(body.clear),
        )

    def may_manage(who: tokens.Caller) -> None:
        if not who.manage_operators:
            raise ApiProblem(
                "forbidden",
                f"the token of operator {who.operator} may not create or change operators "
                "(ocs api-token create --manage-operators)",
            )

    @app.get("/operators", tags=["operators"], response_model=list[m.Operator])
    async def list_operators(request: Request, who: Who) -> Any:
        return [operator_doc(op) for op in await operators.list_operators(pool_of(request))]

    @app.get(
        "/operators/{name}",
        tags=["operators"],
        response_model=m.Operator,
        responses=problem_responses("not-found"),
        summary="An operator's allowances and today's credit/refund usage",
    )
    async def get_operator(request: Request, who: Who, name: NAME) -> Any:
        return operator_doc(await operators.get_operator(pool_of(request), name))

    @app.post(
        "/operators",
        tags=["operators"],
        status_code=201,
        response_model=m.Operator,
        responses=problem_responses("forbidden", "conflict"),
    )
    async def create_operator(request: Request, who: Who, body: m.OperatorCreate) -> Any:
        may_manage(who)
        async with pool_of(request).acquire() as conn:
            await operators.create_operator(conn, body.name, operator_settings(body))
            op = await operators.get_operator(conn, body.name)
        return JSONResponse(operator_doc(op).model_dump(mode="json"), status_code=201)

    @app.patch(
        "/operators/{name}",
        tags=["operators"],
        response_model=m.Operator,
        responses=problem_responses("forbidden", "not-found"),
    )
    async def update_operator(request: Request, who: Who, name: NAME, body: m.OperatorIn) -> Any:
        may_manage(who)
        async with pool_of(request).acquire() as conn:
            await operators.update_operator(conn, name, operator_settings(body))
            return operator_doc(await operators.get_operator(conn, name))

    # --- prepaid services ---------------------------------------------------------------------

    def service_doc(s: prepaid.PrepaidService) -> m.PrepaidService:
        return m.PrepaidService(
            account=s.account,
            name=s.name,
            amount=money(s.amount),
            period_days=s.period_days,
            start=s.start,
            grace_s=int(s.grace.total_seconds()),
            next_charge_at=s.next_charge_at,
            active=s.active,
            unpaid=money(s.unpaid),
        )

    @app.get("/prepaid-services", tags=["prepaid"], response_model=list[m.PrepaidService])
    async def all_services(request: Request, who: Who) -> Any:
        return [service_doc(s) for s in await prepaid.list_prepaid_services(pool_of(request))]

    @app.get(
        "/accounts/{account}/prepaid-services",
        tags=["prepaid"],
        response_model=list[m.PrepaidService],
        responses=problem_responses("not-found"),
    )
    async def services(request: Request, who: Who, account: ACCOUNT) -> Any:
        db = pool_of(request)
        await admin.account_id(db, account)
        return [service_doc(s) for s in await prepaid.list_prepaid_services(db, account)]

    @app.post(
        "/accounts/{account}/prepaid-services",
        tags=["prepaid"],
        status_code=201,
        response_model=m.PrepaidService,
        responses=problem_responses("not-found", "conflict"),
        summary="Charge the account an amount in advance every period",
    )
    async def add_service(
        request: Request, who: Who, account: ACCOUNT, body: m.PrepaidIn, key: IDEMPOTENCY_KEY = None
    ) -> Any:
        async def act(conn: asyncpg.Connection) -> tuple[int, dict[str, Any]]:
            period_days = parse_every(body.every)
            grace = parse_duration(body.grace) if body.grace else timedelta(0)
            start = None
            if body.start is not None:
                zone = await admin.account_time_zone(conn, account)
                start = parse_until(body.start, await admin.database_now(conn), zone, what="start")
            await prepaid.add_prepaid_service(
                conn,
                account,
                body.name,
                parse_money(body.amount),
                period_days=period_days,
                start=start,
                grace=grace,
                operator=who.operator,
                changed_by=by(who),
            )
            found = await prepaid.list_prepaid_services(conn, account)
            doc = next(service_doc(s) for s in found if s.name == body.name)
            return 201, doc.model_dump(mode="json")

        return await changing(request, who, key, act)

    @app.delete(
        "/accounts/{account}/prepaid-services/{service}",
        tags=["prepaid"],
        response_model=m.PrepaidService,
        responses=problem_responses("not-found"),
        summary="Stop charging a service (charges already made stay)",
    )
    async def stop_service(request: Request, who: Who, account: ACCOUNT, service: NAME) -> Any:
        async with pool_of(request).acquire() as conn:
            await prepaid.stop_prepaid_service(conn, account, service)
            found = await prepaid.list_prepaid_services(conn, account)
        return next(service_doc(s) for s in found if s.name == service)

    @app.post(
        "/prepaid-runs",
        tags=["prepaid"],
        response_model=m.PrepaidRun,
        summary="Charge every due period now (as `ocs prepaid run`)",
    )
    async def prepaid_run(request: Request, who: Who) -> Any:
        done = await prepaid.run_prepaid_periods(pool_of(request))
        return m.PrepaidRun(charged=done.charged, blocked=done.blocked, unblocked=done.unblocked)

    # --- outbox and CDRs ----------------------------------------------------------------------

    @app.get("/outbox", tags=["outbox"], response_model=m.OutboxPage, summary="Newest first")
    async def list_outbox(
        request: Request,
        who: Who,
        pending: bool = False,
        limit: page = 100,
        cursor: cursor_q = None,
    ) -> Any:
        before = decode_cursor(cursor)
        if before is not None and not isinstance(before, int):
            raise ApiProblem("invalid-request", "cursor is not one this API gave")
        rows = await outbox.list_outbox(
            pool_of(request), pending=pending, limit=limit, before=before
        )
        items = [
            m.OutboxEvent(
                id=e.id,
                created_at=e.created_at,
                topic=e.topic,
                account=e.account,
                attempts=e.attempts,
                state=e.state,  # type: ignore[arg-type]
                delivered_at=e.delivered_at,
                last_error=e.last_error,
                payload=e.payload,
            )
            for e in rows
        ]
        return m.OutboxPage(
            items=items, next_cursor=encode_cursor(rows[-1].id) if len(rows) == limit else None
        )

    async def cdr_listing(
        request: Request,
        *,
        account: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> m.CdrPage:
        key = decode_cursor(cursor)
        after = None
        if key is not None:
            try:
                after = (datetime.fromisoformat(key[0]), int(key[1]))
            except (TypeError, ValueError, IndexError, KeyError):
                raise ApiProblem("invalid-request", "cursor is not one this API gave") from None
        rows = await cdr_page(
            pool_of(request),
            since=utc(since),
            until=utc(until),
            account=account,
            after=after,
            limit=limit,
        )
        next_cursor = None
        if len(rows) == limit:
            next_cursor = encode_cursor([rows[-1].ended_at.isoformat(), rows[-1].cdr_id])
        return m.CdrPage(items=[m.Cdr(**cdr_record(c)) for c in rows], next_cursor=next_cursor)

    since_q = Annotated[datetime | None, Query(description="sessions that ended at or after")]
    until_q = Annotated[datetime | None, Query(description="sessions that ended before")]

    @app.get(
        "/cdrs",
        tags=["usage"],
        response_model=m.CdrPage,
        responses=problem_responses("not-found"),
        summary="CDRs: every closed session, oldest end first",
    )
    async def cdrs(
        request: Request,
        who: Who,
        *,
        since: since_q = None,
        until: until_q = None,
        account: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        limit: page = 100,
        cursor: cursor_q = None,
    ) -> Any:
        return await cdr_listing(
            request, account=account, since=since, until=until, limit=limit, cursor=cursor
        )

    @app.get(
        "/accounts/{account}/usage",
        tags=["usage"],
        response_model=m.CdrPage,
        responses=problem_responses("not-found"),
        summary="The account's CDRs, oldest end first",
    )
    async def usage(
        request: Request,
        who: Who,
        account: ACCOUNT,
        *,
        since: since_q = None,
        until: until_q = None,
        limit: page = 100,
        cursor: cursor_q = None,
    ) -> Any:
        return await cdr_listing(
            request, account=account, since=since, until=until, limit=limit, cursor=cursor
        )

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi  # noqa: PLC0415

            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document(who: Who) -> JSONResponse:
        return JSONResponse(app.openapi())

    return app
