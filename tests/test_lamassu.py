"""Lamassu source: a real PostgreSQL shaped like a Lamassu server's, polled through the API.

Every test gets a fresh Lamassu database (a template clone) and its own operator and
machines. Configurations are saved with enabled=false unless a test is about the
periodic poller, so only the test's own POST /lamassu/poll reads them.
Every response body and every log line is recorded; the last test checks that no
Lamassu password ever appears in any of them.
"""

import json
import secrets
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from lamassu_fixture import (
    NOGRANT,
    NOGRANT_PASSWORD,
    READER_PASSWORD,
    PasswordCatcher,
    device_id,
    lamassu_server,
    start_in_background,
)

API = "/satmachineadmin/api/v1"
# The password an operator stored for one server; a test checks it never reaches
# another (and, like the others, never a response or a log line).
STORED_PASSWORD = "St-" + secrets.token_hex(12) + "-pw"
SECRETS = (READER_PASSWORD, NOGRANT_PASSWORD, "WrOng-pass-7788", STORED_PASSWORD)
RESPONSES: list[str] = []
LOGS: list[str] = []

__all__ = ["lamassu_server"]
start_in_background()  # initdb overlaps LNbits' start-up


@pytest.fixture(scope="module", autouse=True)
def capture_logs() -> Any:
    from loguru import logger

    sink = logger.add(lambda message: LOGS.append(str(message)), level="DEBUG")
    yield
    logger.remove(sink)


async def call(http: Any, method: str, path: str, headers: dict, **kwargs: Any) -> Any:
    response = await http.request(method, f"{API}{path}", headers=headers, **kwargs)
    RESPONSES.append(response.text)
    return response


async def configure(
    http: Any, operator: Any, lamassu_db: Any, **overrides: Any
) -> dict:
    body = lamassu_db.config(enabled=False, **overrides)
    response = await call(http, "PUT", "/lamassu/config", operator.admin, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def poll(http: Any, operator: Any) -> dict:
    response = await call(http, "POST", "/lamassu/poll", operator.admin)
    assert response.status_code == 200, response.text
    return response.json()


async def status(http: Any, operator: Any) -> dict:
    response = await call(http, "GET", "/lamassu/status", operator.invoice)
    assert response.status_code == 200, response.text
    return response.json()


async def settlements(operator: Any, machine: dict) -> dict:
    from satmachineadmin import crud

    rows, _ = await crud.list_settlements(
        operator.id, machine_id=machine["id"], limit=500
    )
    return {s.external_id: s for s in rows}


async def linked_machine(
    factory: Any, operator: Any, lamassu_db: Any, **extra: Any
) -> tuple[dict, str]:
    device = device_id()
    await lamassu_db.add_device(device)
    machine = await factory.machine(operator, lamassu_device_id=device, **extra)
    return machine, device


# ---------------------------------------------------------------- configuration


async def test_config_validation_and_write_only_password(http, factory, lamassu_server):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()

    response = await call(http, "GET", "/lamassu/config", operator.invoice)
    assert response.status_code == 404
    assert (await status(http, operator)) == {"configured": False}

    bad = [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "abc"}, "port"),
        ({"sslmode": "sometimes"}, "sslmode"),
        ({"poll_interval_seconds": 5}, "poll_interval_seconds"),
        ({"poll_interval_seconds": 86401}, "poll_interval_seconds"),
        ({"lookback_hours": 0}, "lookback_hours"),
        ({"lookback_hours": 721}, "lookback_hours"),
        ({"host": ""}, "host"),
        ({"host": "   "}, "host"),
        ({"database": ""}, "database"),
        ({"username": None}, "username"),
    ]
    for override, field in bad:
        response = await call(
            http,
            "PUT",
            "/lamassu/config",
            operator.admin,
            json=lamassu_db.config(**override),
        )
        assert response.status_code == 400, (override, response.text)
        assert field in response.json()["detail"], response.text
    response = await call(
        http,
        "PUT",
        "/lamassu/config",
        operator.admin,
        json={**lamassu_db.config(), "dsn": "x"},
    )
    assert response.status_code == 400
    # Reads take an invoice key; writes need the admin key.
    response = await call(
        http, "PUT", "/lamassu/config", operator.invoice, json=lamassu_db.config()
    )
    assert response.status_code in (401, 403)

    saved = await configure(http, operator, lamassu_db)
    assert saved["password_set"] is True
    assert "password" not in saved and "password_encrypted" not in saved
    response = await call(http, "GET", "/lamassu/config", operator.invoice)
    assert response.status_code == 200
    got = response.json()
    assert got["password_set"] is True
    assert got["database"] == lamassu_db.name and got["sslmode"] == "disable"
    assert not any("password" in key and key != "password_set" for key in got)

    # Changing other settings without a password keeps the stored one.
    body = lamassu_db.config(enabled=False, lookback_hours=24)
    body.pop("password")
    response = await call(http, "PUT", "/lamassu/config", operator.admin, json=body)
    assert response.status_code == 200
    assert response.json()["password_set"] is True
    assert response.json()["lookback_hours"] == 24
    result = await poll(http, operator)
    assert result["ok"] is True, result

    # Stored encrypted with LNbits' secret, never as the plain password.
    from satmachineadmin.lamassu import config as lamassu_config
    from satmachineadmin.lamassu import connection as lamassu_connection

    config = await lamassu_config.get_config(operator.id)
    assert config and config.password_encrypted
    assert READER_PASSWORD not in config.password_encrypted
    assert (
        lamassu_connection.decrypt_password(config.password_encrypted)
        == READER_PASSWORD
    )

    # "" removes it.
    response = await call(
        http,
        "PUT",
        "/lamassu/config",
        operator.admin,
        json=lamassu_db.config(password="", enabled=False),
    )
    assert response.json()["password_set"] is False

    # Another operator sees nothing of it.
    other = await factory.operator()
    response = await call(http, "GET", "/lamassu/config", other.invoice)
    assert response.status_code == 404


# ---------------------------------------------------------------- what lands


async def test_only_successful_transactions_land_exactly_once(
    http, factory, lamassu_server
):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    await configure(http, operator, lamassu_db)

    # The 4000 GTQ field example.
    example = await lamassu_db.cash_out(
        device,
        fiat="4000",
        crypto_atoms=512400,
        commission_percentage=Decimal("0.055"),
        raw_ticker_price=Decimal("826091.28"),
    )
    lightning = await lamassu_db.cash_out(
        device, fiat="100", crypto_atoms=12810, crypto_code="LN", status="instant"
    )
    authorized = await lamassu_db.cash_out(
        device, fiat="50", crypto_atoms=6405, status="authorized"
    )
    cash_in = await lamassu_db.cash_in(device, fiat="100", crypto_atoms=11440)
    estimated = await lamassu_db.cash_out(
        device,
        fiat="4000",
        crypto_atoms=512400,
        raw_ticker_price=None,
        commission_percentage=Decimal("0.055"),
        discount=50,
    )
    # Not payable: each for a different reason.
    await lamassu_db.cash_out(
        device, dispense=True, dispense_confirmed=False, status="confirmed"
    )
    await lamassu_db.cash_out(
        device, dispense=True, dispense_confirmed=None, status="authorized"
    )
    await lamassu_db.cash_out(  # operator cancel
        device,
        dispense=True,
        dispense_confirmed=False,
        error="Operator cancel",
        error_code="operatorCancel",
    )
    await lamassu_db.cash_out(device, dispense_confirmed=True, error="Dispense error")
    await lamassu_db.cash_out(device, status="rejected")
    await lamassu_db.cash_out(
        device, status="notSeen", dispense=False, dispense_confirmed=False
    )
    await lamassu_db.cash_out(
        device, status="published", dispense=False, dispense_confirmed=False
    )
    await lamassu_db.cash_out(device, status="insufficientFunds")
    await lamassu_db.cash_out(device, crypto_code="ETH")
    await lamassu_db.cash_out(
        device, age=timedelta(hours=80)
    )  # outside the 72 h window
    await lamassu_db.cash_in(device, send_confirmed=False)
    await lamassu_db.cash_in(device, send_confirmed=True, error="Insufficient funds")
    await lamassu_db.cash_in(device, crypto_code="ETH")

    first = await poll(http, operator)
    assert first["ok"] is True, first
    assert first["found"] == 5
    assert first["new"] == 5 and first["rejected"] == 0
    for _ in range(3):
        again = await poll(http, operator)
        assert again["ok"] is True and again["new"] == 0 and again["found"] == 5
        assert again["already_known"] == 5

    landed = await settlements(operator, machine)
    assert set(landed) == {example, lightning, authorized, cash_in, estimated}

    s = landed[example]
    assert (s.source, s.tx_type, s.currency) == ("lamassu", "cash_out", "GTQ")
    assert s.fiat_amount_minor == 400000
    assert s.principal_sats == 484208 and s.fee_sats == 28192 and s.wire_sats == 512400
    assert s.estimated is False
    assert s.status != "rejected"
    raw = json.loads(s.raw_payload)
    assert (
        raw["id"] == example
        and raw["fiat"] == "4000.00000"
        and raw["table"] == "cash_out_txs"
    )
    assert abs(s.external_created_at - (time.time() - 300)) < 60

    s = landed[estimated]
    # c_eff = 0.055 * (1 - 50/100) = 0.0275; 512400 * 0.9725 = 498309
    assert s.estimated is True
    assert (s.principal_sats, s.fee_sats) == (498309, 14091)

    s = landed[cash_in]
    # 100 GTQ at 826091.28 GTQ/BTC = 12105 sats of market value; 11440 sent.
    assert s.tx_type == "cash_in"
    assert (s.fiat_amount_minor, s.principal_sats, s.fee_sats, s.wire_sats) == (
        10000,
        12105,
        665,
        11440,
    )

    assert landed[lightning].wire_sats == 12810

    state = await status(http, operator)
    assert state["last_found"] == 5 and state["last_new"] == 0
    assert state["last_error"] is None and state["consecutive_failures"] == 0
    assert state["unknown_devices"] == []
    assert state["newest_created_seen"] is not None
    assert state["healthy"] is True


async def test_unusable_rows_are_rejected_once_with_reason(
    http, factory, lamassu_server
):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    await configure(http, operator, lamassu_db)

    wrong_currency = await lamassu_db.cash_out(device, fiat_code="USD")
    too_precise = await lamassu_db.cash_out(device, fiat="4000.125")
    negative_fee = await lamassu_db.cash_out(device, fiat="4000", crypto_atoms=400000)
    zero_atoms = await lamassu_db.cash_out(device, crypto_atoms=0)
    no_rate = await lamassu_db.cash_out(
        device, raw_ticker_price=None, commission_percentage=None
    )
    good = await lamassu_db.cash_out(device)

    result = await poll(http, operator)
    assert result["ok"] is True, result
    assert result["new"] == 6 and result["rejected"] == 5
    assert (await poll(http, operator))["new"] == 0

    landed = await settlements(operator, machine)
    assert landed[good].status != "rejected"
    reasons = {
        wrong_currency: "USD differs from the machine's currency GTQ",
        too_precise: "more decimals than GTQ allows",
        negative_fee: "fee would be negative",
        zero_atoms: "crypto_atoms 0 must be positive",
        no_rate: "principal cannot be determined",
    }
    for tx_id, reason in reasons.items():
        s = landed[tx_id]
        assert s.status == "rejected", (tx_id, s)
        assert reason in (s.error or ""), s.error
        assert s.principal_sats == 0 and s.fee_sats == 0
        assert json.loads(s.raw_payload)["id"] == tx_id


async def test_redeem_later_lands_on_a_later_poll_and_restart_lands_nothing_twice(
    http, factory, lamassu_server
):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    await configure(http, operator, lamassu_db)

    done = await lamassu_db.cash_out(device)
    later = await lamassu_db.cash_out(
        device,
        age=timedelta(hours=20),
        status="confirmed",
        dispense=False,
        dispense_confirmed=False,
    )
    first = await poll(http, operator)
    assert first["new"] == 1
    assert set(await settlements(operator, machine)) == {done}

    # The customer comes back the next day: Lamassu confirms the dispense.
    await lamassu_db.update(
        "cash_out_txs", later, dispense=True, dispense_confirmed=True
    )
    second = await poll(http, operator)
    assert second["new"] == 1 and second["already_known"] == 1
    assert set(await settlements(operator, machine)) == {done, later}

    # A restart: no in-process state, status row reset by saving the settings again.
    from satmachineadmin import crud
    from satmachineadmin.lamassu import poller as lamassu_poller

    lamassu_poller._locks.clear()
    lamassu_poller._known_cache.clear()
    await configure(http, operator, lamassu_db)
    await crud.save_lamassu_poll_status(
        operator.id, {"newest_created_seen": None, "last_found": 0, "last_new": 0}
    )
    third = await poll(http, operator)
    assert third["ok"] is True and third["new"] == 0 and third["found"] == 2
    assert third["already_known"] == 2
    assert len(await settlements(operator, machine)) == 2
    # The same after a restart with a big backlog (one window query instead of
    # per-id lookups).
    lamassu_poller._known_cache.clear()
    threshold, lamassu_poller.WINDOW_QUERY_THRESHOLD = (
        lamassu_poller.WINDOW_QUERY_THRESHOLD,
        0,
    )
    try:
        again = await poll(http, operator)
    finally:
        lamassu_poller.WINDOW_QUERY_THRESHOLD = threshold
    assert again["new"] == 0 and again["already_known"] == 2

    # Even past the cheap "already known" filters, the unique key holds.
    originals = (crud.known_lamassu_external_ids, crud.known_lamassu_settlements)

    async def forgetful(*args: Any) -> set:
        return set()

    crud.known_lamassu_external_ids = forgetful  # type: ignore[assignment]
    crud.known_lamassu_settlements = forgetful  # type: ignore[assignment]
    lamassu_poller._known_cache.clear()
    try:
        fourth = await poll(http, operator)
    finally:
        crud.known_lamassu_external_ids, crud.known_lamassu_settlements = originals
    assert fourth["ok"] is True and fourth["new"] == 0 and fourth["already_known"] == 2
    assert len(await settlements(operator, machine)) == 2


async def test_unknown_unpaired_inactive_and_foreign_devices_are_not_paid(
    http, factory, lamassu_server
):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    unpaired_machine, unpaired = await linked_machine(factory, operator, lamassu_db)
    inactive_machine, inactive = await linked_machine(factory, operator, lamassu_db)
    response = await call(
        http,
        "PUT",
        f"/machines/{inactive_machine['id']}",
        operator.admin,
        json={"status": "inactive"},
    )
    assert response.status_code == 200, response.text
    # Another operator's machine on a device of this Lamassu server.
    other = await factory.operator()
    foreign_machine, foreign = await linked_machine(factory, other, lamassu_db)
    stranger = device_id()
    await lamassu_db.add_device(stranger)
    await configure(http, operator, lamassu_db)

    paid = await lamassu_db.cash_out(device)
    await lamassu_db.cash_out(stranger)
    await lamassu_db.cash_in(stranger)
    await lamassu_db.cash_out(foreign)
    await lamassu_db.cash_out(unpaired)
    await lamassu_db.unpair_device(unpaired)
    await lamassu_db.cash_out(inactive)

    result = await poll(http, operator)
    assert result["ok"] is True, result
    assert result["found"] == 6 and result["new"] == 1 and result["not_paid"] == 5
    assert set(await settlements(operator, machine)) == {paid}
    for m, owner in (
        (unpaired_machine, operator),
        (inactive_machine, operator),
        (foreign_machine, other),
    ):
        assert await settlements(owner, m) == {}

    unknown = {
        d["device_id"]: d for d in (await status(http, operator))["unknown_devices"]
    }
    assert set(unknown) == {stranger, foreign, unpaired, inactive}
    assert unknown[stranger]["transactions"] == 2
    assert "not linked" in unknown[stranger]["reason"]
    assert unknown[foreign]["transactions"] == 1
    assert "unpaired" in unknown[unpaired]["reason"]
    assert "inactive" in unknown[inactive]["reason"]

    # Linking the stranger's device later pays what is still in the window.
    linked = await factory.machine(operator, lamassu_device_id=stranger)
    result = await poll(http, operator)
    assert result["new"] == 2
    assert len(await settlements(operator, linked)) == 2


async def test_lamassu_without_fixed_fee_column(http, factory, lamassu_server):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database(fixed_fee=False)
    machine, device = await linked_machine(factory, operator, lamassu_db)
    await configure(http, operator, lamassu_db)
    tx = await lamassu_db.cash_out(device)

    response = await call(http, "POST", "/lamassu/test", operator.admin)
    assert response.status_code == 200
    assert (
        response.json()["ok"] is True and response.json()["fixed_fee_column"] is False
    )
    result = await poll(http, operator)
    assert result["ok"] is True and result["new"] == 1, result
    s = (await settlements(operator, machine))[tx]
    assert (s.principal_sats, s.fee_sats) == (484208, 28192)
    assert "fixed_fee" not in json.loads(s.raw_payload)


async def test_kept_connection_is_replaced_when_the_server_drops_it(
    http, factory, lamassu_server
):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    await configure(http, operator, lamassu_db)
    first = await lamassu_db.cash_out(device)
    assert (await poll(http, operator))["new"] == 1

    # Lamassu's server restarts (or an idle timeout fires): the kept session dies.
    killed = await lamassu_db.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE usename = 'lamassu_reader' AND datname = $1",
        lamassu_db.name,
    )
    assert killed
    second = await lamassu_db.cash_out(device)
    result = await poll(http, operator)
    assert result["ok"] is True and result["new"] == 1, result
    assert result["status"]["consecutive_failures"] == 0
    assert set(await settlements(operator, machine)) == {first, second}

    # New settings never reuse the old session: a wrong password is reported as such.
    await configure(http, operator, lamassu_db, password=SECRETS[2])
    result = await poll(http, operator)
    assert result["ok"] is False and "wrong password" in result["error"]


# ---------------------------------------------------------------- test and failures


async def test_connection_test_reports_what_to_fix(http, factory, lamassu_server):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    _, device = await linked_machine(factory, operator, lamassu_db)
    await lamassu_db.cash_out(device)
    await lamassu_db.cash_out(device, status="rejected")
    await lamassu_db.cash_in(device)

    response = await call(http, "POST", "/lamassu/test", operator.admin)
    assert response.status_code == 404  # nothing stored, nothing in the body

    # Testing settings before saving them.
    response = await call(
        http, "POST", "/lamassu/test", operator.admin, json=lamassu_db.config()
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True, body
    assert body["transactions_visible"] == 3
    assert body["server_time"]
    assert all(check["ok"] for check in body["checks"])

    await configure(http, operator, lamassu_db)
    response = await call(http, "POST", "/lamassu/test", operator.admin)
    assert (
        response.json()["ok"] is True and response.json()["transactions_visible"] == 3
    )
    # An invoice key may not probe connections.
    response = await call(http, "POST", "/lamassu/test", operator.invoice)
    assert response.status_code in (401, 403)

    cases = [
        (lamassu_db.config(port=lamassu_server.port + 1), "connect", "cannot connect"),
        (lamassu_db.config(host="127.0.0.1", port=1), "connect", "cannot connect"),
        (lamassu_db.config(password=SECRETS[2]), "login", "wrong password"),
        (
            lamassu_db.config(username=NOGRANT, password=NOGRANT_PASSWORD),
            "cash_out_txs",
            "GRANT SELECT",
        ),
        (
            lamassu_db.config(database="empty"),
            "cash_out_txs",
            "does not look like a Lamassu",
        ),
        (lamassu_db.config(database="nosuchdb"), "login", "does not exist"),
    ]
    for config, check, words in cases:
        response = await call(
            http, "POST", "/lamassu/test", operator.admin, json=config
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ok"] is False, body
        failed = [c for c in body["checks"] if not c["ok"]]
        assert failed and failed[0]["name"] == check, body
        assert words in failed[0]["message"], body


async def test_failed_polls_show_in_status_and_back_off(http, factory, lamassu_server):
    from satmachineadmin.lamassu import config as lamassu_config
    from satmachineadmin.lamassu import poller as lamassu_poller

    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    tx = await lamassu_db.cash_out(device)

    cases = [
        ({"port": lamassu_server.port + 1}, "cannot connect"),
        ({"password": SECRETS[2]}, "wrong password"),
        ({"username": NOGRANT, "password": NOGRANT_PASSWORD}, "GRANT SELECT"),
        ({"database": "empty"}, "does not look like a Lamassu"),
    ]
    for override, words in cases:
        await configure(
            http, operator, lamassu_db, poll_interval_seconds=60, **override
        )
        for failures in (1, 2, 3):
            result = await poll(http, operator)
            assert result["ok"] is False and words in result["error"], result
            state = result["status"]
            assert state["consecutive_failures"] == failures
            assert words in state["last_error"]
            assert state["healthy"] is False
            config = await lamassu_config.get_config(operator.id)
            assert config and config.last_poll_at
            delay = config.next_poll_at - config.last_poll_at
            assert abs(delay - min(60 * 2**failures, 3600)) <= 2, (failures, delay)
        assert await settlements(operator, machine) == {}

    # Lamassu is back: the next poll catches up and clears the error.
    await configure(http, operator, lamassu_db)
    result = await poll(http, operator)
    assert result["ok"] is True and result["new"] == 1
    state = await status(http, operator)
    assert state["last_error"] is None and state["consecutive_failures"] == 0
    assert set(await settlements(operator, machine)) == {tx}

    assert lamassu_poller.backoff_seconds(60, 10) == 3600
    assert lamassu_poller.backoff_seconds(10, 1) == 20
    assert lamassu_poller.backoff_seconds(7200, 3) == 7200


async def test_poll_all_due_polls_due_configs_only(http, factory, lamassu_server):
    from satmachineadmin import crud
    from satmachineadmin.lamassu import config as lamassu_config
    from satmachineadmin.lamassu import poller as lamassu_poller

    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    first = await lamassu_db.cash_out(device)
    response = await call(
        http,
        "PUT",
        "/lamassu/config",
        operator.admin,
        json=lamassu_db.config(poll_interval_seconds=600),
    )
    assert response.status_code == 200

    await lamassu_poller.poll_all_due()
    assert set(await settlements(operator, machine)) == {first}
    config = await lamassu_config.get_config(operator.id)
    assert config and config.next_poll_at > time.time() + 500

    # Not due yet: a new transaction waits for the next slot.
    second = await lamassu_db.cash_out(device)
    await lamassu_poller.poll_all_due()
    assert set(await settlements(operator, machine)) == {first}

    await crud.save_lamassu_poll_status(operator.id, {"next_poll_at": 0})
    await lamassu_poller.poll_all_due()
    assert set(await settlements(operator, machine)) == {first, second}

    # Disabled configurations are left alone by the loop.
    await configure(http, operator, lamassu_db)
    third = await lamassu_db.cash_out(device)
    await lamassu_poller.poll_all_due()
    assert third not in await settlements(operator, machine)


# ---------------------------------------------------------------- the stored password


async def test_stored_password_is_sent_only_to_the_target_it_was_entered_for(
    http, factory, lamassu_server
):
    """The issue "Every sat held by the database": a fake PostgreSQL asking for a
    cleartext password received the stored one when only the host was changed."""
    operator = await factory.operator()
    catcher = PasswordCatcher()
    try:
        port, other_port = 15432, 15433
        host = await catcher.listen(port)
        other_host = await catcher.listen(port)
        await catcher.listen(other_port, host)
        base = {
            "host": host,
            "port": port,
            "database": "lamassu",
            "username": "reader",
            "sslmode": "disable",
            "enabled": False,
        }
        response = await call(
            http,
            "PUT",
            "/lamassu/config",
            operator.admin,
            json={**base, "password": STORED_PASSWORD},
        )
        assert response.status_code == 200, response.text

        # The same target without a password: the stored one is used, there only.
        response = await call(http, "POST", "/lamassu/test", operator.admin, json=base)
        assert response.status_code == 200, response.text
        assert response.json()["ok"] is False
        assert [(c.socket, c.user, c.database, c.password) for c in catcher.logins] == [
            (f"{host}/.s.PGSQL.{port}", "reader", "lamassu", STORED_PASSWORD)
        ]
        catcher.logins.clear()
        attempts = catcher.attempts

        changes = [
            ({"host": other_host}, "host"),
            ({"port": other_port}, "port"),
            ({"database": "elsewhere"}, "database"),
            ({"username": "someone_else"}, "username"),
        ]
        for change, field in changes:
            for body in ({**base, **change}, {**base, **change, "password": None}):
                for method, path in (
                    ("POST", "/lamassu/test"),
                    ("PUT", "/lamassu/config"),
                ):
                    response = await call(http, method, path, operator.admin, json=body)
                    assert response.status_code == 422, (method, change, response.text)
                    detail = response.json()["detail"]
                    assert "password" in detail and field in detail, detail
        # Refused before connecting: no server was even asked.
        assert catcher.attempts == attempts and catcher.logins == []
        response = await call(http, "GET", "/lamassu/config", operator.invoice)
        saved = response.json()
        assert (saved["host"], saved["port"], saved["database"], saved["username"]) == (
            host,
            port,
            "lamassu",
            "reader",
        )
        assert saved["password_set"] is True

        # With a password for the new target it goes through, with that password.
        moved = {**base, "host": other_host, "password": "New-target-pw"}
        response = await call(http, "POST", "/lamassu/test", operator.admin, json=moved)
        assert response.status_code == 200, response.text
        assert [(c.socket, c.password) for c in catcher.logins] == [
            (f"{other_host}/.s.PGSQL.{port}", "New-target-pw")
        ]
        response = await call(
            http, "PUT", "/lamassu/config", operator.admin, json=moved
        )
        assert response.status_code == 200 and response.json()["password_set"] is True
        # "" (no password at all) may go anywhere.
        response = await call(
            http,
            "PUT",
            "/lamassu/config",
            operator.admin,
            json={**base, "port": other_port, "password": ""},
        )
        assert response.status_code == 200 and response.json()["password_set"] is False
        # Nothing stored, nothing to leak: a new target without a password is fine.
        response = await call(
            http,
            "PUT",
            "/lamassu/config",
            operator.admin,
            json={**base, "database": "third"},
        )
        assert response.status_code == 200, response.text
        assert all(c.password != STORED_PASSWORD for c in catcher.logins)
    finally:
        await catcher.close()


async def test_same_target_without_password_keeps_working_on_a_real_server(
    http, factory, lamassu_server
):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    _, device = await linked_machine(factory, operator, lamassu_db)
    await lamassu_db.cash_out(device)
    await configure(http, operator, lamassu_db)

    same = lamassu_db.config(enabled=False, lookback_hours=24, sslmode="prefer")
    same.pop("password")
    response = await call(http, "POST", "/lamassu/test", operator.admin, json=same)
    assert response.status_code == 200 and response.json()["ok"] is True, response.text
    response = await call(http, "PUT", "/lamassu/config", operator.admin, json=same)
    assert response.status_code == 200, response.text
    assert response.json()["password_set"] is True
    assert (await poll(http, operator))["new"] == 1

    # Another role on the same server: the reader's password is not tried for it.
    nogrant = {**same, "username": NOGRANT}
    for method, path in (("POST", "/lamassu/test"), ("PUT", "/lamassu/config")):
        response = await call(http, method, path, operator.admin, json=nogrant)
        assert response.status_code == 422, response.text
    # Another database on the same server, likewise.
    other_db = await lamassu_server.new_database()
    moved = {**same, "database": other_db.name}
    response = await call(http, "POST", "/lamassu/test", operator.admin, json=moved)
    assert response.status_code == 422, response.text
    response = await call(
        http,
        "POST",
        "/lamassu/test",
        operator.admin,
        json={**moved, "password": READER_PASSWORD},
    )
    assert response.status_code == 200 and response.json()["ok"] is True


# ---------------------------------------------------------------- outages and the cursor


async def _cursor(operator: Any) -> int | None:
    from satmachineadmin.lamassu import config as lamassu_config

    config = await lamassu_config.get_config(operator.id)
    assert config is not None
    return config.cursor_at


async def _set_cursor(operator: Any, cursor_at: int | None) -> None:
    from satmachineadmin import crud

    await crud.db.execute(
        "UPDATE satmachineadmin.lamassu_config SET cursor_at = :c "
        "WHERE operator_user_id = :op",
        {"c": cursor_at, "op": operator.id},
    )


async def _new_process() -> None:
    """What a restart of LNbits forgets: every in-memory cache of the poller."""
    from satmachineadmin.lamassu import connection as lamassu_connection
    from satmachineadmin.lamassu import poller as lamassu_poller

    lamassu_poller._locks.clear()
    lamassu_poller._known_cache.clear()
    await lamassu_connection.close_connections()


async def test_an_outage_longer_than_the_lookback_loses_nothing(
    http, factory, lamassu_server, monkeypatch
):
    from satmachineadmin.lamassu import connection as lamassu_connection
    from satmachineadmin.lamassu import poller as lamassu_poller

    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    await configure(http, operator, lamassu_db, lookback_hours=1)

    before = await lamassu_db.cash_out(device, age=timedelta(minutes=10))
    first = await poll(http, operator)
    assert first["ok"] is True and first["new"] == 1, first

    # That was the last poll Lamassu answered: six hours ago.
    six_hours_ago = int(time.time()) - 6 * 3600
    await _set_cursor(operator, six_hours_ago)
    # A redeem-later cash-out created just before the outage, dispensed during it.
    redeemed = await lamassu_db.cash_out(device, age=timedelta(hours=6, minutes=30))
    # Created during the outage: all older than the lookback once Lamassu is back.
    during = [
        await lamassu_db.cash_out(device, age=timedelta(hours=5)),
        await lamassu_db.cash_in(device, age=timedelta(hours=4)),
        await lamassu_db.cash_out(device, age=timedelta(hours=2), crypto_code="LN"),
    ]
    # Three at the same instant, so a page boundary falls among equal `created`.
    same_moment = datetime.now(timezone.utc) - timedelta(hours=3)
    during += [await lamassu_db.cash_out(device, created=same_moment) for _ in range(3)]
    recent = await lamassu_db.cash_out(device, age=timedelta(minutes=20))
    # Long before the cursor (and the lookback behind it): not read again.
    ancient = await lamassu_db.cash_out(device, age=timedelta(hours=30))
    await lamassu_db.cash_out(device, age=timedelta(hours=3), status="rejected")

    # Lamassu unreachable: failed polls leave the cursor where it was.
    await configure(
        http,
        operator,
        lamassu_db,
        lookback_hours=1,
        port=lamassu_server.port + 1,
        password=READER_PASSWORD,
    )
    failed = await poll(http, operator)
    assert failed["ok"] is False
    assert await _cursor(operator) == six_hours_ago
    # Lamassu is back, LNbits restarted meanwhile; saving the settings again keeps the
    # cursor.
    await configure(http, operator, lamassu_db, lookback_hours=1)
    assert await _cursor(operator) == six_hours_ago
    await _new_process()

    # Catch-up in small pages, ids first as full rows: no read holds the whole gap.
    monkeypatch.setattr(lamassu_poller, "KEY_PAGE", 2, raising=False)
    monkeypatch.setattr(lamassu_poller, "FETCH_BATCH", 2)
    sizes: list[int] = []
    real_read = lamassu_connection.read

    async def counting_read(conn: Any, sql: str, *args: Any) -> list:
        rows = await real_read(conn, sql, *args)
        if "cash_out_txs" in sql or "cash_in_txs" in sql:  # transactions held at once
            sizes.append(sum(len(r["ids"]) if "ids" in r.keys() else 1 for r in rows))
        return rows

    monkeypatch.setattr(lamassu_poller, "read", counting_read)
    caught_up = await poll(http, operator)
    assert caught_up["ok"] is True, caught_up
    landed = await settlements(operator, machine)
    assert set(landed) == {before, redeemed, *during, recent}, (
        f"missing: {sorted({redeemed, *during, recent} - set(landed))}"
    )
    assert ancient not in landed
    assert caught_up["new"] == 1 + len(during) + 1
    assert sizes and max(sizes) <= 2 and len(sizes) > 8, sizes
    # The cursor is where this poll read up to (Lamassu's clock, here the same).
    cursor = await _cursor(operator)
    assert cursor is not None and abs(cursor - time.time()) < 60
    state = await status(http, operator)
    assert (
        state["cursor_at"] == datetime.fromtimestamp(cursor, timezone.utc).isoformat()
    )

    # Once only: again, and again after another restart.
    again = await poll(http, operator)
    assert again["ok"] is True and again["new"] == 0, again
    await _new_process()
    again = await poll(http, operator)
    assert again["ok"] is True and again["new"] == 0, again
    assert len(await settlements(operator, machine)) == len(landed)


def test_window_start_rules():
    """min(now, cursor) - lookback; the start date on the first poll; never before it."""
    from satmachineadmin.lamassu.config import LamassuConfig
    from satmachineadmin.lamassu.poller import window_start

    hour = 3600
    now = 1_750_000_000

    def start(**fields: Any) -> int:
        config = LamassuConfig(
            operator_user_id="op",
            host="h",
            database_name="d",
            username="u",
            lookback_hours=72,
            created_at=0,
            updated_at=0,
            **fields,
        )
        return window_start(config, now)

    assert start() == now - 72 * hour  # first poll: the lookback, as ever
    assert start(cursor_at=now - 60) == now - 72 * hour - 60  # steady
    assert start(cursor_at=now - 30 * 24 * hour) == now - 33 * 24 * hour  # outage
    assert start(cursor_at=now + hour) == now - 72 * hour  # Lamassu's clock went back
    assert start(start_at=now - 400 * 24 * hour) == now - 400 * 24 * hour
    assert start(start_at=now - hour) == now - hour
    assert start(start_at=now - hour, cursor_at=now - 60) == now - hour
    assert (
        start(start_at=now - 40 * 24 * hour, cursor_at=now - 30 * 24 * hour)
        == now - 33 * 24 * hour
    )


async def test_start_at_excludes_older_history(http, factory, lamassu_server):
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    machine, device = await linked_machine(factory, operator, lamassu_db)
    old = await lamassu_db.cash_out(device, age=timedelta(hours=3))
    older = await lamassu_db.cash_in(device, age=timedelta(days=40))
    new = await lamassu_db.cash_out(device, age=timedelta(hours=1))

    now = datetime.now(timezone.utc)
    bad = [
        (now + timedelta(hours=1)).isoformat(),
        "2013-12-31T23:00:00+00:00",
        "2013-06-01",
        "yesterday",
        "2024-02-30",
        12345,
        True,
    ]
    for value in bad:
        response = await call(
            http,
            "PUT",
            "/lamassu/config",
            operator.admin,
            json=lamassu_db.config(enabled=False, start_at=value),
        )
        assert response.status_code == 400, (value, response.text)
        assert "start_at" in response.json()["detail"], response.text

    start = (now - timedelta(hours=2)).replace(microsecond=0)
    saved = await configure(http, operator, lamassu_db, start_at=start.isoformat())
    assert saved["start_at"] == start.isoformat()
    assert saved["cursor_at"] is None
    state = await status(http, operator)
    assert state["start_at"] == start.isoformat() and state["cursor_at"] is None

    first = await poll(http, operator)
    assert first["ok"] is True and first["new"] == 1, first
    assert set(await settlements(operator, machine)) == {new}
    # Never later either, though the 72-hour lookback reaches back past it.
    await _new_process()
    assert (await poll(http, operator))["new"] == 0
    assert set(await settlements(operator, machine)) == {new}
    # Saving other settings (start_at left out) keeps it.
    saved = await configure(http, operator, lamassu_db, lookback_hours=24)
    assert saved["start_at"] == start.isoformat()

    # Moving it back: the next poll reads from there (what landed stays landed once).
    response = await call(
        http,
        "PUT",
        "/lamassu/config",
        operator.admin,
        json=lamassu_db.config(enabled=False, start_at="2014-01-01"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["start_at"] == "2014-01-01T00:00:00+00:00"
    assert response.json()["cursor_at"] is None
    result = await poll(http, operator)
    assert result["ok"] is True and result["new"] == 2, result
    assert set(await settlements(operator, machine)) == {new, old, older}
    # null removes it.
    saved = await configure(http, operator, lamassu_db, start_at=None)
    assert saved["start_at"] is None and saved["cursor_at"] is not None


# ---------------------------------------------------------------- secrets


async def test_password_never_in_responses_or_logs(http, factory, lamassu_server):
    assert RESPONSES, "run with the rest of the module"
    operator = await factory.operator()
    lamassu_db = await lamassu_server.new_database()
    await configure(http, operator, lamassu_db)
    for method, path in (
        ("GET", "/lamassu/config"),
        ("GET", "/lamassu/status"),
        ("POST", "/lamassu/test"),
        ("POST", "/lamassu/poll"),
    ):
        await call(http, method, path, operator.admin)
    for secret in SECRETS:
        for text in RESPONSES:
            assert secret not in text
        for line in LOGS:
            assert secret not in line
    assert any("Lamassu poll for operator" in line for line in LOGS)


async def test_a_weaker_sslmode_needs_the_password_again(http, factory):
    """Same server, weaker TLS: someone on the path could then ask for the stored
    password in clear text, so it is not reused; a stronger mode keeps it."""
    operator = await factory.operator()
    base = {
        "host": "lamassu.example",
        "port": 5432,
        "database": "lamassu",
        "username": "reader",
        "sslmode": "require",
        "enabled": False,
    }
    response = await call(
        http,
        "PUT",
        "/lamassu/config",
        operator.admin,
        json={**base, "password": STORED_PASSWORD},
    )
    assert response.status_code == 200, response.text
    for method, path in (("PUT", "/lamassu/config"), ("POST", "/lamassu/test")):
        response = await call(
            http, method, path, operator.admin, json={**base, "sslmode": "disable"}
        )
        assert response.status_code == 422, response.text
        assert "sslmode" in response.json()["detail"]
    stronger = await call(
        http,
        "PUT",
        "/lamassu/config",
        operator.admin,
        json={**base, "sslmode": "verify-full"},
    )
    assert stronger.status_code == 200, stronger.text
    assert stronger.json()["password_set"] is True
