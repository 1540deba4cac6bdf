"""Micro-benchmark: CCR-I in, CCA out, our focused codec versus python-diameter's typed API.

Run: .venv/bin/python bench/diameter_codec.py [--budget-s 1.0]

The request is a realistic 3GPP Gy CCR-Initial (two Subscription-Ids, two MSCCs,
User-Equipment-Info, Service-Information/PS-Information), built once with python-diameter.
Each side parses it and builds the CCA a Gy client expects (one MSCC answer per rating group).
Every figure is the median of 5 runs; a run stops at ``--iterations`` or ``--budget-s``,
whichever comes first. Figures go in notes, not in tests (DESIGN §8).
"""

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from diameter.message import Message
from diameter.message.avp.grouped import (
    GrantedServiceUnit,
    PsInformation,
    QosInformation,
    RequestedServiceUnit,
    ServiceInformation,
    UserEquipmentInfo,
)
from diameter.message.commands.credit_control import CreditControlRequest as LibCcr

from ocs.diameter.credit_control import CcaEncoder, MsccAnswer, ServiceUnits, parse_ccr

ORIGIN_HOST = "ocs.example.net"
ORIGIN_REALM = "ocs.example.net"
RUNS = 5


def gy_ccr_initial() -> bytes:
    ccr = LibCcr()
    ccr.header.hop_by_hop_identifier = 0x1234
    ccr.header.end_to_end_identifier = 0x5678
    ccr.header.application_id = 4
    ccr.session_id = "pgw.example.net;1234567;42"
    ccr.origin_host = b"pgw.example.net"
    ccr.origin_realm = b"example.net"
    ccr.destination_realm = b"ocs.example.net"
    ccr.service_context_id = "32251@3gpp.org"
    ccr.cc_request_type = 1
    ccr.cc_request_number = 0
    ccr.event_timestamp = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    ccr.origin_state_id = 1700000000
    ccr.add_subscription_id(0, "491701234567")
    ccr.add_subscription_id(1, "262011234567890")
    ccr.multiple_services_indicator = 1
    ccr.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(), rating_group=100, service_identifier=1
    )
    ccr.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(cc_total_octets=10_000_000),
        rating_group=200,
    )
    ccr.user_equipment_info = UserEquipmentInfo(
        user_equipment_info_type=0, user_equipment_info_value=b"3534900698733190"
    )
    ccr.service_information = ServiceInformation(
        ps_information=PsInformation(
            tgpp_charging_id=b"\x00\x00\x00\x01",
            tgpp_pdp_type=0,
            pdp_address=["10.45.0.7"],
            sgsn_address=["192.0.2.10"],
            ggsn_address=["192.0.2.20"],
            tgpp_imsi_mcc_mnc="26201",
            tgpp_ggsn_mcc_mnc="26201",
            tgpp_nsapi=b"5",
            called_station_id="internet",
            tgpp_selection_mode="0",
            tgpp_charging_characteristics="0800",
            tgpp_sgsn_mcc_mnc="26201",
            tgpp_ms_timezone=b"\x40\x00",
            tgpp_user_location_info=bytes.fromhex("8262f210000162f21000000101"),
            tgpp_rat_type=b"\x06",
            qos_information=QosInformation(
                qos_class_identifier=9,
                max_requested_bandwith_ul=100_000_000,
                max_requested_bandwith_dl=100_000_000,
            ),
        )
    )
    return ccr.as_bytes()


def grant_for(rating_group: int | None) -> ServiceUnits:
    return ServiceUnits(time_s=3600) if rating_group == 100 else ServiceUnits(total_octets=10**7)


def ours(encoder: CcaEncoder, data: bytes) -> bytes:
    request = parse_ccr(data)
    return encoder.build(
        request,
        result_code=2001,
        mscc_answers=[
            MsccAnswer(
                result_code=2001,
                rating_group=mscc.rating_group,
                service_identifier=mscc.service_identifier,
                granted=grant_for(mscc.rating_group),
                validity_time_s=600,
            )
            for mscc in request.multiple_services
        ],
    )


def library(data: bytes) -> bytes:
    request = Message.from_bytes(data)
    answer = request.to_answer()
    answer.session_id = request.session_id
    answer.origin_host = ORIGIN_HOST.encode()
    answer.origin_realm = ORIGIN_REALM.encode()
    answer.result_code = 2001
    answer.auth_application_id = 4
    answer.cc_request_type = request.cc_request_type
    answer.cc_request_number = request.cc_request_number
    for mscc in request.multiple_services_credit_control:
        granted = grant_for(mscc.rating_group)
        answer.add_multiple_services_credit_control(
            granted_service_unit=GrantedServiceUnit(
                cc_time=granted.time_s, cc_total_octets=granted.total_octets
            ),
            rating_group=mscc.rating_group,
            service_identifier=mscc.service_identifier or None,
            validity_time=600,
            result_code=2001,
        )
    return bytes(answer.as_bytes())


def median_us(work: Callable[[], object], iterations: int, budget_s: float) -> float:
    """Median over RUNS runs of µs per call; each run is bounded by iterations and budget_s."""
    samples = []
    for _ in range(RUNS):
        done = 0
        started = time.perf_counter()
        deadline = started + budget_s
        while done < iterations:
            work()
            done += 1
            if done % 64 == 0 and time.perf_counter() > deadline:
                break
        samples.append((time.perf_counter() - started) / done * 1e6)
    return statistics.median(samples)


def check_equivalent(ours_cca: bytes, library_cca: bytes) -> None:
    mine, theirs = Message.from_bytes(ours_cca), Message.from_bytes(library_cca)
    for field in ("session_id", "result_code", "cc_request_type", "cc_request_number"):
        assert getattr(mine, field) == getattr(theirs, field), field
    granted = [m.granted_service_unit for m in mine.multiple_services_credit_control]
    assert granted == [m.granted_service_unit for m in theirs.multiple_services_credit_control]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--budget-s", type=float, default=1.0, help="time bound per run")
    args = parser.parse_args()

    data = gy_ccr_initial()
    encoder = CcaEncoder(origin_host=ORIGIN_HOST, origin_realm=ORIGIN_REALM)
    check_equivalent(ours(encoder, data), library(data))
    request = parse_ccr(data)
    answers = [
        MsccAnswer(result_code=2001, rating_group=100, granted=ServiceUnits(time_s=3600)),
        MsccAnswer(result_code=2001, rating_group=200, granted=ServiceUnits(total_octets=10**7)),
    ]

    parse_us = median_us(lambda: parse_ccr(data), args.iterations, args.budget_s)
    build_us = median_us(
        lambda: encoder.build(request, result_code=2001, mscc_answers=answers),
        args.iterations,
        args.budget_s,
    )
    ours_us = median_us(lambda: ours(encoder, data), args.iterations, args.budget_s)
    library_decode_us = median_us(
        lambda: Message.from_bytes(data), args.iterations // 10, args.budget_s
    )
    library_us = median_us(lambda: library(data), args.iterations // 10, args.budget_s)

    print(f"Gy CCR-I of {len(data)} octets -> CCA of {len(ours(encoder, data))} octets")
    print(f"  ocs   parse_ccr                          {parse_us:8.1f} µs/op")
    print(f"  ocs   CcaEncoder.build (2 MSCC)          {build_us:8.1f} µs/op")
    print(f"  ocs   parse_ccr + build_cca              {ours_us:8.1f} µs/op")
    print(f"  lib   Message.from_bytes                 {library_decode_us:8.1f} µs/op")
    print(f"  lib   from_bytes + CCA + as_bytes()      {library_us:8.1f} µs/op")
    print(f"  ratio library / ocs (CCR in, CCA out)    {library_us / ours_us:8.1f}x")
    print(f"  ocs ceiling, codec only                  {1e6 / ours_us:8.0f} CCR/s")


if __name__ == "__main__":
    main()
