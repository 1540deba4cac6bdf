"""Where ocsd's RADIUS front spends CPU per Access-Request: no sockets, no other load.

Builds the daemon's pipeline from its real classes (AccountCache warm with the benchmark's
accounts, SessionBook, Charging, Metrics, RadiusFront, wired as ``ocs.app`` wires them) and
feeds pre-built Access-Requests (unique authenticators, round robin over the users) straight
into ``RadiusFront.handle`` with a transport that drops the replies. What it measures is the
Python CPU per request (``time.process_time``), to which the daemon adds the event loop and one
``recvmsg`` plus one ``sendmsg`` system call per request (≈ 5 µs each on this VM kind).

Also measured, because they grow with the request rate rather than per request:
``SessionBook.expire()`` (housekeeping, in slices on the event loop) holding the admission
reservations of ``--rate`` requests/s for ``grant.admission_hold_s`` seconds, and a full
``gc.collect()`` over that heap with the start-up heap frozen as the daemon freezes it (a pause
the event loop takes whenever the collector's generation-2 threshold trips). Then a cProfile
of the hot path (inflated by profiling overhead;
read it for proportions).

    .venv/bin/python bench/radius_front_profile.py [--accounts 10000] [--requests 200000]
        [--rate 20000] [--hold-s 30] [--rate-plan 100000]

With ``--rate-plan N`` every admitting account is rated by destination: one rate plan of N
synthetic prefixes (``bench/rate_lookup.py``'s), a Called-Station-Id in every request (90 %
under a deck prefix), so the figure includes the lookup the pipeline makes per admission.
Compare it with ``--priced`` (the same accounts priced at one flat tariff, no plan): the
baseline's accounts are free, and a free admission holds no money.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import io
import ipaddress
import os
import pstats
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import rate_lookup
from ocs.app import EXPIRY_SLICE
from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.rates import RatePlanCache
from ocs.charging.sessions import SessionBook
from ocs.config import Config
from ocs.core.destinations import Rate, RateDeck, RatePlan
from ocs.core.identity import IdentityKind
from ocs.core.model import (
    FREE_TARIFF,
    AccountSnapshot,
    AccountStatus,
    CreditDecision,
    RefusalReason,
    Tariff,
)
from ocs.metrics import Metrics
from ocs.radius import codec
from ocs.radius.front import (
    AttributeRef,
    ClientTable,
    MessageAuthenticatorPolicy,
    RadiusClient,
    RadiusFront,
    _Listener,
)

SECRET = b"testing123"
FLAT_PRICE = 60_000  # micro-units a minute: --priced, and every prefix of --flat-rates


def snapshots(n: int, priced: bool = False, rate_plan: bool = False) -> list[AccountSnapshot]:
    """The baseline's accounts (bench/seed_accounts.py), as the cache holds them."""
    out = []
    for i in range(1, n + 1):
        if i % 10 == 0:
            balance, limit = -5_000_000, 0
        elif i % 10 == 5:
            balance, limit = -10_000_000, 20_000_000
        else:
            balance, limit = (100 + (i * 7919) % 99900) * 10_000, 0
        blocked = i % 97 == 0 and i % 10 not in (0, 5)
        out.append(
            AccountSnapshot(
                account_id=i,
                name=f"4178{i:07d}",
                status=AccountStatus.BLOCKED if blocked else AccountStatus.ACTIVE,
                balance=balance,
                credit_limit=limit,
                tariff=Tariff(price_per_minute=FLAT_PRICE) if priced or rate_plan else FREE_TARIFF,
                rate_plan_id=1 if rate_plan else None,
            )
        )
    return out


class DropTransport:
    """Stands in for the UDP transport: counts replies, sends nothing."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += 1


def rate_plan(prefix_count: int, flat: bool = False) -> tuple[RatePlanCache, list[str]]:
    """A rate plan of ``prefix_count`` prefixes (one deck), and its prefixes. ``flat``: every
    prefix at the flat tariff's price (so the decisions are those of ``--priced``)."""
    rng = random.Random(prefix_count)
    # Effective since 2000: the pipeline prices at the machine's clock.
    since = datetime(2000, 1, 1, tzinfo=UTC)
    table = (
        [Rate(price_per_minute=FLAT_PRICE, effective_from=since)]
        if flat
        else [dataclasses.replace(rate, effective_from=since) for rate in rate_lookup.prices(rng)]
    )
    prefixes = rate_lookup.synthetic_prefixes(prefix_count)
    rows = [(p, table[rng.randrange(len(table))]) for p in prefixes]
    deck = RateDeck(deck_id=1, name="bench", rates=rows)
    rates = RatePlanCache()
    rates.put(RatePlan(plan_id=1, name="bench", currency="USD", decks=(deck,)), 1)
    return rates, prefixes


def build(
    accounts: int, hold_s: float, rates: RatePlanCache | None = None, priced: bool = False
) -> tuple[RadiusFront, _Listener, SessionBook, Metrics]:
    config = Config()
    cache = AccountCache(negative_ttl_s=config.cache.negative_ttl_s)
    snaps = snapshots(accounts, priced=priced, rate_plan=rates is not None)
    loop_time = asyncio.get_running_loop().time()
    cache.replace_all(snaps, [("user_name", s.name, s.account_id) for s in snaps], loop_time)
    sessions = SessionBook()
    metrics = Metrics()
    charging = Charging(
        cache=cache,
        sessions=sessions,
        source=None,  # type: ignore[arg-type]  # a warm cache never asks
        sink=None,  # type: ignore[arg-type]
        limits=config.grant.limits(),
        policy=CachePolicy(
            ttl_s=3600.0,  # nothing goes stale during the measurement
            pending_reservation_ttl_s=hold_s,
        ),
        rates=rates,
    )
    results = {
        reason: metrics.decisions.labels(reason)
        for reason in ("admitted", *(r.value for r in RefusalReason))
    }

    def count(decision: CreditDecision) -> None:
        results["admitted" if decision.admitted else str(decision.reason)].inc()

    charging.on_decision = count
    client = RadiusClient(
        name="bench",
        network=ipaddress.ip_network("127.0.0.1/32"),
        secret=codec.SharedSecret(SECRET),
        require_message_authenticator=MessageAuthenticatorPolicy.REQUIRED,
        limit_proxy_state=True,
        identity=AttributeRef(name="User-Name", code=codec.USER_NAME),
        identity_kind=IdentityKind.USER_NAME,
    )
    front = RadiusFront(charging=charging, clients=ClientTable([client]), metrics=metrics)
    listener = _Listener(front, "auth")
    listener.transport = DropTransport()  # type: ignore[assignment]
    return front, listener, sessions, metrics


def requests(n: int, accounts: int, prefixes: list[str] | None = None) -> list[bytes]:
    secret = codec.SharedSecret(SECRET)
    out = []
    numbers = rate_lookup.numbers_for(prefixes, n, random.Random(n)) if prefixes else None
    for k in range(n):
        user = f"4178{k % accounts + 1:07d}".encode()
        auth = os.urandom(16)
        attrs = [
            (codec.USER_NAME, user),
            (codec.USER_PASSWORD, os.urandom(16)),  # hidden "pw": opaque to the daemon
            (codec.NAS_IP_ADDRESS, bytes((127, 0, 0, 1))),
        ]
        if numbers is not None:
            attrs.append((codec.CALLED_STATION_ID, ("+" + numbers[k]).encode()))
        out.append(
            codec.encode_request(codec.ACCESS_REQUEST, k % 256, secret, attrs, authenticator=auth)
        )
    return out


async def main(args: argparse.Namespace) -> None:
    rates, prefixes = rate_plan(args.rate_plan, args.flat_rates) if args.rate_plan else (None, None)
    front, listener, sessions, _metrics = build(args.accounts, args.hold_s, rates, args.priced)
    wires = requests(args.requests, args.accounts, prefixes)
    addrs = [("127.0.0.1", 40000 + k % 16) for k in range(16)]
    handle = front.handle
    perf = time.perf_counter

    def run(batch: list[bytes]) -> float:
        started = time.process_time()
        for k, wire in enumerate(batch):
            handle(listener, wire, addrs[k & 15], perf())
        return (time.process_time() - started) / len(batch) * 1e6

    # Warm-up, then 5 timed slices: µs of CPU per request.
    run(wires[: len(wires) // 10])
    slices = [wires[i::5] for i in range(5)]
    per_request = [run(s) for s in slices]
    sent = listener.transport.sent  # type: ignore[union-attr]
    flat = ", each at the flat price" if args.flat_rates else ""
    rated = f", rated by destination ({args.rate_plan:,} prefixes{flat})" if args.rate_plan else ""
    rated = rated or (", priced at one flat tariff" if args.priced else "")
    print(
        f"RadiusFront.handle, warm cache, {args.accounts} accounts{rated}: "
        f"{statistics.median(per_request):.1f} µs CPU per Access-Request "
        f"(median of 5 slices: {', '.join(f'{x:.1f}' for x in per_request)}); "
        f"{sent} replies; reservations held {sessions.reservation_count}"
    )
    print(
        f"  => at most ≈ {1e6 / statistics.median(per_request):,.0f} requests/s per core for "
        "the Python hot path alone, before the event loop and the two system calls per request"
    )

    # Housekeeping at a sustained rate: rate * hold_s reservations held, 1/hold_s of them
    # expiring every second, in the daemon's slices (ocs.app.EXPIRY_SLICE heap steps, the loop
    # yielded between them). The book is made, then the heap frozen, as the daemon does at ready.
    book = SessionBook()
    gc.collect()
    gc.freeze()
    held = int(args.rate * args.hold_s)
    t0 = 1000.0
    for k in range(held):
        key = f"radius-auth|127.0.0.1|{40000 + k % 16}|{k % 256}|{os.urandom(16).hex()}"
        account, at = k % args.accounts + 1, t0 + k / args.rate
        book.setups_in_window(account, at)  # every decision asks (and trims the window)
        book.admit(key, account, 0, at, args.hold_s)
    totals, longest = [], []
    for second in range(1, 4):
        now = t0 + args.hold_s + second
        slices = []
        while book.expiry_due(now):
            started = time.perf_counter()
            book.expire(now, max_work=EXPIRY_SLICE)
            slices.append((time.perf_counter() - started) * 1e3)
        totals.append(sum(slices))
        longest.append(max(slices))
    print(
        f"SessionBook.expire() holding {held:,} admission reservations ({args.rate:,.0f}/s x "
        f"{args.hold_s:.0f} s), {args.rate:,.0f} expiring a second in slices of {EXPIRY_SLICE}: "
        f"{', '.join(f'{c:.0f}' for c in totals)} ms a second, longest slice "
        f"{', '.join(f'{c:.2f}' for c in longest)} ms"
    )
    started = time.perf_counter()
    gc.collect()
    print(
        f"gc.collect() (full) with that heap, start-up frozen ({len(gc.get_objects()):,} tracked "
        f"objects outside the freeze): {(time.perf_counter() - started) * 1e3:.1f} ms"
    )
    gc.unfreeze()
    del book

    # cProfile of the hot path (proportions; cProfile inflates small calls).
    front2, listener2, _sessions2, _m2 = build(args.accounts, args.hold_s, rates, args.priced)
    batch = wires[: min(len(wires), 50_000)]
    profiler = cProfile.Profile()
    profiler.enable()
    for k, wire in enumerate(batch):
        front2.handle(listener2, wire, addrs[k & 15], perf())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.top)
    print(f"cProfile over {len(batch):,} requests, by own time:")
    text = out.getvalue()
    start = text.find("   ncalls")
    print(text[start:].rstrip() if start >= 0 else text)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--rate", type=float, default=20_000.0, help="rate for the housekeeping part")
    p.add_argument("--hold-s", type=float, default=30.0, help="grant.admission_hold_s")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--priced", action="store_true", help="accounts priced at one tariff (no rate plan)"
    )
    p.add_argument(
        "--flat-rates",
        action="store_true",
        help="every prefix of --rate-plan at --priced's price: the same decisions, so the "
        "difference is the cost of rating alone",
    )
    p.add_argument(
        "--rate-plan", type=int, default=0, help="rate every account by a plan of N prefixes"
    )
    args = p.parse_args()
    if not 1 <= args.accounts <= 1_000_000 or not 1_000 <= args.requests <= 2_000_000:
        p.error("--accounts 1..1e6, --requests 1e3..2e6")
    return args


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(parse_args()))
    except ImportError:
        asyncio.run(main(parse_args()))
