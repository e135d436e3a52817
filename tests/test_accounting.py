"""Accounting views (issue 16): void / write-off, the LP's own statement, the
platform's overview, the `aio-dca` tag on DCA payouts, auto-settlement after a
fixed slot, the payments table's count and `estimated` flag."""

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

API = "/satmachineadmin/api/v1"


@pytest.fixture
async def no_platform_fee(factory, super_user):
    await factory.platform(super_user, "0", None)


async def _manual(http, operator, machine, ref, fiat, principal, fee=0) -> str:
    response = await http.post(
        f"{API}/settlements",
        headers=operator.admin,
        json={
            "machine_id": machine["id"],
            "tx_type": "cash_out",
            "external_id": ref,
            "fiat_amount": fiat,
            "principal_sats": principal,
            "fee_sats": fee,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _errored_with_lp_legs(http, factory):
    """A settlement the float cannot pay: two LPs' dca legs failed, holding 20.00
    of their balances between them."""
    operator = await factory.operator()
    machine = await factory.machine(operator)  # an empty float
    lps = [await factory.lp(), await factory.lp()]
    clients = [
        await factory.enrol(operator, machine, lp, deposit="50.00") for lp in lps
    ]
    settlement_id = await _manual(http, operator, machine, "unpayable", "20.00", 3_000)
    await factory.run_engine()
    shown = (
        await http.get(f"{API}/settlements/{settlement_id}", headers=operator.admin)
    ).json()
    assert shown["status"] == "errored", shown
    dca = [leg for leg in shown["legs"] if leg["leg_type"] == "dca"]
    assert [leg["status"] for leg in dca] == ["failed", "failed"], shown["legs"]
    for client in clients:
        balance = await factory.balance_of(operator, client["id"])
        assert balance["remaining_balance"] == "40.00"
    return operator, machine, clients, settlement_id


async def test_void_writes_off_an_unpaid_settlement_in_one_transaction(
    http, factory, no_platform_fee
):
    from satmachineadmin import crud

    operator, machine, clients, settlement_id = await _errored_with_lp_legs(
        http, factory
    )
    url = f"{API}/settlements/{settlement_id}/void"
    # A reason is required; another operator sees nothing; a read key cannot.
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        refused = await http.post(url, headers=operator.admin, json=body)
        assert refused.status_code == 400, (body, refused.text)
    stranger = await factory.operator()
    refused = await http.post(url, headers=stranger.admin, json={"reason": "x"})
    assert refused.status_code == 404
    refused = await http.post(url, headers=operator.invoice, json={"reason": "x"})
    assert refused.status_code == 403

    voided = await http.post(
        url, headers=operator.admin, json={"reason": "ATM reported a jam, no cash"}
    )
    assert voided.status_code == 200, voided.text
    body = voided.json()
    assert body["status"] == "voided"
    assert "ATM reported a jam" in body["error"]
    assert {leg["status"] for leg in body["legs"]} == {"voided"}
    assert any("ATM reported a jam" in n["note"] for n in body["notes"])
    # The LPs' reservations are released: their balances are whole again.
    for client in clients:
        balance = await factory.balance_of(operator, client["id"])
        assert balance["remaining_balance"] == "50.00"
        assert balance["total_sats"] == 0
    audit = (
        await http.get(
            f"{API}/audit",
            headers=operator.invoice,
            params={"entity_id": settlement_id},
        )
    ).json()
    (entry,) = [a for a in audit if a["action"] == "settlement.void"]
    assert entry["detail"]["reason"] == "ATM reported a jam, no cash"
    assert entry["detail"]["was"] == "errored"
    assert len(entry["detail"]["voided_legs"]) == len(body["legs"])
    assert entry["detail"]["released_fiat_minor"] == 2_000
    # Never retried, never claimed by the engine, never voided twice.
    retry = await http.post(
        f"{API}/settlements/{settlement_id}/retry", headers=operator.admin
    )
    assert retry.status_code == 409
    assert settlement_id not in await crud.list_due_settlement_ids(10_000)
    assert not await crud.claim_settlement(settlement_id, "t", 60)
    again = await http.post(url, headers=operator.admin, json={"reason": "again"})
    assert again.status_code == 409
    # Its legs are in the payments table as voided, and the reports leave it out.
    legs = await http.get(
        f"{API}/legs",
        headers=operator.invoice,
        params={"settlement_id": settlement_id, "status": "voided", "limit": 1},
    )
    assert legs.headers["x-total-count"] == str(len(body["legs"]))
    assert len(legs.json()) == 1
    report = (
        await http.get(
            f"{API}/reports",
            headers=operator.invoice,
            params={"machine_id": machine["id"]},
        )
    ).json()
    assert report == []


async def test_void_refused_once_a_leg_completed_even_concurrently(
    http, factory, no_platform_fee, monkeypatch
):
    """The pre-check passes, then a leg completes before the void's transaction:
    the guarded UPDATEs refuse (409) and nothing is changed."""
    from satmachineadmin import crud

    operator, machine, clients, settlement_id = await _errored_with_lp_legs(
        http, factory
    )
    legs = await crud.list_settlement_legs(settlement_id)
    landing = next(leg for leg in legs if leg.client_id == clients[0]["id"])
    counted = crud.count_completed_legs

    async def completes_meanwhile(sid: str) -> int:
        stale = await counted(sid)
        # The payment lands between the check and the write.
        assert await crud.transition_leg(landing.id, "completed")
        return stale

    monkeypatch.setattr(crud, "count_completed_legs", completes_meanwhile)
    refused = await http.post(
        f"{API}/settlements/{settlement_id}/void",
        headers=operator.admin,
        json={"reason": "too late"},
    )
    monkeypatch.undo()
    assert refused.status_code == 409, refused.text
    after = await crud.get_settlement(settlement_id)
    assert after and after.status == "errored" and after.claim_token is None
    legs = await crud.list_settlement_legs(settlement_id)
    statuses = {leg.id: leg.status for leg in legs}
    assert statuses[landing.id] == "completed"
    assert "voided" not in statuses.values()
    second = await factory.balance_of(operator, clients[1]["id"])
    assert second["remaining_balance"] == "40.00"  # still reserved by its failed leg
    audit = await crud.get_audit_log(operator.id, settlement_id)
    assert not [a for a in audit if a.action == "settlement.void"]
    # Once a leg completed, the refusal comes from the check itself.
    refused = await http.post(
        f"{API}/settlements/{settlement_id}/void",
        headers=operator.admin,
        json={"reason": "still too late"},
    )
    assert refused.status_code == 409
    assert "already been paid" in refused.json()["detail"]
    # Leave nothing owed behind: fund the float and let the engine finish it.
    await factory.fund(machine["wallet"], 10_000)
    await crud.make_errored_due(machine["id"])
    await factory.run_engine()
    assert (await crud.get_settlement(settlement_id)).status == "processed"


async def test_dca_payouts_are_tagged_aio_dca_in_lnbits_payments(
    http, factory, no_platform_fee
):
    """dca, fixed and settlement legs: both sides of the payment carry LNbits' tag
    `aio-dca`, the machine, the leg kind and the fiat amount; an operator's split is
    not a DCA payout. Auto-settlement runs after a fixed slot too, at its rate."""
    from lnbits.core.db import db as core_db

    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode

    operator = await factory.operator()
    funding = await factory.wallet(operator, "funding")
    await factory.fund(funding, 1_000_000)
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], 1_000_000)
    await factory.splits(
        operator,
        [{"target": operator.wallet.id, "percent": "100"}],
        machine_id=machine["id"],
    )
    for path, body in (
        ("fixed-schedule", {"times": ["09:00"], "timezone": "UTC"}),
        (
            "auto-settlement",
            {
                "enabled": True,
                "threshold_type": "absolute",
                "threshold_value": "5.00",
                "funding_wallet_id": funding.id,
            },
        ),
    ):
        response = await http.put(
            f"{API}/machines/{machine['id']}/{path}",
            headers=operator.admin,
            json=body,
        )
        assert response.status_code == 200, response.text
    flow = await factory.lp()
    await factory.enrol(operator, machine, flow, deposit="100.00")
    fixed = await factory.lp(mode="fixed", limit="30.00")
    fixed_client = await factory.enrol(operator, machine, fixed, deposit="31.00")

    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 100)
    assert await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    row = await crud.get_machine(machine["id"])
    assert row
    slot_legs = await fixed_mode.run_slot(
        row, datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    )
    # The slot paid 30.00 and left 1.00, under the 5.00 threshold: settled now.
    assert sorted((leg.leg_type, leg.status, leg.amount_sats) for leg in slot_legs) == [
        ("fixed", "completed", 4_500),
        ("settlement", "completed", 150),
    ]
    balance = await factory.balance_of(operator, fixed_client["id"])
    assert balance["remaining_balance"] == "0.00" and balance["cycle_complete"]

    legs = await crud.list_legs(machine_id=machine["id"], limit=100)
    by_type = {}
    for leg in legs:
        by_type.setdefault(leg.leg_type, []).append(leg)
    assert {"dca", "fixed", "settlement", "operator_split"} <= set(by_type)
    for leg in legs:
        assert leg.status == "completed", (leg.leg_type, leg.error)
        rows = await core_db.fetchall(
            "SELECT wallet_id, amount, tag, extra FROM apipayments "
            "WHERE payment_hash = :h",
            {"h": leg.payment_hash},
        )
        assert len(rows) == 2, rows  # the payer's and the payee's
        for payment in rows:
            extra = payment["extra"]
            extra = json.loads(extra) if isinstance(extra, str) else extra
            assert extra["leg_id"] == leg.id
            if leg.leg_type in ("dca", "fixed", "settlement"):
                assert payment["tag"] == "aio-dca", (leg.leg_type, payment)
                assert extra["machine_id"] == machine["id"]
                assert extra["leg_type"] == leg.leg_type
                expected = {"dca": "10.00", "fixed": "30.00", "settlement": "1.00"}
                assert extra["fiat_amount"] == expected[leg.leg_type]
                assert extra["fiat_currency"] == "GTQ"
            else:
                assert payment["tag"] != "aio-dca", (leg.leg_type, payment)


async def _page_as(http, user, path):
    """The page as LNbits serves it to that user logged in: their own access
    token, as LNbits' login issues it (not the test client's super-user cookie)."""
    from time import time

    import httpx
    from lnbits.core.models import AccessTokenPayload
    from lnbits.helpers import create_access_token

    token = create_access_token(
        AccessTokenPayload(sub="", usr=user.id, auth_time=int(time())).dict()
    )
    async with httpx.AsyncClient(
        transport=http._transport, base_url=http.base_url
    ) as fresh:
        page = await fresh.get(path, headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200, page.text[:300]
    return page


async def test_a_void_refused_after_the_engine_paid_meanwhile_leaves_it_as_paid(
    http, factory, no_platform_fee, monkeypatch
):
    """The operator voids an errored settlement; between the void reading it and
    taking it, the float is topped up and the engine pays it. The void then finds a
    paid leg and refuses (409), and leaves the settlement as the engine left it:
    processed, with its time, attempts and no error; nothing audited as voided."""
    from satmachineadmin import crud
    from satmachineadmin.services import void

    operator, machine, _, settlement_id = await _errored_with_lp_legs(http, factory)
    read = void.operator_settlement
    paid_meanwhile: list[Any] = []

    async def engine_pays_after_the_read(user_id: str, sid: str):  # type: ignore[no-untyped-def]
        snapshot = await read(user_id, sid)
        if not paid_meanwhile:
            await factory.fund(machine["wallet"], 3_000)
            await crud.make_errored_due(machine["id"])
            await factory.run_engine()
            paid_meanwhile.extend([snapshot.status, await crud.get_settlement(sid)])
        return snapshot

    monkeypatch.setattr(void, "operator_settlement", engine_pays_after_the_read)
    refused = await http.post(
        f"{API}/settlements/{settlement_id}/void",
        headers=operator.admin,
        json={"reason": "jam"},
    )
    was, as_paid = paid_meanwhile
    assert (was, as_paid.status) == ("errored", "processed")
    assert refused.status_code == 409, refused.text
    assert "already been paid" in refused.json()["detail"]
    after = await crud.get_settlement(settlement_id)
    assert after
    assert (after.status, after.error) == ("processed", None)
    assert (after.processed_at, after.attempts, after.next_attempt_at) == (
        as_paid.processed_at,
        as_paid.attempts,
        as_paid.next_attempt_at,
    )
    monkeypatch.undo()
    shown = (
        await http.get(f"{API}/settlements/{settlement_id}", headers=operator.admin)
    ).json()
    assert shown["status"] == "processed"
    assert {leg["status"] for leg in shown["legs"]} == {"completed"}
    assert settlement_id not in await crud.list_due_settlement_ids(10_000)
    audit = (
        await http.get(
            f"{API}/audit",
            headers=operator.invoice,
            params={"entity_id": settlement_id},
        )
    ).json()
    assert not [a for a in audit if a["action"] == "settlement.void"]


async def test_a_leg_in_flight_is_never_voided_by_a_partial_dispense(
    http, factory, no_platform_fee
):
    """A settlement the float could not pay, one of its legs in flight (its payment
    pending at the Lightning node). Rescaling it would void that leg and plan a new
    one: the destination paid twice once the first payment arrives. The partial
    dispense answers 409 and changes nothing; so does a void."""
    from satmachineadmin import crud

    operator, _, clients, settlement_id = await _errored_with_lp_legs(http, factory)
    before = (
        await http.get(f"{API}/settlements/{settlement_id}", headers=operator.admin)
    ).json()
    in_flight = next(leg for leg in before["legs"] if leg["leg_type"] == "dca")
    await crud.db.execute(
        "UPDATE satmachineadmin.legs SET status = 'pending', payment_hash = :hash, "
        "in_flight_since = :now WHERE id = :id",
        {"id": in_flight["id"], "hash": "ab" * 32, "now": crud.now()},
    )
    for path, body in (
        ("partial-dispense", {"dispensed_fraction": "0.5"}),
        ("void", {"reason": "jam"}),
    ):
        refused = await http.post(
            f"{API}/settlements/{settlement_id}/{path}",
            headers=operator.admin,
            json=body,
        )
        assert refused.status_code == 409, (path, refused.text)
        assert "in flight" in refused.json()["detail"]
    after = (
        await http.get(f"{API}/settlements/{settlement_id}", headers=operator.admin)
    ).json()
    assert (after["status"], after["fiat_amount"]) == (
        before["status"],
        before["fiat_amount"],
    )
    assert sorted(leg["id"] for leg in after["legs"]) == sorted(
        leg["id"] for leg in before["legs"]
    )
    [leg] = [leg for leg in after["legs"] if leg["id"] == in_flight["id"]]
    assert (leg["status"], leg["in_flight"]) == ("pending", True)
    for client in clients:
        balance = await factory.balance_of(operator, client["id"])
        assert balance["remaining_balance"] == "40.00"


async def test_the_lp_statement_is_their_own_only(http, factory, no_platform_fee):
    """An LP at two operators' machines: deposits with status, payouts in sats and
    fiat, average cost, per period and in total, as JSON, CSV and a printable
    page; another LP at the same machine sees none of it."""
    op_a, op_b = await factory.operator(), await factory.operator()
    m_a = await factory.machine(op_a)
    m_b = await factory.machine(op_b, currency="USD")
    lp, neighbour = await factory.lp(), await factory.lp()
    c_a = await factory.enrol(op_a, m_a, lp, deposit="100.00")
    pending = await http.post(
        f"{API}/deposits",
        headers=op_a.admin,
        json={"client_id": c_a["id"], "amount": "7.00"},
    )
    assert pending.status_code == 201
    await factory.enrol(op_b, m_b, lp, deposit="20.00")
    await factory.enrol(op_a, m_a, neighbour, deposit="100.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    for machine, fiat, principal in ((m_a, "20.00", 3_000), (m_b, "4.00", 600)):
        played = await factory.cash_out(machine, customer.wallet, fiat, principal, 0)
        assert await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    answer = await http.get(
        f"{API}/lp/statement", headers=lp.invoice, params={"period": "day"}
    )
    assert answer.status_code == 200, answer.text
    statement = answer.json()
    totals = {t["machine_id"]: t for t in statement["totals"]}
    assert set(totals) == {m_a["id"], m_b["id"]}
    a, b = totals[m_a["id"]], totals[m_b["id"]]
    # Half of each cash-out is this LP's (two LPs of equal balance at m_a).
    assert (a["deposits"], a["deposits_count"], a["payout_sats"], a["payout_fiat"]) == (
        "100.00",
        1,
        1_500,
        "10.00",
    )
    assert a["average_cost_fiat_per_btc"] == "666666.67"
    assert (b["currency"], b["deposits"], b["payout_sats"], b["payout_fiat"]) == (
        "USD",
        "20.00",
        600,
        "4.00",
    )
    assert sum(r["payout_sats"] for r in statement["rows"]) == 2_100
    statuses = sorted((d["amount"], d["status"]) for d in statement["deposits"])
    assert statuses == [
        ("100.00", "confirmed"),
        ("20.00", "confirmed"),
        ("7.00", "pending"),
    ]

    deposits = (await http.get(f"{API}/lp/deposits", headers=lp.invoice)).json()
    assert sorted(d["status"] for d in deposits) == [
        "confirmed",
        "confirmed",
        "pending",
    ]

    exported = await http.get(
        f"{API}/lp/statement.csv", headers=lp.invoice, params={"period": "month"}
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["period"] for r in rows if r["machine_id"] == m_a["id"]} == {
        datetime.now(timezone.utc).strftime("%Y-%m-01"),
        "total",
    }
    assert sum(int(r["payout_sats"]) for r in rows if r["period"] == "total") == 2_100

    page = await _page_as(http, lp, "/satmachineadmin/statement")
    assert page.status_code == 200
    assert "666666.67" in page.text and m_a["name"] in page.text
    # The neighbour: their own payouts only, never this LP's deposits.
    theirs = (await http.get(f"{API}/lp/statement", headers=neighbour.invoice)).json()
    assert [t["machine_id"] for t in theirs["totals"]] == [m_a["id"]]
    assert theirs["totals"][0]["payout_sats"] == 1_500
    assert len(theirs["deposits"]) == 1
    assert not {d["id"] for d in deposits} & {d["id"] for d in theirs["deposits"]}
    other_page = await _page_as(http, neighbour, "/satmachineadmin/statement")
    assert "USD" not in other_page.text
    # An operator who is no LP has an empty statement, not someone else's.
    mine = (await http.get(f"{API}/lp/statement", headers=op_a.invoice)).json()
    assert mine["rows"] == [] and mine["deposits"] == []


async def test_the_platform_sees_every_operator_read_only(http, factory, super_user):
    fee_wallet = await factory.wallet(super_user, "platform fees")
    await factory.platform(super_user, "0.5", fee_wallet)
    try:
        op_a, op_b = await factory.operator(), await factory.operator()
        m_a, m_b = await factory.machine(op_a), await factory.machine(op_b)
        customer = await factory.user()
        await factory.fund(customer.wallet, 100_000)
        for machine in (m_a, m_b):
            played = await factory.cash_out(
                machine, customer.wallet, "10.00", 1_500, 100
            )
            assert await factory.settlement_of(played["payment_hash"])
        await factory.run_engine()
    finally:
        await factory.platform(super_user, "0", None)

    answer = await http.get(
        f"{API}/super/overview", headers=super_user.admin, params={"period": "day"}
    )
    assert answer.status_code == 200, answer.text
    overview = answer.json()
    machines = {m["machine_id"]: m for m in overview["machines"]}
    assert machines[m_a["id"]]["operator_user_id"] == op_a.id
    assert machines[m_b["id"]]["operator_user_id"] == op_b.id
    rows = {r["machine_id"]: r for r in overview["rows"]}
    for machine in (m_a, m_b):
        row = rows[machine["id"]]
        assert (row["cash_outs"], row["cash_out_fiat"], row["commission_sats"]) == (
            1,
            "10.00",
            100,
        )
        assert row["platform_fee_sats"] == 50 and row["platform_fee_paid_sats"] == 50
    today = overview["fees_by_period"][-1]
    assert today["platform_fee_paid_sats"] >= 100
    for caller in (op_a, op_b):
        refused = await http.get(f"{API}/super/overview", headers=caller.admin)
        assert refused.status_code == 403


async def test_payments_table_counts_and_marks_estimated_legs(http, factory):
    """GET /legs: X-Total-Count for paging, and `estimated` on the legs of a
    settlement whose principal was estimated (a Lamassu row without a ticker)."""
    from decimal import Decimal

    from lnbits.db import insert_query, model_to_dict

    from satmachineadmin import crud
    from satmachineadmin.intake import settlement_draft
    from satmachineadmin.models import Leg

    operator = await factory.operator()
    machine = await factory.machine(operator)
    row = await crud.get_machine(machine["id"])
    assert row
    settlements = [
        settlement_draft(
            machine=row,
            super_fee_fraction=Decimal(0),
            source="lamassu",
            external_id=f"estimated-{i}",
            tx_type="cash_out",
            fiat_amount_minor=100,
            principal_sats=150,
            fee_sats=0,
            wire_sats=150,
            estimated=(i == 0),
        ).copy(update={"status": "processed"})
        for i in range(2)
    ]
    legs = [
        Leg(
            id=crud.new_id(),
            idempotency_key=f"estimated:{s.id}:{n}",
            settlement_id=s.id,
            machine_id=row.id,
            operator_user_id=row.operator_user_id,
            leg_type="operator_split",
            status="completed",
            amount_sats=1,
            created_at=s.created_at,
            updated_at=s.created_at,
        )
        for s in settlements
        for n in range(3)
    ]
    async with crud.transaction() as tx:
        for s in settlements:
            await tx.execute(
                insert_query("satmachineadmin.settlements", s), model_to_dict(s)
            )
        await tx.execute_many(
            insert_query("satmachineadmin.legs", legs[0]),
            [model_to_dict(leg) for leg in legs],
        )
    page = await http.get(
        f"{API}/legs",
        headers=operator.invoice,
        params={"machine_id": machine["id"], "limit": 4},
    )
    assert page.status_code == 200
    assert page.headers["x-total-count"] == "6" and len(page.json()) == 4
    everything = (
        await http.get(
            f"{API}/legs",
            headers=operator.invoice,
            params={"machine_id": machine["id"]},
        )
    ).json()
    marked = {leg["settlement_id"] for leg in everything if leg["estimated"]}
    assert marked == {settlements[0].id}
    assert sum(leg["estimated"] for leg in everything) == 3
