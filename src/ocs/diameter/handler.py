"""Credit control (RFC 4006, 3GPP Gy/Ro): a parsed CCR through the charging pipeline to CCA bytes.

Rules of this file:
- The transport (``server``) calls ``answer_now`` first: it never awaits and answers what needs
  no database (a CCR-Initial decided from the cache, a CCR-Update or CCR-Termination that reports
  no new usage). When it returns None the transport awaits ``answer`` in a task of its own.
- Only translation lives here: identities from Subscription-Id / User-Name, units from
  Requested-Service-Unit, decisions to Result-Codes. Credit rules are the core's, usage
  recording is the pipeline's; nothing here knows SQL or balances.
- Usage is acknowledged only after ``Charging.record_usage`` returns. Used-Service-Unit carries
  the usage since the previous report (RFC 4006 §8.19); the store rates a session's cumulative
  totals, so the cumulative figures are kept per session, per CC-Request-Number: a repeated
  request reports the same totals again and the idempotency key (Session-Id, CC-Request-Number)
  makes the store charge it once.
- When the database or the spool cannot take usage the answer is 3004 DIAMETER_TOO_BUSY, never
  a success: the client retries (with the T flag) or fails over.
- Identities are checked before any lookup (``ocs.core.identity``): a CCR whose every
  identity cannot be one (a NUL, control characters, too long) is answered 5030
  DIAMETER_USER_UNKNOWN and counted by cause; a value the database still refuses as data
  (``SourceRefused``) is answered 5012, never taken for the database being down.
- Every credit-control session expires: one with no request for ``tcc_s`` is closed here (its
  usage so far recorded as final), so a lost CCR-Termination cannot hold credit forever.
- REFUND_ACCOUNT credits the price of the requested units back to the account (a ledger
  credit with no operator, idempotent per Session-Id and CC-Request-Number).
- A CCR-Update or CCR-Termination for a session this process does not know (it restarted, or
  another instance started it) is carried on from the session's usage recorded in the database;
  only a session the database does not have open gets 5002.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ocs.charging.pipeline import (
    Charging,
    SourceRefused,
    SourceUnavailable,
    SpoolFull,
    UsageReport,
    grant_cost,
)
from ocs.core.credit import available_credit, continue_session
from ocs.core.identity import IdentityError, IdentityKind, IdentityProblem, normalize_identity
from ocs.core.model import (
    AccountStatus,
    CreditDecision,
    RefusalReason,
    ServiceUnit,
    SessionRequest,
    Usage,
)
from ocs.core.rating import usage_charge
from ocs.diameter.codec import (
    AVP_REQUESTED_ACTION,
    DIAMETER_CREDIT_LIMIT_REACHED,
    DIAMETER_END_USER_SERVICE_DENIED,
    DIAMETER_SUCCESS,
    DIAMETER_TOO_BUSY,
    DIAMETER_UNABLE_TO_COMPLY,
    DIAMETER_UNKNOWN_SESSION_ID,
    DIAMETER_USER_UNKNOWN,
    MissingAvp,
    build_error_answer,
)
from ocs.diameter.credit_control import (
    CcaEncoder,
    CheckBalanceResult,
    CostInformation,
    CreditControlRequest,
    FinalUnitAction,
    Mscc,
    MsccAnswer,
    RequestedAction,
    RequestType,
    ServiceUnits,
)

log = logging.getLogger("ocs.diameter")

SOURCE: Final = "diameter"
ISO_4217_NO_CURRENCY: Final = 999  # "XXX": amounts are in the account's own currency

# Subscription-Id-Type (RFC 4006 §8.47) → the identity kinds accounts are found by.
SUBSCRIPTION_ID_KINDS: Final[dict[int, IdentityKind]] = {
    0: IdentityKind.E164,
    1: IdentityKind.IMSI,
    2: IdentityKind.SIP_URI,
    3: IdentityKind.NAI,
    4: IdentityKind.PRIVATE,
}

# A refused new session → its Result-Code (RFC 4006 §9).
REFUSAL_RESULT_CODES: Final[dict[RefusalReason, int]] = {
    RefusalReason.UNKNOWN_ACCOUNT: DIAMETER_USER_UNKNOWN,
    RefusalReason.INSUFFICIENT_CREDIT: DIAMETER_CREDIT_LIMIT_REACHED,
    RefusalReason.BLOCKED: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.CLOSED: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.TOO_MANY_SESSIONS: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.SETUP_RATE_EXCEEDED: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.CREDIT_DATA_UNAVAILABLE: DIAMETER_UNABLE_TO_COMPLY,
}

COMMAND_LABELS: Final[dict[RequestType, str]] = {
    RequestType.INITIAL: "CCR-I",
    RequestType.UPDATE: "CCR-U",
    RequestType.TERMINATION: "CCR-T",
    RequestType.EVENT: "CCR-E",
}

_REPORTED_KEPT: Final = 8  # cumulative totals kept per session for repeated request numbers
_CLOSED_KEPT: Final = 100_000  # recently terminated sessions, for a repeated CCR-T
# ... for this long (seconds): a client repeats a CCR-T within its Tx timer (RFC 4006 §13,
# seconds), so keeping them longer only grows memory under steady traffic (the soak).
_CLOSED_KEPT_S: Final = 120.0

# Counts one answered CCR: (command label, Result-Code, the MSCC Result-Codes).
ResultCounter = Callable[[str, int, tuple[int, ...]], None]


def _no_count(command: str, result_code: int, mscc_codes: tuple[int, ...]) -> None:
    return None


def _no_invalid_count(problem: IdentityProblem) -> None:
    return None


@dataclass(slots=True, kw_only=True)
class CcSession:
    """One credit-control session between CCR-Initial and CCR-Termination (or Tcc)."""

    session_id: str
    origin: str  # the client's Origin-Host
    account_id: int
    kind: IdentityKind
    identity: str
    book_key: str
    unit: ServiceUnit
    expires_at: float  # monotonic: Tcc
    seconds: int = 0
    octets: int = 0
    events: int = 0
    recorded: bool = False  # something was written to the store for this session
    reported: dict[int, Usage] = field(default_factory=dict)  # request number → totals

    def totals_for(self, request_number: int, increment: Usage) -> Usage:
        """The cumulative usage after request ``request_number`` (the same for a repeat)."""
        known = self.reported.get(request_number)
        if known is not None:
            return known
        self.seconds += increment.seconds
        self.octets += increment.octets
        self.events += increment.events
        totals = Usage(seconds=self.seconds, octets=self.octets, events=self.events)
        self.reported[request_number] = totals
        if len(self.reported) > _REPORTED_KEPT:
            del self.reported[min(self.reported)]
        return totals


def subscriber_identities(
    request: CreditControlRequest, refused: list[IdentityProblem] | None = None
) -> list[tuple[IdentityKind, str]]:
    """Every usable identity of the CCR, in order: Subscription-Ids, then User-Name. Why each
    unusable one was refused is appended to ``refused`` when given."""
    found: list[tuple[IdentityKind, str]] = []
    candidates: list[tuple[IdentityKind, str]] = []
    for id_type, data in request.subscription_ids:
        kind = SUBSCRIPTION_ID_KINDS.get(int(id_type))
        if kind is not None:
            candidates.append((kind, data))
    if request.user_name:
        candidates.append((IdentityKind.USER_NAME, request.user_name))
    for kind, data in candidates:
        try:
            found.append((kind, normalize_identity(kind, data)))
        except IdentityError as exc:
            if refused is not None:
                refused.append(exc.problem)
    return found


def unit_of(units: ServiceUnits | None, default: ServiceUnit = ServiceUnit.TIME) -> ServiceUnit:
    """The unit a client asks for: octets → volume, CC-Time → time, service units → events."""
    if units is None:
        return default
    if (
        units.total_octets is not None
        or units.input_octets is not None
        or units.output_octets is not None
    ):
        return ServiceUnit.VOLUME
    if units.time_s is not None:
        return ServiceUnit.TIME
    if units.service_specific is not None:
        return ServiceUnit.EVENT
    return default


def requested_amount(units: ServiceUnits | None, unit: ServiceUnit) -> int | None:
    """How many seconds, bytes or events were asked for (None: "whatever you grant")."""
    if units is None:
        return None
    if unit is ServiceUnit.TIME:
        return units.time_s or None
    if unit is ServiceUnit.VOLUME:
        if units.total_octets is not None:
            return units.total_octets or None
        both = (units.input_octets or 0) + (units.output_octets or 0)
        return both or None
    return units.service_specific or None


def granted_units(unit: ServiceUnit, amount: int) -> ServiceUnits:
    if unit is ServiceUnit.TIME:
        return ServiceUnits(time_s=min(amount, 0xFFFFFFFF))
    if unit is ServiceUnit.VOLUME:
        return ServiceUnits(total_octets=amount)
    return ServiceUnits(service_specific=amount)


def used_increment(request: CreditControlRequest) -> Usage:
    """Usage reported by this CCR: every Used-Service-Unit, top level and in every MSCC."""
    seconds = octets = events = 0
    reports = list(request.used_units)
    for mscc in request.multiple_services:
        reports.extend(mscc.used)
    for used in reports:
        seconds += used.time_s or 0
        if used.total_octets is not None:
            octets += used.total_octets
        else:
            octets += (used.input_octets or 0) + (used.output_octets or 0)
        events += used.service_specific or 0
    return Usage(seconds=seconds, octets=octets, events=events)


class CreditControl:
    """CCR → CCA for one daemon. Holds the running credit-control sessions."""

    def __init__(
        self,
        *,
        charging: Charging,
        origin_host: str,
        origin_realm: str,
        validity_time_s: int = 1800,
        tcc_s: float = 600.0,
        strict: bool = False,
        currency_code: int = ISO_4217_NO_CURRENCY,
        count: ResultCounter = _no_count,
        count_invalid: Callable[[IdentityProblem], None] = _no_invalid_count,
    ) -> None:
        self.charging = charging
        self.count_invalid = count_invalid
        self.encoder = CcaEncoder(origin_host=origin_host, origin_realm=origin_realm)
        self.validity_time_s = validity_time_s or None
        self.tcc_s = tcc_s
        self.strict = strict
        self.currency_code = currency_code
        self.count = count
        self.encoder_origin = (origin_host, origin_realm)
        self.sessions: dict[str, CcSession] = {}
        # (last CC-Request-Number, Result-Code, closed at monotonic), oldest first
        self._closed: OrderedDict[str, tuple[int, int, float]] = OrderedDict()

    # --- entry points ---------------------------------------------------------------------

    def answer_now(self, request: CreditControlRequest) -> bytes | None:
        """The CCA when no database work is needed, else None (then await ``answer``)."""
        kind = request.request_type
        if kind is RequestType.INITIAL:
            return self._initial_cached(request)
        if kind is RequestType.UPDATE or kind is RequestType.TERMINATION:
            session = self.sessions.get(request.session_id)
            if session is None:
                if self._repeated_termination(request):
                    return self._no_session(request)
                return None  # perhaps open in the database (we restarted): ask it
            increment = used_increment(request)
            if not increment.is_empty or request.request_number in session.reported:
                return None  # usage to record (or a repeat of a request that had some)
            if kind is RequestType.UPDATE:
                session.totals_for(request.request_number, increment)
                return self._update_answer(request, session)
            if not session.recorded and session.seconds == session.octets == session.events == 0:
                return self._terminate_unrecorded(request, session)
            return None
        if request.requested_action is None:  # CCR-Event
            error = MissingAvp(AVP_REQUESTED_ACTION, where="a CCR-Event")
            self.count("CCR-E", error.result_code, ())
            return build_error_answer(
                request.raw_header,
                origin_host=self.encoder_origin[0],
                origin_realm=self.encoder_origin[1],
                result_code=error.result_code,
                failed_avp=error.failed_avp,
                error_message=str(error),
                session_id=request.session_id,
                proxy_infos=request.proxy_infos,
            )
        return None

    async def answer(self, request: CreditControlRequest) -> bytes:
        """The CCA, awaiting the pipeline (cache misses, usage recording, events)."""
        try:
            kind = request.request_type
            if kind is RequestType.INITIAL:
                return await self._initial(request)
            if kind is RequestType.EVENT:
                return await self._event(request)
            session = self.sessions.get(request.session_id)
            if session is None and not self._repeated_termination(request):
                session = await self._adopt(request)
            if session is None:
                return self._no_session(request)
            if kind is RequestType.UPDATE:
                return await self._update(request, session)
            return await self._terminate(request, session)
        except (SourceUnavailable, SpoolFull) as exc:
            log.warning(
                "diameter: %s not answered with success (%s): %s",
                COMMAND_LABELS[request.request_type],
                type(exc).__name__,
                exc,
            )
            return self._answer(request, DIAMETER_TOO_BUSY)
        except SourceRefused as exc:
            # A value of this request the database refuses as data: not an outage.
            log.warning(
                "diameter: %s refused by the database as data: %s",
                COMMAND_LABELS[request.request_type],
                exc,
            )
            return self._answer(request, DIAMETER_UNABLE_TO_COMPLY)

    # --- CCR-Initial ----------------------------------------------------------------------

    def _identity(self, request: CreditControlRequest) -> tuple[IdentityKind, str] | None:
        refused: list[IdentityProblem] = []
        found = subscriber_identities(request, refused)
        if not found:
            for problem in refused:  # counted when they leave the request without a subscriber
                self.count_invalid(problem)
            return None
        account_for = self.charging.cache.account_for
        for kind, value in found:
            if account_for(kind, value) is not None:
                return kind, value
        return found[0]

    def _services(self, request: CreditControlRequest) -> list[tuple[Mscc | None, ServiceUnit]]:
        if request.multiple_services:
            default = unit_of(request.requested_unit)
            return [(m, unit_of(m.requested, default)) for m in request.multiple_services]
        return [(None, unit_of(request.requested_unit))]

    def _initial_cached(self, request: CreditControlRequest) -> bytes | None:
        identity = self._identity(request)
        if identity is None:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        services = self._services(request)
        mscc, unit = services[0]
        units = mscc.requested if mscc is not None else request.requested_unit
        key = self._book_key(request)
        running = self.sessions.get(request.session_id)
        if running is not None:
            # A second CCR-I for a running session (not a retransmission): start afresh.
            self._forget(running)
        first = self.charging.admit_cached(
            identity[0],
            identity[1],
            unit=unit,
            requested=requested_amount(units, unit),
            reservation_key=key,
        )
        if first is None:
            return None
        return self._initial_answer(request, identity, services, first, key)

    async def _initial(self, request: CreditControlRequest) -> bytes:
        identity = self._identity(request)
        if identity is None:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        services = self._services(request)
        mscc, unit = services[0]
        units = mscc.requested if mscc is not None else request.requested_unit
        key = self._book_key(request)
        running = self.sessions.get(request.session_id)
        if running is not None:
            # A second CCR-I for a running session (not a retransmission): start afresh.
            self._forget(running)
        first = await self.charging.admit(
            identity[0],
            identity[1],
            unit=unit,
            requested=requested_amount(units, unit),
            reservation_key=key,
        )
        return self._initial_answer(request, identity, services, first, key)

    def _initial_answer(
        self,
        request: CreditControlRequest,
        identity: tuple[IdentityKind, str],
        services: list[tuple[Mscc | None, ServiceUnit]],
        first: CreditDecision,
        key: str,
    ) -> bytes:
        validity = self.validity_time_s
        mscc, unit = services[0]
        if mscc is None:
            code = self._decision_code(first)
            if first.admitted:
                self._start(request, identity, unit, key)
                answer = self.encoder.build(
                    request,
                    result_code=code,
                    granted=granted_units(unit, first.granted_units),
                    validity_time_s=validity,
                )
            else:
                answer = self._refusal(request, code)
            self.count(COMMAND_LABELS[request.request_type], code, ())
            return answer
        if not first.admitted and first.reason is RefusalReason.UNKNOWN_ACCOUNT:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        decisions = [first]
        for other, other_unit in services[1:]:
            assert other is not None
            decision = self.charging.admit_cached(
                identity[0],
                identity[1],
                unit=other_unit,
                requested=requested_amount(other.requested, other_unit),
            )
            decisions.append(decision if decision is not None else first)
        answers = []
        for (service, service_unit), decision in zip(services, decisions, strict=True):
            assert service is not None
            code = self._decision_code(decision)
            answers.append(
                MsccAnswer(
                    result_code=code,
                    rating_group=service.rating_group,
                    service_identifier=service.service_identifier,
                    granted=(
                        granted_units(service_unit, decision.granted_units)
                        if decision.admitted
                        else None
                    ),
                    validity_time_s=validity if decision.admitted else None,
                )
            )
        admitted = any(d.admitted for d in decisions)
        code = DIAMETER_SUCCESS if admitted else answers[0].result_code
        if admitted:
            self._start(request, identity, unit, key)
        answer = self.encoder.build(request, result_code=code, mscc_answers=answers)
        self.count(
            COMMAND_LABELS[request.request_type], code, tuple(a.result_code for a in answers)
        )
        return answer

    def _start(
        self,
        request: CreditControlRequest,
        identity: tuple[IdentityKind, str],
        unit: ServiceUnit,
        key: str,
    ) -> None:
        charging = self.charging
        account_id = charging.cache.account_for(*identity)
        if account_id is None:
            return  # admitted by the stale policy without knowing the account: not tracked
        charging.session_started(
            SOURCE, request.origin_host, request.session_id, account_id, self.tcc_s
        )
        self.sessions[request.session_id] = CcSession(
            session_id=request.session_id,
            origin=request.origin_host,
            account_id=account_id,
            kind=identity[0],
            identity=identity[1],
            book_key=key,
            unit=unit,
            expires_at=charging.clock.mono() + self.tcc_s,
        )

    @staticmethod
    def _decision_code(decision: CreditDecision) -> int:
        if decision.admitted:
            return DIAMETER_SUCCESS
        assert decision.reason is not None
        return REFUSAL_RESULT_CODES[decision.reason]

    # --- CCR-Update -----------------------------------------------------------------------

    async def _update(self, request: CreditControlRequest, session: CcSession) -> bytes:
        totals = session.totals_for(request.request_number, used_increment(request))
        await self._record(request, session, totals, final=False)
        return self._update_answer(request, session)

    def _update_answer(self, request: CreditControlRequest, session: CcSession) -> bytes:
        charging = self.charging
        now = charging.clock.mono()
        session.expires_at = now + self.tcc_s
        charging.sessions.touch(
            session.book_key, now, self.tcc_s + charging.policy.session_ttl_margin_s
        )
        validity = self.validity_time_s
        if request.multiple_services:
            default = unit_of(request.requested_unit, session.unit)
            answers = []
            for mscc in request.multiple_services:
                unit = unit_of(mscc.requested, default)
                decision, final = self._next_grant(
                    session, unit, requested_amount(mscc.requested, unit)
                )
                code = self._decision_code(decision)
                answers.append(
                    MsccAnswer(
                        result_code=code,
                        rating_group=mscc.rating_group,
                        service_identifier=mscc.service_identifier,
                        granted=(
                            granted_units(unit, decision.granted_units)
                            if decision.admitted
                            else None
                        ),
                        validity_time_s=validity if decision.admitted else None,
                        final_unit_action=FinalUnitAction.TERMINATE if final else None,
                    )
                )
            self.count("CCR-U", DIAMETER_SUCCESS, tuple(a.result_code for a in answers))
            return self.encoder.build(request, result_code=DIAMETER_SUCCESS, mscc_answers=answers)
        unit = unit_of(request.requested_unit, session.unit)
        decision, final = self._next_grant(
            session, unit, requested_amount(request.requested_unit, unit)
        )
        code = self._decision_code(decision)
        self.count("CCR-U", code, ())
        if not decision.admitted:
            return self.encoder.build(request, result_code=code)
        return self.encoder.build(
            request,
            result_code=code,
            granted=granted_units(unit, decision.granted_units),
            validity_time_s=validity,
            final_unit_action=FinalUnitAction.TERMINATE if final else None,
        )

    def _next_grant(
        self, session: CcSession, unit: ServiceUnit, requested: int | None
    ) -> tuple[CreditDecision, bool]:
        """The next quota of a running session (never refused unless strict) and whether it is
        the final one (strict mode, the credit buys less than asked)."""
        charging = self.charging
        limits = charging.limits
        cap = {
            ServiceUnit.TIME: limits.max_time_s,
            ServiceUnit.VOLUME: limits.max_volume_bytes,
            ServiceUnit.EVENT: limits.max_events,
        }[unit]
        if requested:
            cap = min(cap, requested)
        cached = charging.cache.get(session.account_id)
        if cached is None:
            decision = CreditDecision(
                admitted=True,
                reason=None,
                unit=unit,
                granted_units=cap,
                available=0,
                effective_limit=0,
            )
            return decision, False
        snapshot = cached
        now = charging.clock.mono()
        ttl = self.tcc_s + charging.policy.session_ttl_margin_s
        book = charging.sessions
        book.reserve(session.book_key, session.account_id, 0, now, ttl)  # not our own hold
        decision = continue_session(
            snapshot,
            SessionRequest(
                unit=unit, requested_units=requested, reserved=book.reserved(session.account_id)
            ),
            charging.clock.wall(),
            limits,
            strict=self.strict,
        )
        if decision.admitted:
            cost = grant_cost(snapshot.tariff, unit, decision.granted_units, new_session=False)
            book.reserve(session.book_key, session.account_id, cost, now, ttl)
        final = self.strict and decision.admitted and decision.granted_units < cap
        return decision, final

    # --- CCR-Termination ------------------------------------------------------------------

    async def _terminate(self, request: CreditControlRequest, session: CcSession) -> bytes:
        totals = session.totals_for(request.request_number, used_increment(request))
        if totals.is_empty and not session.recorded:
            return self._terminate_unrecorded(request, session)
        await self._record(
            request, session, totals, final=True, reason=_close_reason(request.termination_cause)
        )
        return self._terminated(request, session)

    def _terminate_unrecorded(self, request: CreditControlRequest, session: CcSession) -> bytes:
        # Nothing was used and nothing was written: there is nothing to make durable.
        self.charging.sessions.end(session.book_key)
        return self._terminated(request, session)

    def _terminated(self, request: CreditControlRequest, session: CcSession) -> bytes:
        self.sessions.pop(session.session_id, None)
        closed = self._closed
        now = self.charging.clock.mono()
        closed[session.session_id] = (request.request_number, DIAMETER_SUCCESS, now)
        if len(closed) > _CLOSED_KEPT:
            closed.popitem(last=False)
        while closed and next(iter(closed.values()))[2] < now - _CLOSED_KEPT_S:
            closed.popitem(last=False)
        self.count("CCR-T", DIAMETER_SUCCESS, ())
        return self.encoder.build(request, result_code=DIAMETER_SUCCESS)

    def _repeated_termination(self, request: CreditControlRequest) -> bool:
        closed = self._closed.get(request.session_id)
        return (
            closed is not None
            and request.request_type is RequestType.TERMINATION
            and closed[0] == request.request_number
        )

    async def _adopt(self, request: CreditControlRequest) -> CcSession | None:
        """A CCR-U/T for a session this process does not know: if the database has it open
        (this daemon restarted, or another instance started it), carry on from its recorded
        usage instead of answering 5002, so nothing reported later is lost."""
        found = await self.charging.open_session(SOURCE, request.origin_host, request.session_id)
        if found is None:
            return None
        identity = self._identity(request)
        unit = unit_of(
            request.requested_unit or request.used_units[0] if request.used_units else None
        )
        key = self._book_key(request)
        self.charging.session_started(
            SOURCE, request.origin_host, request.session_id, found.account_id, self.tcc_s
        )
        session = CcSession(
            session_id=request.session_id,
            origin=request.origin_host,
            account_id=found.account_id,
            kind=identity[0] if identity is not None else IdentityKind.USER_NAME,
            identity=identity[1] if identity is not None else "",
            book_key=key,
            unit=unit,
            expires_at=self.charging.clock.mono() + self.tcc_s,
            seconds=found.usage.seconds,
            octets=found.usage.octets,
            events=found.usage.events,
            recorded=True,
        )
        self.sessions[request.session_id] = session
        log.info("diameter: session resumed from the database origin=%s", request.origin_host)
        return session

    def _no_session(self, request: CreditControlRequest) -> bytes:
        closed = self._closed.get(request.session_id)
        if (
            closed is not None
            and request.request_type is RequestType.TERMINATION
            and closed[0] == request.request_number
        ):
            # The same CCR-T again (a new message, not a T-flagged retransmission): it was
            # recorded the first time; answer as then, charge nothing.
            self.count("CCR-T", closed[1], ())
            return self.encoder.build(request, result_code=closed[1])
        return self._answer(request, DIAMETER_UNKNOWN_SESSION_ID)

    # --- usage ----------------------------------------------------------------------------

    async def _record(
        self,
        request: CreditControlRequest | None,
        session: CcSession,
        totals: Usage,
        *,
        final: bool,
        reason: str | None = None,
        key_suffix: str | None = None,
    ) -> None:
        charging = self.charging
        snapshot = charging.cache.get(session.account_id)
        if snapshot is None:
            snapshot = (
                await charging.account(session.kind, session.identity)
                if session.identity
                else await charging.source.load_account(session.account_id)
            )
        if snapshot is None:
            raise SourceUnavailable(f"account of session {session.session_id!r} not found")
        if key_suffix is not None:
            suffix = key_suffix
        else:
            assert request is not None
            suffix = str(request.request_number)
        occurred = (
            request.event_timestamp
            if request is not None and request.event_timestamp is not None
            else charging.clock.wall()
        )
        report = UsageReport(
            source=SOURCE,
            origin=session.origin,
            session_key=session.session_id,
            account_id=session.account_id,
            idempotency_key=f"{SOURCE}|{session.session_id}|{suffix}",
            usage=totals,
            final=final,
            occurred_at=occurred,
            close_reason=reason if final else None,
        )
        await charging.record_usage(report, snapshot.tariff)
        session.recorded = True

    # --- CCR-Event ------------------------------------------------------------------------

    async def _event(self, request: CreditControlRequest) -> bytes:
        action = request.requested_action
        if action is None:
            answer = self.answer_now(request)
            assert answer is not None
            return answer
        identity = self._identity(request)
        snapshot = await self.charging.account(*identity) if identity is not None else None
        if snapshot is None or identity is None:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        services = self._services(request)
        mscc, unit = services[0]
        units = mscc.requested if mscc is not None else request.requested_unit
        amount = requested_amount(units, unit) or 1
        usage = _usage(unit, amount)
        if action is RequestedAction.REFUND_ACCOUNT:
            # The price of the units is credited back, once per Session-Id and request number.
            refund = usage_charge(snapshot.tariff, usage)
            await self.charging.credit(
                snapshot.account_id,
                refund,
                f"{SOURCE}-refund|{request.session_id}|{request.request_number}",
                "diameter REFUND_ACCOUNT",
            )
            self.count("CCR-E", DIAMETER_SUCCESS, ())
            return self.encoder.build(
                request,
                result_code=DIAMETER_SUCCESS,
                cost_information=CostInformation(
                    value_digits=refund, exponent=-6, currency_code=self.currency_code
                ),
            )
        if action is RequestedAction.PRICE_ENQUIRY:
            cost = usage_charge(snapshot.tariff, usage)
            self.count("CCR-E", DIAMETER_SUCCESS, ())
            return self.encoder.build(
                request,
                result_code=DIAMETER_SUCCESS,
                cost_information=CostInformation(
                    value_digits=cost, exponent=-6, currency_code=self.currency_code
                ),
            )
        if snapshot.status is not AccountStatus.ACTIVE:
            return self._answer(request, DIAMETER_END_USER_SERVICE_DENIED)
        if action is RequestedAction.CHECK_BALANCE:
            now = self.charging.clock.wall()
            reserved = self.charging.sessions.reserved(snapshot.account_id)
            enough = available_credit(snapshot, now, reserved) > 0
            self.count("CCR-E", DIAMETER_SUCCESS, ())
            return self.encoder.build(
                request,
                result_code=DIAMETER_SUCCESS,
                check_balance_result=(
                    CheckBalanceResult.ENOUGH_CREDIT if enough else CheckBalanceResult.NO_CREDIT
                ),
            )
        # DIRECT_DEBITING: the event is admitted like a new session, then charged at once.
        decision = await self.charging.admit(*identity, unit=unit, requested=amount)
        if not decision.admitted:
            return self._answer(request, self._decision_code(decision))
        if decision.granted_units < amount:
            return self._answer(request, DIAMETER_CREDIT_LIMIT_REACHED)
        report = UsageReport(
            source=SOURCE,
            origin=request.origin_host,
            session_key=request.session_id,
            account_id=snapshot.account_id,
            idempotency_key=f"{SOURCE}|{request.session_id}|{request.request_number}",
            usage=usage,
            final=True,
            occurred_at=request.event_timestamp or self.charging.clock.wall(),
            close_reason="event",
        )
        outcome = await self.charging.record_usage(report, snapshot.tariff)
        self.count("CCR-E", DIAMETER_SUCCESS, ())
        return self.encoder.build(
            request,
            result_code=DIAMETER_SUCCESS,
            granted=granted_units(unit, amount),
            cost_information=CostInformation(
                value_digits=outcome.charged, exponent=-6, currency_code=self.currency_code
            ),
        )

    # --- Tcc ------------------------------------------------------------------------------

    def expired(self, now: float) -> list[CcSession]:
        """Sessions with no request for ``tcc_s``, removed from the running set."""
        gone = [s for s in self.sessions.values() if s.expires_at <= now]
        for session in gone:
            del self.sessions[session.session_id]
        return gone

    async def close_expired(self, session: CcSession) -> None:
        """Close a session that Tcc ended: its usage so far becomes final."""
        totals = Usage(seconds=session.seconds, octets=session.octets, events=session.events)
        if session.recorded or not totals.is_empty:
            try:
                await self._record(
                    None, session, totals, final=True, reason="tcc_expired", key_suffix="tcc"
                )
            except (SourceUnavailable, SpoolFull) as exc:
                # Everything reported was recorded by its own CCR; only the close is lost.
                log.warning("diameter: Tcc close of a session not recorded: %s", exc)
        self.charging.sessions.end(session.book_key)
        log.info("diameter: session closed by Tcc origin=%s", session.origin)

    # --- helpers --------------------------------------------------------------------------

    def _book_key(self, request: CreditControlRequest) -> str:
        return Charging.book_key(SOURCE, request.origin_host, request.session_id)

    def _forget(self, session: CcSession) -> None:
        self.sessions.pop(session.session_id, None)
        self.charging.sessions.end(session.book_key)

    def _refusal(self, request: CreditControlRequest, code: int) -> bytes:
        return self.encoder.build(request, result_code=code)

    def _answer(self, request: CreditControlRequest, code: int) -> bytes:
        self.count(COMMAND_LABELS[request.request_type], code, ())
        return self.encoder.build(request, result_code=code)


def _usage(unit: ServiceUnit, amount: int) -> Usage:
    if unit is ServiceUnit.TIME:
        return Usage(seconds=amount)
    if unit is ServiceUnit.VOLUME:
        return Usage(octets=amount)
    return Usage(events=amount)


def _close_reason(termination_cause: int | None) -> str:
    return f"termination_cause_{termination_cause}" if termination_cause else "ccr_t"
