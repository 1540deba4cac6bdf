"""The account API (``ocs api``) as a billing system uses it: a real API process on a free
loopback port, a real PostgreSQL, tokens made with the CLI."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest
from support import ROOT, create_token, run_ocs

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


def sql(dsn: str, query: str, *args: object) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def close_session(
    dsn: str,
    account: str,
    key: str,
    *,
    seconds: int,
    amount: str,
    at: datetime,
    generation: int = 1,
) -> None:
    """A session that ran and ended at ``at``, written as the usage writer writes one (a row
    opened, then closed by its final report): the one place these tests write sessions."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            session = await conn.fetchval(
                """INSERT INTO sessions (source, origin, session_key, generation, account_id,
                                         started_at, seconds, octets)
                   VALUES ('radius', '127.0.0.1', $1, $5,
                           (SELECT id FROM accounts WHERE name = $2),
                           $3::timestamptz - make_interval(secs => $4), $4, 1000)
                   RETURNING id""",
                key,
                account,
                at,
                seconds,
                generation,
            )
            await conn.execute(
                """UPDATE sessions SET charged = $2, closed_at = $3, close_reason = 'stop',
                                       closed_by_final = true, updated_at = now()
                   WHERE id = $1""",
                session,
                Decimal(amount),
                at,
            )
        finally:
            await conn.close()

    asyncio.run(run())


def client(api, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=15)


@pytest.fixture
def demo(dsn: str) -> str:
    loaded = run_ocs("demo", "load", dsn=dsn)
    assert loaded.code == 0, loaded.err
    return dsn


def test_no_token_is_401_and_health_needs_none(demo: str, apis) -> None:
    api = apis(demo)
    with client(api, None) as anonymous:
        health = anonymous.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "database": "up"}
        for method, path in [
            ("GET", "/accounts"),
            ("GET", "/accounts/prepaid-ok/balance"),
            ("POST", "/accounts/prepaid-ok/payments"),
            ("GET", "/cdrs"),
            ("GET", "/operators"),
        ]:
            refused = anonymous.request(method, path, json={"amount": "1"})
            assert refused.status_code == 401, (path, refused.text)
            assert refused.headers["content-type"] == PROBLEM
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["type"] == "/problems/unauthorized"
        wrong = anonymous.get("/accounts", headers={"Authorization": "Bearer ocs_not-a-token"})
        assert wrong.status_code == 401
        basic = anonymous.get("/accounts", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401


def test_token_revocation_and_expiry(demo: str, apis) -> None:
    api = apis(demo)
    token = create_token(demo, "helpdesk", "--label", "crm")
    with client(api, token) as http:
        assert http.get("/accounts/prepaid-ok/balance").status_code == 200
        listed = run_ocs("api-token", "list", dsn=demo).out
        assert "helpdesk" in listed and "crm" in listed and "valid" in listed
        assert token not in listed
        token_id = sql(demo, "SELECT max(id) FROM api_tokens")
        revoked = run_ocs("api-token", "revoke", str(token_id), dsn=demo)
        assert revoked.code == 0, revoked.err
        again = http.get("/accounts/prepaid-ok/balance")
        assert again.status_code == 401
        assert "revoked or expired" in again.json()["detail"]
        assert "revoked" in run_ocs("api-token", "list", dsn=demo).out
    # The database keeps only the SHA-256.
    assert sql(demo, "SELECT count(*) FROM api_tokens WHERE token_sha256::text LIKE '%ocs_%'") == 0

    # A token that expires two seconds from now works until then, and not after.
    short = create_token(demo, "helpdesk")
    sql(
        demo,
        "UPDATE api_tokens SET expires_at = now() + interval '2 seconds' WHERE id = "
        "(SELECT max(id) FROM api_tokens)",
    )
    with client(api, short) as http:
        assert http.get("/accounts").status_code == 200
        import time

        time.sleep(2.5)
        expired = http.get("/accounts")
        assert expired.status_code == 401
    assert "expired" in run_ocs("api-token", "list", dsn=demo).out
    bad = run_ocs("api-token", "create", "helpdesk", "--expires", "yesterday", dsn=demo)
    assert bad.code == 2 and "--expires 'yesterday'" in bad.err
    unknown = run_ocs("api-token", "create", "nobody", dsn=demo)
    assert unknown.code == 1 and "no operator named 'nobody'" in unknown.err


def test_balance_is_what_account_show_says(demo: str, apis) -> None:
    api = apis(demo)
    with client(api, create_token(demo, "helpdesk")) as http:
        expected = {
            "prepaid-ok": (True, "1.00"),
            "prepaid-empty": (False, "0.00"),
            "temp-increase": (True, "20.00"),
            "blocked": (False, "100.00"),
        }
        for name, (admitted, available) in expected.items():
            got = http.get(f"/accounts/{name}/balance").json()
            assert got["decision"]["admitted"] is admitted, (name, got)
            assert got["available_credit"] == available
            show = run_ocs("account", "show", name, dsn=demo).out
            assert f"available credit    {available}" in show
        ok = http.get("/accounts/prepaid-ok/balance").json()
        assert ok["decision"]["granted_units"] == 1000 and ok["decision"]["unit"] == "time"
        temp = http.get("/accounts/temp-increase/balance").json()
        assert temp["effective_credit_limit"] == "220.00"
        assert temp["temporary_increase"]["increase"] == "20.00"
        blocked = http.get("/accounts/blocked/balance").json()
        assert blocked["decision"]["reason"] == "blocked"
        assert blocked["decision"]["reason_text"] == "account blocked"
        # Money is a string everywhere, never a JSON number.
        for value in (ok["balance"], ok["credit_limit"], ok["decision"]["available"]):
            assert isinstance(value, str)
        missing = http.get("/accounts/nobody/balance")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no account named 'nobody'"


def test_every_resource_through_the_api(demo: str, apis) -> None:
    api = apis(demo)
    manager = create_token(demo, "helpdesk", "--manage-operators")
    with client(api, manager) as http:
        tariff = http.put(
            "/tariffs/voice", json={"price_per_minute": "0.12", "billing_increment_s": 6}
        )
        assert tariff.status_code == 200, tariff.text
        assert tariff.json()["price_per_minute"] == "0.12"
        assert "voice" in [t["name"] for t in http.get("/tariffs").json()]
        klass = http.put("/account-classes/family", json={"transfers_allowed": True})
        assert klass.json() == {"name": "family", "transfers_allowed": True, "accounts": 0}

        created = http.post(
            "/accounts",
            json={
                "name": "acme",
                "tariff": "voice",
                "credit_limit": "100",
                "account_class": "family",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["credit_limit"] == "100.00"
        assert http.post("/accounts", json={"name": "acme"}).status_code == 409
        http.post("/accounts", json={"name": "bob", "account_class": "family"})
        changed = http.patch(
            "/accounts/acme", json={"time_zone": "Europe/Zurich", "max_sessions": 5}
        )
        assert (
            changed.json()["time_zone"] == "Europe/Zurich" and changed.json()["max_sessions"] == 5
        )
        bad_zone = http.patch("/accounts/acme", json={"time_zone": "Mars/Base"})
        assert bad_zone.status_code == 422 and "unknown time zone" in bad_zone.json()["detail"]
        assert http.get("/accounts/acme").json()["tariff"] == "voice"
        page = http.get("/accounts", params={"limit": 3}).json()
        assert len(page["items"]) == 3 and page["next_cursor"]
        rest = http.get("/accounts", params={"limit": 100, "cursor": page["next_cursor"]}).json()
        names = [a["name"] for a in page["items"] + rest["items"]]
        assert names == sorted(names) and len(names) == len(set(names)) == 10
        assert http.get("/accounts", params={"cursor": "%%%"}).status_code == 422

        ident = http.post("/accounts/acme/identities", json={"kind": "e164", "value": "+41 44 000"})
        assert ident.status_code == 201 and ident.json()["value"] == "4144000"
        assert http.get("/accounts/acme/identities").json() == [
            {"kind": "e164", "value": "4144000"}
        ]
        clash = http.post("/accounts/bob/identities", json={"kind": "e164", "value": "4144000"})
        assert clash.status_code == 409 and "belongs to account 'acme'" in clash.json()["detail"]

        pay = http.post(
            "/accounts/acme/payments", json={"amount": "50"}, headers={"Idempotency-Key": "p1"}
        )
        assert pay.status_code == 201, pay.text
        assert pay.json()["balance"] == "50.00" and pay.json()["operator"] == "helpdesk"
        credit = http.post(
            "/accounts/acme/credits",
            json={"amount": "5", "promotional": True},
            headers={"Idempotency-Key": "c1"},
        )
        assert credit.json()["kind"] == "promotional_credit" and credit.json()["balance"] == "55.00"
        refund = http.post(
            "/accounts/acme/refunds", json={"amount": "2.5"}, headers={"Idempotency-Key": "r1"}
        )
        assert refund.json()["amount"] == "-2.50" and refund.json()["balance"] == "52.50"
        moved = http.post(
            "/transfers",
            json={"from_account": "acme", "to_account": "bob", "amount": "10"},
            headers={"Idempotency-Key": "t1"},
        )
        assert moved.status_code == 201, moved.text
        assert (moved.json()["from_balance"], moved.json()["to_balance"]) == ("42.50", "10.00")
        ledger = http.get("/accounts/acme/ledger", params={"limit": 2}).json()
        assert [e["kind"] for e in ledger["items"]] == ["payment", "promotional_credit"]
        more = http.get("/accounts/acme/ledger", params={"cursor": ledger["next_cursor"]}).json()
        assert [e["kind"] for e in more["items"]] == ["refund", "transfer_out"]

        limit = http.put(
            "/accounts/acme/credit-limit", json={"amount": "150", "reason": "good payer"}
        )
        assert limit.json() == {"account": "acme", "credit_limit": "150.00"}
        increase = http.post(
            "/accounts/acme/temporary-increases", json={"percent": "10", "until": "+7d"}
        )
        assert increase.status_code == 201, increase.text
        assert increase.json()["percent"] == "10"
        history = http.get("/accounts/acme/credit-limit/history").json()
        assert [h["temporary"] for h in history] == [False, False, True]
        assert history[1]["new_limit"] == "150.00" and history[1]["reason"] == "good payer"
        assert history[2]["operator"] == "helpdesk"
        assert http.get("/accounts/acme/balance").json()["effective_credit_limit"] == "165.00"

        thresholds = http.put("/accounts/acme/thresholds", json={"thresholds": ["50", "20%"]})
        assert [(t["amount"], t["percent"]) for t in thresholds.json()] == [
            ("50.00", None),
            (None, "20"),
        ]
        assert len(http.get("/accounts/acme/thresholds").json()) == 2
        assert http.put("/accounts/acme/thresholds", json={"thresholds": []}).json() == []

        ops = http.get("/operators").json()
        assert [o["name"] for o in ops] == ["helpdesk"]
        helpdesk = http.get("/operators/helpdesk").json()
        assert helpdesk["transaction_credit_limit"] == "10.00"
        assert helpdesk["used_today"] == "7.50"  # the promotional credit and the refund
        crm = http.post(
            "/operators",
            json={
                "name": "crm",
                "max_temp_increase_percent": "20",
                "max_temp_duration_s": 60 * 86400,
            },
        )
        assert crm.status_code == 201 and crm.json()["max_temp_duration_s"] == 5184000
        raised = http.patch(
            "/operators/crm",
            json={"daily_credit_limit": "500", "clear": ["max_temp_increase_percent"]},
        )
        assert raised.json()["daily_credit_limit"] == "500.00"
        assert raised.json()["max_temp_increase_percent"] is None

        service = http.post(
            "/accounts/acme/prepaid-services",
            json={"name": "internet", "amount": "20", "every": "30d", "grace": "3d"},
            headers={"Idempotency-Key": "s1"},
        )
        assert service.status_code == 201, service.text
        assert service.json()["period_days"] == 30 and service.json()["grace_s"] == 3 * 86400
        run = http.post("/prepaid-runs").json()
        assert run["charged"] == 1
        assert http.get("/accounts/acme/prepaid-services").json()[0]["unpaid"] == "0.00"
        assert len(http.get("/prepaid-services").json()) == 1
        stopped = http.delete("/accounts/acme/prepaid-services/internet")
        assert stopped.json()["active"] is False
        assert http.delete("/accounts/acme/prepaid-services/tv").status_code == 404

        http.put("/accounts/bob/thresholds", json={"thresholds": ["5"]})
        http.post("/accounts/bob/refunds", json={"amount": "6"}, headers={"Idempotency-Key": "r2"})
        events = http.get("/outbox", params={"pending": True}).json()
        assert events["items"][0]["topic"] == "low_funds"
        assert events["items"][0]["payload"]["account"] == "bob"
        assert events["items"][0]["state"] == "pending"

    # A token without --manage-operators cannot raise its own operator's caps.
    with client(api, create_token(demo, "helpdesk")) as http:
        denied = http.patch("/operators/helpdesk", json={"transaction_credit_limit": "1000"})
        assert denied.status_code == 403 and denied.json()["rule"] == "forbidden"
        assert http.post("/operators", json={"name": "x"}).status_code == 403
        assert http.get("/operators/helpdesk").json()["transaction_credit_limit"] == "10.00"


RATE_DECK = """prefix,description,price_per_minute,minimum,increment,connection_fee,band,\
effective_from
41,Switzerland,0.03,60,6,0,,2027-01-01
4179,Switzerland Mobile,0.20,60,6,0.05,,2027-01-01
4179,Switzerland Mobile peak,0.30,60,6,0.05,peak,2027-01-01
4179,Switzerland Mobile,0.18,60,6,0.05,,2027-04-01
"""


def test_rate_plans_accounts_and_rates_through_the_api(demo: str, apis, tmp_path) -> None:
    api = apis(demo)
    with client(api, create_token(demo, "helpdesk")) as http:
        created = http.post(
            "/rate-plans", json={"name": "retail", "currency": "chf", "description": "CH"}
        )
        assert created.status_code == 201, created.text
        assert created.json() == {
            "name": "retail",
            "currency": "CHF",
            "description": "CH",
            "accounts": 0,
            "classes": 0,
            "decks": [],
        }
        again = http.post("/rate-plans", json={"name": "retail", "currency": "CHF"})
        assert again.status_code == 409 and "exists already" in again.json()["detail"]
        bad = http.post("/rate-plans", json={"name": "x", "currency": "ABC"})
        assert bad.status_code == 422 and "not an ISO 4217" in bad.json()["detail"]
        assert http.post("/rate-plans", json={"name": "x", "currency": "EURO"}).status_code == 422

    # The deck and its band come from the CLI (CSV files are the CLI's).
    band = run_ocs(
        "rates", "band", "retail", "peak", "--days", "mon-fri", "--from", "08:00", "--to",
        "20:00", dsn=demo,
    )  # fmt: skip
    assert band.code == 0, band.err
    deck = tmp_path / "deck.csv"
    deck.write_text(RATE_DECK)
    imported = run_ocs("rates", "import", "retail", str(deck), dsn=demo)
    assert imported.code == 0, imported.err

    with client(api, create_token(demo, "helpdesk")) as http:
        account = http.post(
            "/accounts",
            json={
                "name": "zurich",
                "time_zone": "Europe/Zurich",
                "currency": "CHF",
                "rate_plan": "retail",
            },
        )
        assert account.status_code == 201, account.text
        doc = account.json()
        assert (doc["currency"], doc["rate_plan"], doc["rate_plan_in_force"]) == (
            "CHF",
            "retail",
            "retail",
        )
        listed = http.get("/rate-plans").json()
        assert listed == [
            {
                "name": "retail",
                "currency": "CHF",
                "description": "CH",
                "accounts": 1,
                "classes": 0,
                "decks": [{"name": "retail", "priority": 10, "prefixes": 2, "rates": 4}],
            }
        ]

        # The currency rule, as the CLI says it (the database's OC004).
        usd = http.post("/accounts", json={"name": "ny", "rate_plan": "retail"})
        assert usd.status_code == 422 and usd.json()["sqlstate"] == "OC004"
        assert "account ny is in USD" in usd.json()["detail"]
        assert http.get("/accounts/ny").status_code == 404  # nothing half-created
        moved = http.patch("/accounts/zurich", json={"currency": "USD"})
        assert moved.status_code == 422
        assert "is in USD and rate plan retail is in CHF" in moved.json()["detail"]
        assert http.get("/accounts/zurich").json()["currency"] == "CHF"
        bad = http.patch("/accounts/zurich", json={"currency": "EUX"})
        assert bad.status_code == 422 and "not an ISO 4217" in bad.json()["detail"]
        unknown = http.patch("/accounts/zurich", json={"rate_plan": "wholesale"})
        assert unknown.status_code == 404 and "no rate plan named" in unknown.json()["detail"]
        removed = http.patch("/accounts/zurich", json={"rate_plan": ""}).json()
        assert (removed["rate_plan"], removed["rate_plan_in_force"]) == (None, None)
        assert http.get("/rate-plans").json()[0]["accounts"] == 0
        # Assigning a plan is a change of the account's settings.
        back = http.patch("/accounts/zurich", json={"rate_plan": "retail"})
        assert back.status_code == 200 and back.json()["rate_plan"] == "retail"
        assert back.json()["rate_limit"] is None
        # The bandwidth limit data NAS are told, as `ocs account update --rate-limit`.
        limited = http.patch(
            "/accounts/zurich", json={"rate_limit": {"up_kbps": 512, "down_kbps": 4096}}
        )
        assert limited.json()["rate_limit"] == {"up_kbps": 512, "down_kbps": 4096}
        assert "512 up / 4096 down kbit/s" in run_ocs("account", "show", "zurich", dsn=demo).out
        half = http.patch("/accounts/zurich", json={"rate_limit": {"up_kbps": 0, "down_kbps": 1}})
        assert half.status_code == 422 and "both rates" in half.json()["detail"]
        unlimited = http.patch(
            "/accounts/zurich", json={"rate_limit": {"up_kbps": 0, "down_kbps": 0}}
        )
        assert unlimited.json()["rate_limit"] is None

        # Which rate, and why: on the account's clock 07:30 UTC of a Monday is 08:30, peak.
        at = "2027-03-01T07:30+00:00"
        peak = http.get("/rates/retail/0041 79 123 45 67", params={"at": at, "account": "zurich"})
        assert peak.status_code == 200, peak.text
        body = peak.json()
        assert body["number"] == "41791234567" and body["time_zone"] == "Europe/Zurich"
        assert datetime.fromisoformat(body["at"]) == datetime(2027, 3, 1, 7, 30, tzinfo=UTC)
        assert body["rate"] == {
            "price_per_minute": "0.30",
            "minimum_s": 60,
            "increment_s": 6,
            "connection_fee": "0.05",
            "effective_from": body["rate"]["effective_from"],
            "band": "peak",
        }
        assert datetime.fromisoformat(body["rate"]["effective_from"]) == datetime(
            2027, 1, 1, tzinfo=UTC
        )
        assert (body["prefix"], body["description"], body["deck"]) == (
            "4179",
            "Switzerland Mobile peak",
            "retail",
        )
        assert body["band"] == {
            "name": "peak",
            "weekdays": [1, 2, 3, 4, 5],
            "start": "08:00",
            "end": "20:00",
        }
        assert body["active_bands"] == ["peak"] and body["skipped_decks"] == []
        assert datetime.fromisoformat(body["next_change"]) == datetime(2027, 4, 1, tzinfo=UTC)
        shown = run_ocs(
            "rates", "show", "retail", "0041 79 123 45 67", "--at", at, "--account", "zurich",
            dsn=demo,
        )  # fmt: skip
        assert shown.code == 0 and "0.30 CHF per minute, billed 60/6" in shown.out
        assert "prefix 4179 (Switzerland Mobile peak) in deck retail" in shown.out

        # In UTC the same instant is 07:30: the all-day rate.
        utc = http.get("/rates/retail/+41791234567", params={"at": at}).json()
        assert utc["time_zone"] == "UTC" and utc["rate"]["price_per_minute"] == "0.20"
        assert utc["rate"]["band"] is None and utc["band"] is None and utc["active_bands"] == []
        april = http.get("/rates/retail/+41791234567", params={"at": "2027-04-01"}).json()
        assert april["rate"]["price_per_minute"] == "0.18" and april["next_change"] is None
        national = http.get(
            "/rates/retail/044 123 45 67",
            params={"at": at, "country_code": "41", "national_prefix": "0"},
        ).json()
        assert national["number"] == "41441234567" and national["prefix"] == "41"
        assert national["rate"]["price_per_minute"] == "0.03"
        none = http.get("/rates/retail/+8613800000000", params={"at": at})
        assert none.status_code == 200
        assert none.json()["rate"] is None and none.json()["prefix"] is None
        assert none.json()["decks"] == ["retail"]

        # Bad requests are problems with the reason.
        for path, params, status, text in [
            ("/rates/wholesale/+41791234567", {}, 404, "no rate plan named 'wholesale'"),
            ("/rates/retail/+41abc", {}, 422, "is not a called number"),
            ("/rates/retail/+41791234567", {"at": "next week"}, 422, "is not a date"),
            (
                "/rates/retail/+41791234567",
                {"at": "0001-01-01", "time_zone": "Asia/Tokyo"},  # before year 1 in UTC
                422,
                "out of range",
            ),
            ("/rates/retail/+41791234567", {"time_zone": "Mars/Base"}, 422, "unknown time zone"),
            ("/rates/retail/+41791234567", {"time_zone": "Europe"}, 422, "unknown time zone"),
            ("/rates/retail/+41791234567", {"account": "ghost"}, 404, "no account named"),
            ("/rates/retail/0791234567", {"national_prefix": "0"}, 422, "country code"),
            ("/rates/retail/+41791234567", {"country_code": "12345"}, 422, "country_code"),
        ]:
            answer = http.get(path, params=params)
            assert answer.status_code == status, (path, params, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            assert text in answer.json()["detail"], (path, params, answer.text)
        # A time zone that names a directory of the zone database is refused, not a crash.
        dir_zone = http.patch("/accounts/zurich", json={"time_zone": "Europe"})
        assert dir_zone.status_code == 422 and "unknown time zone" in dir_zone.json()["detail"]


def test_idempotency_keys(demo: str, apis) -> None:
    api = apis(demo)
    with client(api, create_token(demo, "helpdesk")) as http:
        first = http.post(
            "/accounts/prepaid-empty/payments",
            json={"amount": "5"},
            headers={"Idempotency-Key": "inv-77"},
        )
        again = http.post(
            "/accounts/prepaid-empty/payments",
            json={"amount": "5"},
            headers={"Idempotency-Key": "inv-77"},
        )
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert http.get("/accounts/prepaid-empty/balance").json()["balance"] == "5.00"
        other = http.post(
            "/accounts/prepaid-empty/payments",
            json={"amount": "6"},
            headers={"Idempotency-Key": "inv-77"},
        )
        assert other.status_code == 409
        assert other.json()["rule"] == "idempotency-key-reused"
        elsewhere = http.post(
            "/accounts/prepaid-ok/payments",
            json={"amount": "5"},
            headers={"Idempotency-Key": "inv-77"},
        )
        assert elsewhere.status_code == 409

        # Neither key nor external_id: refused, nothing moved.
        bare = http.post("/accounts/prepaid-empty/payments", json={"amount": "5"})
        assert bare.status_code == 400 and bare.json()["rule"] == "idempotency-key-required"
        # external_id alone: the ledger's own idempotency (200 and created false the second time).
        once = http.post(
            "/accounts/prepaid-empty/payments", json={"amount": "1", "external_id": "x-1"}
        )
        twice = http.post(
            "/accounts/prepaid-empty/payments", json={"amount": "1", "external_id": "x-1"}
        )
        assert (once.status_code, twice.status_code) == (201, 200)
        assert (
            twice.json()["created"] is False and twice.json()["entry_id"] == once.json()["entry_id"]
        )
        clash = http.post(
            "/accounts/prepaid-ok/payments", json={"amount": "1", "external_id": "x-1"}
        )
        assert (
            clash.status_code == 409
            and "already used for a different entry" in clash.json()["detail"]
        )
        assert http.get("/accounts/prepaid-empty/balance").json()["balance"] == "6.00"

        # A refusal is the first answer too: the same key gets it again, even once it would pass.
        refused = http.post(
            "/accounts/prepaid-ok/credits",
            json={"amount": "15"},
            headers={"Idempotency-Key": "c-15"},
        )
        assert refused.status_code == 403
        replay = http.post(
            "/accounts/prepaid-ok/credits",
            json={"amount": "15"},
            headers={"Idempotency-Key": "c-15"},
        )
        assert replay.status_code == 403 and replay.json() == refused.json()
        assert replay.headers["content-type"] == PROBLEM

        # The same key from eight clients at once: one payment.
        answers: list[httpx.Response] = []

        def pay() -> None:
            with client(api, http.headers["Authorization"].split()[1]) as own:
                answers.append(
                    own.post(
                        "/accounts/postpaid/payments",
                        json={"amount": "7"},
                        headers={"Idempotency-Key": "race"},
                    )
                )

        threads = [threading.Thread(target=pay) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [a.status_code for a in answers] == [201] * 8
        assert len({a.json()["entry_id"] for a in answers}) == 1
        assert http.get("/accounts/postpaid/balance").json()["balance"] == "-43.00"
    # Keys are per operator: another operator's same key is a new request.
    run_ocs("operator", "create", "crm", dsn=demo)
    with client(api, create_token(demo, "crm")) as crm:
        own = crm.post(
            "/accounts/prepaid-empty/payments",
            json={"amount": "5"},
            headers={"Idempotency-Key": "inv-77"},
        )
        assert own.status_code == 201 and own.json()["operator"] == "crm"


def _cli_refusal(*args: str, dsn: str) -> str:
    done = run_ocs(*args, dsn=dsn)
    assert done.code == 1, (done.out, done.err)
    prefix = "ocs: error: "
    assert done.err.startswith(prefix)
    return done.err[len(prefix) :].strip()


def test_operator_caps_refused_over_http_with_the_cli_figures(demo: str, apis) -> None:
    """Seed 004 through the API: the helpdesk's caps give the same texts as the CLI's."""
    run_ocs("account", "create", "easycall", "--credit-limit", "1000", dsn=demo)
    api = apis(demo)
    with client(api, create_token(demo, "helpdesk")) as http:
        over = http.post(
            "/accounts/prepaid-ok/credits", json={"amount": "15"}, headers={"Idempotency-Key": "a"}
        )
        assert over.status_code == 403
        body = over.json()
        assert body["type"] == "/problems/operator-limit" and body["sqlstate"] == "OC001"
        cli = _cli_refusal("credit", "add", "prepaid-ok", "15", "--operator", "helpdesk", dsn=demo)
        assert body["detail"] == cli
        assert "at most 10.00 per transaction; this credit is 15.00" in cli

        temporary = http.post(
            "/accounts/easycall/temporary-increases",
            json={"amount": "200", "until": "+40d"},
            headers={"Idempotency-Key": "b"},
        )
        assert temporary.status_code == 403
        cli = _cli_refusal(
            "credit-limit",
            "set",
            "easycall",
            "200",
            "--temporary",
            "--until",
            "+40d",
            "--operator",
            "helpdesk",
            dsn=demo,
        )
        assert temporary.json()["detail"] == cli
        assert (
            "the amount 200.00 is more than the 100.00 allowed (10% of the permanent limit 1000.00)"
            in cli
        )
        assert "the duration 40 days is longer than the 30 days allowed" in cli

        # Pete's day (seed 004): a 3.00 credit and a 2.00 refund (5.00 used), nineteen 10.00
        # credits by the two ways together (195.00), and the next 10.00 is one too many.
        three = http.post(
            "/accounts/prepaid-ok/credits", json={"amount": "3"}, headers={"Idempotency-Key": "c3"}
        )
        assert three.status_code == 201, three.text
        assert (
            run_ocs("refund", "add", "prepaid-ok", "2", "--operator", "helpdesk", dsn=demo).code
            == 0
        )
        for n in range(19):
            if n % 2:
                ok = http.post(
                    "/accounts/prepaid-ok/credits",
                    json={"amount": "10"},
                    headers={"Idempotency-Key": f"d{n}"},
                )
                assert ok.status_code == 201, ok.text
            else:
                done = run_ocs(
                    "credit", "add", "prepaid-ok", "10", "--operator", "helpdesk", dsn=demo
                )
                assert done.code == 0, done.err
        daily = http.post(
            "/accounts/prepaid-ok/credits",
            json={"amount": "10"},
            headers={"Idempotency-Key": "d19"},
        )
        assert daily.status_code == 403
        cli = _cli_refusal("credit", "add", "prepaid-ok", "10", "--operator", "helpdesk", dsn=demo)
        assert daily.json()["detail"] == cli
        assert "has used 195.00 of the daily credit/refund limit 200.00" in cli
        assert "this credit of 10.00 would take it to 205.00" in cli
        assert http.get("/operators/helpdesk").json()["used_today"] == "195.00"
        # Payments do not count.
        pay = http.post(
            "/accounts/prepaid-ok/payments", json={"amount": "20"}, headers={"Idempotency-Key": "e"}
        )
        assert pay.status_code == 201

        # Transfers: the rule and its figures.
        run_ocs("account", "update", "prepaid-ok", "--transfers", "yes", dsn=demo)
        run_ocs("account", "update", "prepaid-empty", "--transfers", "yes", dsn=demo)
        poor = http.post(
            "/transfers",
            json={"from_account": "prepaid-empty", "to_account": "prepaid-ok", "amount": "3"},
            headers={"Idempotency-Key": "f"},
        )
        assert poor.status_code == 422 and poor.json()["rule"] == "insufficient-funds"
        assert (
            poor.json()["detail"]
            == "account prepaid-empty has 0.00 available; a transfer of 3.00 needs more"
        )


def test_bad_requests_are_problems_not_crashes(demo: str, apis) -> None:
    api = apis(demo, OCS_API__MAX_BODY_BYTES="2048")
    with client(api, create_token(demo, "helpdesk")) as http:
        for body in (
            {"amount": 5},
            {"amount": "1.0000001"},
            {"amount": "-1"},
            {"amount": "1", "bogus": 1},
            {},
        ):
            answer = http.post(
                "/accounts/prepaid-ok/payments", json=body, headers={"Idempotency-Key": "k"}
            )
            assert answer.status_code == 422, (body, answer.text)
            assert answer.headers["content-type"] == PROBLEM
        zero = http.post(
            "/accounts/prepaid-ok/payments", json={"amount": "0"}, headers={"Idempotency-Key": "z"}
        )
        assert zero.status_code == 422 and "positive amount" in zero.json()["detail"]
        broken = http.post(
            "/accounts/prepaid-ok/payments",
            content=b"{not json",
            headers={"Idempotency-Key": "j", "Content-Type": "application/json"},
        )
        assert broken.status_code == 422
        large = http.post(
            "/accounts/prepaid-ok/payments",
            json={"amount": "1", "note": "x" * 900, "external_id": "y" * 190, "pad": "z" * 2000},
            headers={"Idempotency-Key": "big"},
        )
        assert large.status_code == 413 and large.json()["rule"] == "body-too-large"
        # Without a Content-Length (chunked), refused as soon as the body passes the limit.
        chunked = http.post(
            "/accounts/prepaid-ok/payments",
            content=iter([b'{"amount": "1", "note": "', b"x" * 1500, b"y" * 1500, b'"}']),
            headers={"Idempotency-Key": "chunked", "Content-Type": "application/json"},
        )
        assert chunked.status_code == 413 and chunked.json()["rule"] == "body-too-large"
        assert http.get("/no/such/path").status_code == 404
        assert http.get("/cdrs", params={"since": "yesterday"}).status_code == 422
        # Amounts up to 12 digits (micro-units fit a bigint with room for balances).
        huge = http.post(
            "/accounts/prepaid-ok/payments",
            json={"amount": "999999999999.999999"},
            headers={"Idempotency-Key": "h1"},
        )
        assert huge.status_code == 201, huge.text
        assert huge.json()["balance"] == "1000000000000.999999"
        too_big = http.post(
            "/accounts/prepaid-ok/payments",
            json={"amount": "1000000000000"},
            headers={"Idempotency-Key": "h2"},
        )
        assert too_big.status_code == 422 and too_big.headers["content-type"] == PROBLEM


def test_rate_limit_per_token(demo: str, apis) -> None:
    api = apis(demo, OCS_API__RATE_LIMIT_PER_S="0.5", OCS_API__RATE_BURST_REQUESTS="3")
    first, second = create_token(demo, "helpdesk"), create_token(demo, "helpdesk")
    with client(api, first) as http, client(api, second) as other:
        assert [http.get("/accounts").status_code for _ in range(3)] == [200, 200, 200]
        limited = http.get("/accounts")
        assert limited.status_code == 429
        assert limited.json()["rule"] == "rate-limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert other.get("/accounts").status_code == 200  # another token has its own bucket


def test_cdrs_paginated_and_filtered(demo: str, apis) -> None:
    base = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    for n in range(5):
        close_session(
            demo, "prepaid-ok", f"s{n}", seconds=60 + n, amount="0.06", at=base + timedelta(hours=n)
        )
    close_session(
        demo, "postpaid", "p0", seconds=30, amount="0.03", at=base + timedelta(minutes=30)
    )
    api = apis(demo)
    with client(api, create_token(demo, "helpdesk")) as http:
        first = http.get("/cdrs", params={"limit": 4}).json()
        assert len(first["items"]) == 4
        rest = http.get("/cdrs", params={"limit": 4, "cursor": first["next_cursor"]}).json()
        assert rest["next_cursor"] is None
        everything = first["items"] + rest["items"]
        assert len({c["cdr_id"] for c in everything}) == 6
        assert [c["ended_at"] for c in everything] == sorted(c["ended_at"] for c in everything)
        one = everything[0]
        assert one["account"] == "prepaid-ok" and one["charged"] == "0.06"
        assert one["identities"] == ["e164:15550000001", "user_name:prepaid-ok"]
        assert one["termination_cause"] == "stop" and one["destination"] is None
        assert one["generation"] == 1 and one["duration_s"] == 60
        assert (
            one["started_at"] == "2026-11-02T07:59:00Z"
            and one["ended_at"] == "2026-11-02T08:00:00Z"
        )
        window = http.get(
            "/cdrs",
            params={
                "since": (base + timedelta(hours=1)).isoformat(),
                "until": (base + timedelta(hours=3)).isoformat(),
            },
        ).json()
        assert [c["session_key"] for c in window["items"]] == ["s1", "s2"]
        # The key used again after its session ended: a new generation, its own CDR.
        close_session(
            demo,
            "prepaid-ok",
            "s0",
            seconds=5,
            amount="0.01",
            at=base + timedelta(hours=9),
            generation=2,
        )
        reused = http.get("/cdrs", params={"since": (base + timedelta(hours=8)).isoformat()})
        assert [(c["session_key"], c["generation"]) for c in reused.json()["items"]] == [("s0", 2)]
        mine = http.get("/accounts/postpaid/usage").json()
        assert [c["session_key"] for c in mine["items"]] == ["p0"]
        assert http.get("/accounts/nobody/usage").status_code == 404


def test_cdr_export_cli(demo: str) -> None:
    base = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    for n in range(3):
        close_session(
            demo, "prepaid-ok", f"e{n}", seconds=10, amount="0.01", at=base + timedelta(minutes=n)
        )
    csv_out = run_ocs("cdr", "export", "--since", "2026-11-03", "--until", "2026-11-04", dsn=demo)
    assert csv_out.code == 0, csv_out.err
    lines = csv_out.out.splitlines()
    assert lines[0].startswith("cdr_id,account,account_id,identities,started_at,ended_at")
    assert len(lines) == 4 and "exported 3 CDRs" in csv_out.err
    jsonl = run_ocs(
        "cdr", "export", "--since", "2026-11-03T09:01:00Z", "--format", "jsonl", dsn=demo
    )
    records = [json.loads(line) for line in jsonl.out.splitlines()]
    assert [r["session_key"] for r in records] == ["e1", "e2"]
    assert records[0]["charged"] == "0.01" and records[0]["duration_s"] == 10
    none = run_ocs("cdr", "export", "--since", "2026-11-05", dsn=demo)
    assert none.out.splitlines() == [lines[0]] and "exported 0 CDRs" in none.err
    bad = run_ocs("cdr", "export", "--since", "2026-11-05", "--until", "2026-11-01", dsn=demo)
    assert bad.code == 2 and "is not after --since" in bad.err


def test_openapi_served_equals_the_committed_document(demo: str, apis) -> None:
    api = apis(demo)
    assert httpx.get(f"{api.url}/openapi.json", timeout=10).status_code == 401
    with client(api, create_token(demo, "helpdesk")) as http:
        served = http.get("/openapi.json").json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert served["openapi"].startswith("3.1")
    assert served == committed, (
        "docs/openapi.json is stale: run `ocs api --openapi > docs/openapi.json`"
    )
