"""Credit control (RFC 4006, 3GPP Gy/Ro): a parsed CCR through the charging pipeline to CCA bytes.

Rules of this file:
- Only translation lives here: identities from Subscription-Id / User-Name, services and units
  from Multiple-Services-Credit-Control and Requested-Service-Unit, usage from
  Used-Service-Unit, decisions to Result-Codes. Grants, prices, holds, session totals and
  timers are the pipeline's (``ocs.charging.pipeline.Charging``); which generation a report
  belongs to and whether it is a repeat is the store's ledger's. Nothing here knows SQL or
  balances.
- The session's states and what each request does in each are ``ocs.diameter.cc_state``'s
  table (RFC 4006 §7, with its deliberate departures).
- The transport (``server``) calls ``answer_now`` first: it never awaits and answers what
  needs no database (a CCR-Initial decided from the cache, a CCR-Update or CCR-Termination of a
  session running here that reports no usage). When it returns None the transport awaits
  ``answer`` in a task of its own.
- Usage is acknowledged only after the pipeline made it durable. Used-Service-Unit carries the
  usage since the previous report (RFC 4006 §8.19); a report is known again by its
  (Session-Id, CC-Request-Number) within its generation and by its End-to-End-Identifier at
  any age, so a retransmission is never charged twice, whenever it comes.
- When the database or the spool cannot take usage the answer is 3004 DIAMETER_TOO_BUSY, never
  a success: the client retries (with the T flag) or fails over.
- Identities are checked before any lookup (``ocs.core.identity``): a CCR whose every
  identity cannot be one (a NUL, control characters, too long) is answered 5030
  DIAMETER_USER_UNKNOWN and counted by cause; a value the database still refuses as data
  (``SourceRefused``) is answered 5012, never taken for the database being down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from ocs.charging.errors import SourceRefused, SourceUnavailable, SpoolFull
from ocs.charging.pipeline import (
    CalledNumber,
    Charging,
    LiveSession,
    SessionId,
    UnknownSession,
)
from ocs.core.identity import (
    INTERNATIONAL,
    DialPlan,
    IdentityError,
    IdentityKind,
    IdentityProblem,
    normalize_identity,
)
from ocs.core.ledger import NO_USAGE, Counting, ReportKind
from ocs.core.model import (
    AccountSnapshot,
    AccountStatus,
    CreditDecision,
    RefusalReason,
    ServiceUnit,
    Usage,
)
from ocs.diameter.cc_state import CcAction, CcEvent, CcState, transition
from ocs.diameter.codec import (
    AVP_REQUESTED_ACTION,
    DIAMETER_CREDIT_LIMIT_REACHED,
    DIAMETER_END_USER_SERVICE_DENIED,
    DIAMETER_RATING_FAILED,
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
    RefusalReason.CREDIT_HELD: DIAMETER_CREDIT_LIMIT_REACHED,
    RefusalReason.BLOCKED: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.CLOSED: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.TOO_MANY_SESSIONS: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.SETUP_RATE_EXCEEDED: DIAMETER_END_USER_SERVICE_DENIED,
    RefusalReason.CREDIT_DATA_UNAVAILABLE: DIAMETER_UNABLE_TO_COMPLY,
    RefusalReason.BAD_CREDENTIAL: DIAMETER_END_USER_SERVICE_DENIED,  # never from a CCR
    RefusalReason.NO_RATE: DIAMETER_RATING_FAILED,
}

COMMAND_LABELS: Final[dict[RequestType, str]] = {
    RequestType.INITIAL: "CCR-I",
    RequestType.UPDATE: "CCR-U",
    RequestType.TERMINATION: "CCR-T",
    RequestType.EVENT: "CCR-E",
}

_EVENTS: Final[dict[RequestType, CcEvent]] = {
    RequestType.INITIAL: CcEvent.CCR_INITIAL,
    RequestType.UPDATE: CcEvent.CCR_UPDATE,
    RequestType.TERMINATION: CcEvent.CCR_TERMINATION,
    RequestType.EVENT: CcEvent.CCR_EVENT,
}

# Counts one answered CCR: (command label, Result-Code, the MSCC Result-Codes).
ResultCounter = Callable[[str, int, tuple[int, ...]], None]

Service = tuple[Mscc | None, ServiceUnit]


def _no_count(command: str, result_code: int, mscc_codes: tuple[int, ...]) -> None:
    return None


def _no_invalid_count(problem: IdentityProblem) -> None:
    return None


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
    if not request.used_units and not request.multiple_services:
        return NO_USAGE  # a CCR-I, or a CCR-T with nothing to report
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


def _close_reason(termination_cause: int | None) -> str:
    return f"termination_cause_{termination_cause}" if termination_cause else "ccr_t"


class CreditControl:
    """CCR → CCA for one daemon: a translator between the wire and the session API."""

    def __init__(
        self,
        *,
        charging: Charging,
        origin_host: str,
        origin_realm: str,
        validity_time_s: int = 1800,
        tcc_s: float = 600.0,
        currency_code: int = ISO_4217_NO_CURRENCY,
        count: ResultCounter = _no_count,
        count_invalid: Callable[[IdentityProblem], None] = _no_invalid_count,
        dial_plan: DialPlan = INTERNATIONAL,
    ) -> None:
        self.charging = charging
        self.count_invalid = count_invalid
        self.encoder = CcaEncoder(origin_host=origin_host, origin_realm=origin_realm)
        self.validity_time_s = validity_time_s or None
        self.tcc_s = tcc_s
        self.currency_code = currency_code
        self.count = count
        self.encoder_origin = (origin_host, origin_realm)
        self.dial_plan = dial_plan  # how called numbers are written (rating by destination)
        # A session lives at least as long as its Validity-Time and Tcc (plus the margin).
        self._least_life_s = max(float(self.validity_time_s or 0), tcc_s)

    # --- entry points ---------------------------------------------------------------------

    def answer_now(self, request: CreditControlRequest) -> bytes | None:
        """The CCA when no database work is needed, else None (then await ``answer``)."""
        kind = request.request_type
        if kind is RequestType.EVENT:
            if request.requested_action is None:
                return self._missing_action(request)
            return None
        ref = self._ref(request)
        session = self.charging.live.get(ref.book_key)
        action = transition(self._state(session), _EVENTS[kind]).action
        if action is CcAction.SUPERSEDE_AND_ADMIT:
            assert session is not None
            self.charging.supersede(session)
            return self._initial(request, ref)
        if action is CcAction.ADMIT:
            return self._initial(request, ref)
        if session is None or not used_increment(request).is_empty:
            return None  # the store must place it, or there is usage to make durable
        if action is CcAction.CONTINUE:
            return self._grant_answer(request, session)
        if action is CcAction.TERMINATE:
            self.charging.end_unreported(session, request_number=request.request_number)
            return self._answer(request, DIAMETER_SUCCESS)
        return None

    async def answer(self, request: CreditControlRequest) -> bytes:
        """The CCA, awaiting the pipeline (cache misses, usage recording, events)."""
        try:
            kind = request.request_type
            if kind is RequestType.EVENT:
                return await self._event(request)
            ref = self._ref(request)
            session = self.charging.live.get(ref.book_key)
            action = transition(self._state(session), _EVENTS[kind]).action
            if action in (CcAction.ADMIT, CcAction.SUPERSEDE_AND_ADMIT):
                if session is not None:
                    self.charging.supersede(session)
                answer = self._initial(request, ref)
                if answer is not None:
                    return answer
                return await self._initial_slow(request, ref)
            if action in (CcAction.CONTINUE, CcAction.LATE_USAGE):
                return await self._usage(request, final=False)
            return await self._usage(request, final=True)
        except UnknownSession:
            return self._answer(request, DIAMETER_UNKNOWN_SESSION_ID)
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

    @staticmethod
    def _state(session: LiveSession | None) -> CcState:
        return CcState.OPEN if session is not None else CcState.IDLE

    @staticmethod
    def _ref(request: CreditControlRequest) -> SessionId:
        return SessionId(SOURCE, request.origin_host, request.session_id)

    @staticmethod
    def _wire_key(request: CreditControlRequest) -> str:
        return (
            f"{SOURCE}|{request.origin_host}|{request.session_id}|"
            f"{request.end_to_end}|{request.request_number}"
        )

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

    def _services(self, request: CreditControlRequest) -> list[Service]:
        if request.multiple_services:
            default = unit_of(request.requested_unit)
            return [(m, unit_of(m.requested, default)) for m in request.multiple_services]
        return [(None, unit_of(request.requested_unit))]

    def _initial(self, request: CreditControlRequest, ref: SessionId) -> bytes | None:
        """A CCR-Initial decided from the cache, or None when the database must be asked."""
        identity = self._identity(request)
        if identity is None:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        charging = self.charging
        if not request.multiple_services:  # one service: the common case, kept lean
            unit = unit_of(request.requested_unit)
            key = ref.book_key
            decision = charging.admit_cached(
                identity[0],
                identity[1],
                unit=unit,
                requested=requested_amount(request.requested_unit, unit),
                reservation_key=key,
                destination=self._called(request),
            )
            if decision is None:
                return None
            return self._initial_answer(
                request,
                ref,
                identity=identity,
                services=[(None, unit)],
                decisions=[decision],
                keys=[key],
            )
        services = self._services(request)
        keys = [f"{ref.book_key}#{n}" for n in range(len(services))]
        decisions: list[CreditDecision] = []
        for (mscc, unit), key in zip(services, keys, strict=True):
            units = mscc.requested if mscc is not None else request.requested_unit
            found = charging.admit_cached(
                identity[0],
                identity[1],
                unit=unit,
                requested=requested_amount(units, unit),
                reservation_key=key,
                destination=self._called(request),
            )
            if found is None:
                for held in keys[: len(decisions)]:  # the entry went stale meanwhile
                    charging.sessions.end(held)
                return None
            decisions.append(found)
        return self._initial_answer(
            request, ref, identity=identity, services=services, decisions=decisions, keys=keys
        )

    async def _initial_slow(self, request: CreditControlRequest, ref: SessionId) -> bytes:
        identity = self._identity(request)
        if identity is None:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        services = self._services(request)
        single = not request.multiple_services
        mscc, unit = services[0]
        units = mscc.requested if mscc is not None else request.requested_unit
        key = ref.book_key if single else f"{ref.book_key}#0"
        first = await self.charging.admit(
            identity[0],
            identity[1],
            unit=unit,
            requested=requested_amount(units, unit),
            reservation_key=key,
            destination=self._called(request),
        )
        decisions = [first]
        keys = [key]
        for n, (other, other_unit) in enumerate(services[1:], start=1):
            assert other is not None
            key = f"{ref.book_key}#{n}"
            decision = self.charging.admit_cached(
                identity[0],
                identity[1],
                unit=other_unit,
                requested=requested_amount(other.requested, other_unit),
                reservation_key=key,
                destination=self._called(request),
            )
            decisions.append(decision if decision is not None else first)
            keys.append(key)
        return self._initial_answer(
            request, ref, identity=identity, services=services, decisions=decisions, keys=keys
        )

    def _initial_answer(
        self,
        request: CreditControlRequest,
        ref: SessionId,
        *,
        identity: tuple[IdentityKind, str],
        services: list[Service],
        decisions: list[CreditDecision],
        keys: list[str],
    ) -> bytes:
        validity = self.validity_time_s
        admitted = [d.admitted for d in decisions]
        if any(admitted):
            self._start(
                request,
                ref,
                identity=identity,
                services=services,
                decisions=decisions,
                keys=keys,
            )
        mscc, unit = services[0]
        first = decisions[0]
        if mscc is None:
            code = self._decision_code(first)
            if first.admitted:
                answer = self.encoder.build(
                    request,
                    result_code=code,
                    granted=granted_units(unit, first.granted_units),
                    validity_time_s=validity,
                )
            else:
                answer = self.encoder.build(request, result_code=code)
            self.count(COMMAND_LABELS[request.request_type], code, ())
            return answer
        if not first.admitted and first.reason is RefusalReason.UNKNOWN_ACCOUNT:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        answers = []
        for (service, service_unit), decision in zip(services, decisions, strict=True):
            assert service is not None
            answers.append(
                MsccAnswer(
                    result_code=self._decision_code(decision),
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
        code = DIAMETER_SUCCESS if any(admitted) else answers[0].result_code
        answer = self.encoder.build(request, result_code=code, mscc_answers=answers)
        self.count(
            COMMAND_LABELS[request.request_type], code, tuple(a.result_code for a in answers)
        )
        return answer

    def _start(
        self,
        request: CreditControlRequest,
        ref: SessionId,
        *,
        identity: tuple[IdentityKind, str],
        services: list[Service],
        decisions: list[CreditDecision],
        keys: list[str],
    ) -> None:
        charging = self.charging
        account_id = charging.cache.account_for(*identity)
        snapshot = charging.cache.get(account_id) if account_id is not None else None
        if snapshot is None:
            return  # admitted by the stale policy without knowing the account: not tracked
        longest = 0.0
        first_unit: ServiceUnit | None = None
        claim = []
        for (_, unit), decision, key in zip(services, decisions, keys, strict=True):
            if decision.admitted:
                claim.append(key)
                if first_unit is None:
                    first_unit = unit
                if unit is ServiceUnit.TIME and decision.granted_units > longest:
                    longest = float(decision.granted_units)
        assert first_unit is not None
        charging.start(
            ref,
            snapshot,
            unit=first_unit,
            grant_s=max(longest, self._least_life_s),
            granted_s=longest,
            counting=Counting.INCREMENT,
            identity=identity,
            claim=claim,
            report_key=f"n={request.request_number}",
            wire_key=self._wire_key(request),
            client_at=request.event_timestamp,
        )

    @staticmethod
    def _decision_code(decision: CreditDecision) -> int:
        if decision.admitted:
            return DIAMETER_SUCCESS
        assert decision.reason is not None
        return REFUSAL_RESULT_CODES[decision.reason]

    # --- CCR-Update and CCR-Termination ---------------------------------------------------

    async def _usage(self, request: CreditControlRequest, *, final: bool) -> bytes:
        charging = self.charging
        ref = self._ref(request)
        snapshot: AccountSnapshot | None = None
        running = charging.session(ref)
        if running is None:
            identity = self._identity(request)
            if identity is not None:
                snapshot = await charging.account(*identity)
        reported = await charging.report(
            ref,
            kind=ReportKind.FINAL if final else ReportKind.USAGE,
            usage=used_increment(request),
            counting=Counting.INCREMENT,
            report_key=f"n={request.request_number}",
            snapshot=snapshot,
            wire_key=self._wire_key(request),
            client_at=request.event_timestamp,
            request_number=request.request_number,
            close_reason=_close_reason(request.termination_cause) if final else None,
        )
        if final:
            return self._answer(request, DIAMETER_SUCCESS)
        session = reported.session
        if session is None:
            # Usage of a session that is over here (closed when its grant ran out): recorded
            # and charged; no further quota, the client ends it.
            return self._over_answer(request)
        return self._grant_answer(request, session)

    def _grant_answer(self, request: CreditControlRequest, session: LiveSession) -> bytes:
        validity = self.validity_time_s
        asks: list[tuple[Mscc | None, ServiceUnit, int | None]] = []
        if request.multiple_services:
            default = unit_of(request.requested_unit, session.unit)
            for service in request.multiple_services:
                unit = unit_of(service.requested, default)
                asks.append((service, unit, requested_amount(service.requested, unit)))
        else:
            unit = unit_of(request.requested_unit, session.unit)
            asks.append((None, unit, requested_amount(request.requested_unit, unit)))
        grants = self.charging.next_grants(
            session,
            [(unit, requested) for _, unit, requested in asks],
            validity_s=self._least_life_s,
        )
        if request.multiple_services:
            answers = []
            for (mscc, unit, _), (decision, last) in zip(asks, grants, strict=True):
                assert mscc is not None
                answers.append(
                    MsccAnswer(
                        result_code=self._decision_code(decision),
                        rating_group=mscc.rating_group,
                        service_identifier=mscc.service_identifier,
                        granted=(
                            granted_units(unit, decision.granted_units)
                            if decision.admitted
                            else None
                        ),
                        validity_time_s=validity if decision.admitted else None,
                        final_unit_action=FinalUnitAction.TERMINATE if last else None,
                    )
                )
            codes = tuple(a.result_code for a in answers)
            self.count("CCR-U", DIAMETER_SUCCESS, codes)
            return self.encoder.build(request, result_code=DIAMETER_SUCCESS, mscc_answers=answers)
        (_, unit, _), (decision, last) = asks[0], grants[0]
        code = self._decision_code(decision)
        self.count("CCR-U", code, ())
        if not decision.admitted:
            return self.encoder.build(request, result_code=code)
        return self.encoder.build(
            request,
            result_code=code,
            granted=granted_units(unit, decision.granted_units),
            validity_time_s=validity,
            final_unit_action=FinalUnitAction.TERMINATE if last else None,
        )

    def _over_answer(self, request: CreditControlRequest) -> bytes:
        self.count("CCR-U", DIAMETER_SUCCESS, ())
        if request.multiple_services:
            answers = [
                MsccAnswer(
                    result_code=DIAMETER_SUCCESS,
                    rating_group=m.rating_group,
                    service_identifier=m.service_identifier,
                    granted=granted_units(unit_of(m.requested), 0),
                    final_unit_action=FinalUnitAction.TERMINATE,
                )
                for m in request.multiple_services
            ]
            return self.encoder.build(request, result_code=DIAMETER_SUCCESS, mscc_answers=answers)
        return self.encoder.build(
            request,
            result_code=DIAMETER_SUCCESS,
            granted=granted_units(unit_of(request.requested_unit), 0),
            final_unit_action=FinalUnitAction.TERMINATE,
        )

    # --- CCR-Event ------------------------------------------------------------------------

    def _missing_action(self, request: CreditControlRequest) -> bytes:
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

    async def _event(self, request: CreditControlRequest) -> bytes:
        action = request.requested_action
        if action is None:
            return self._missing_action(request)
        identity = self._identity(request)
        charging = self.charging
        snapshot = await charging.account(*identity) if identity is not None else None
        if snapshot is None or identity is None:
            return self._answer(request, DIAMETER_USER_UNKNOWN)
        services = self._services(request)
        first_mscc, unit = services[0]
        units = first_mscc.requested if first_mscc is not None else request.requested_unit
        amount = requested_amount(units, unit) or 1
        tariff = charging.tariff_for(snapshot, self._called(request))
        if tariff is None:
            return self._answer(request, REFUSAL_RESULT_CODES[RefusalReason.NO_RATE])
        if action is RequestedAction.REFUND_ACCOUNT:
            refund = await charging.refund(
                snapshot,
                tariff,
                unit,
                amount,
                f"{SOURCE}-refund|{request.session_id}|{request.request_number}",
            )
            self.count("CCR-E", DIAMETER_SUCCESS, ())
            return self.encoder.build(
                request,
                result_code=DIAMETER_SUCCESS,
                cost_information=self._cost(refund),
            )
        if action is RequestedAction.PRICE_ENQUIRY:
            self.count("CCR-E", DIAMETER_SUCCESS, ())
            return self.encoder.build(
                request,
                result_code=DIAMETER_SUCCESS,
                cost_information=self._cost(charging.price(tariff, unit, amount)),
            )
        if snapshot.status is not AccountStatus.ACTIVE:
            return self._answer(request, DIAMETER_END_USER_SERVICE_DENIED)
        if action is RequestedAction.CHECK_BALANCE:
            self.count("CCR-E", DIAMETER_SUCCESS, ())
            return self.encoder.build(
                request,
                result_code=DIAMETER_SUCCESS,
                check_balance_result=(
                    CheckBalanceResult.ENOUGH_CREDIT
                    if charging.has_credit(snapshot)
                    else CheckBalanceResult.NO_CREDIT
                ),
            )
        # DIRECT_DEBITING: admitted like a new session, then charged at once.
        decision, outcome = await charging.direct_debit(
            self._ref(request),
            identity,
            unit=unit,
            amount=amount,
            report_key=f"n={request.request_number}",
            wire_key=self._wire_key(request),
            client_at=request.event_timestamp,
            destination=self._called(request),
        )
        if not decision.admitted or outcome is None:
            return self._answer(request, self._decision_code(decision))
        self.count("CCR-E", DIAMETER_SUCCESS, ())
        return self.encoder.build(
            request,
            result_code=DIAMETER_SUCCESS,
            granted=granted_units(unit, amount),
            cost_information=self._cost(outcome.charged),
        )

    def _called(self, request: CreditControlRequest) -> CalledNumber | None:
        """The Called-Party-Address (or the configured AVP), with the front's dial plan."""
        raw = request.destination
        return CalledNumber(raw, self.dial_plan) if raw else None

    def _cost(self, micros: int) -> CostInformation:
        return CostInformation(value_digits=micros, exponent=-6, currency_code=self.currency_code)

    # --- helpers --------------------------------------------------------------------------

    def _answer(self, request: CreditControlRequest, code: int) -> bytes:
        self.count(COMMAND_LABELS[request.request_type], code, ())
        return self.encoder.build(request, result_code=code)
