"""Settlements, corrections and payouts through the REST API (docs/api.md), with
real LNbits payments behind every number (settlements in, legs out, corrections)."""

import csv
import io
from dataclasses import dataclass
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

API = "/satmachineadmin/api/v1"


@dataclass
class World:
    operator: Any
    machine: dict
    lps: list
    clients: list
    split: Any
    customer: Any


async def _world(
    factory, deposits=("100.00",), split=True, machine_id_rules=True
) -> World:
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lps, clients = [], []
    for amount in deposits:
        lp = await factory.lp()
        clients.append(await factory.enrol(operator, machine, lp, deposit=amount))
        lps.append(lp)
    split_wallet = await factory.wallet(operator, "commission")
    if split:
        await factory.splits(
            operator,
            [{"target": split_wallet.id, "percent": "100"}],
            machine["id"] if machine_id_rules else None,
        )
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    return World(operator, machine, lps, clients, split_wallet, customer)


async def _get(http, path, who, **params):
    response = await http.get(f"{API}{path}", headers=who.invoice, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def _settlement(http, who, settlement_id):
    return await _get(http, f"/settlements/{settlement_id}", who)


async def _manual(http, who, machine_id, expect=201, **body):
    response = await http.post(
        f"{API}/settlements", headers=who.admin, json={"machine_id": machine_id, **body}
    )
    assert response.status_code == expect, response.text
    return response.json()


async def _landed_cash_out(factory, world, fiat, principal, fee):
    played = await factory.cash_out(
        world.machine, world.customer.wallet, fiat, principal, fee
    )
    settlement = await factory.settlement_of(played["payment_hash"])
    assert settlement is not None and settlement.status == "pending"
    return settlement


async def _outgoing(wallet_id):
    from lnbits.core.crud import get_payments

    return [
        p
        for p in await get_payments(wallet_id=wallet_id, outgoing=True, limit=10_000)
        if p.success
    ]


@pytest.fixture
async def no_platform_fee(factory, super_user):
    await factory.platform(super_user, "0", None)


# ------------------------------------------------------------ manual entry


async def test_manual_entry_lands_and_pays(factory, http, super_user, no_platform_fee):
    world = await _world(factory)
    machine_id = world.machine["id"]
    # Settled outside the machine: its sats are in the float the operator keeps funded.
    await factory.fund(world.machine["wallet"], 3_200)
    created = await _manual(
        http,
        world.operator,
        machine_id,
        tx_type="cash_out",
        external_id="RCPT-1",
        fiat_amount="20.00",
        principal_sats=3_000,
        fee_sats=200,
        notes="paid out by bank transfer",
    )
    assert created["status"] == "pending"
    assert created["source"] == "manual"
    assert created["external_id"] == "RCPT-1"
    assert created["fiat_amount"] == "20.00"
    assert created["currency"] == "GTQ"
    assert (created["wire_sats"], created["principal_sats"], created["fee_sats"]) == (
        3_200,
        3_000,
        200,
    )
    assert created["exchange_rate"] == "150.00000000"
    assert [n["note"] for n in created["notes"]] == ["paid out by bank transfer"]
    assert created["notes"][0]["author_user_id"] == world.operator.id

    assert await factory.run_engine() >= 1
    shown = await _settlement(http, world.operator, created["id"])
    assert shown["status"] == "processed" and shown["processed_at"]
    assert await factory.balance(world.lps[0].wallet) == 3_000
    assert await factory.balance(world.split) == 200
    assert await factory.balance(world.machine["wallet"]) == 0
    balance = await factory.balance_of(world.operator, world.clients[0]["id"])
    assert balance["remaining_balance"] == "80.00" and balance["total_sats"] == 3_000

    # The same reference again: 409, nothing new lands.
    response = await http.post(
        f"{API}/settlements",
        headers=world.operator.admin,
        json={
            "machine_id": machine_id,
            "tx_type": "cash_in",
            "external_id": "RCPT-1",
            "fiat_amount": "1.00",
            "principal_sats": 150,
        },
    )
    assert response.status_code == 409
    assert "RCPT-1" in response.json()["detail"]
    listed = await _get(http, "/settlements", world.operator, machine_id=machine_id)
    assert len(listed) == 1

    # The principal from a rate (floor), fiat and rate as JSON numbers.
    by_rate = await _manual(
        http,
        world.operator,
        machine_id,
        tx_type="cash_in",
        external_id="RCPT-2",
        fiat_amount=10,
        exchange_rate=150.55,
        fee_sats=5,
    )
    assert by_rate["fiat_amount"] == "10.00"
    assert by_rate["principal_sats"] == 1_505
    assert by_rate["wire_sats"] == 1_500
    assert by_rate["exchange_rate"] == "150.50000000"
    # The same reference at another machine of the operator is another transaction.
    other_machine = await factory.machine(world.operator)
    await _manual(
        http,
        world.operator,
        other_machine["id"],
        tx_type="cash_out",
        external_id="RCPT-1",
        fiat_amount="1.00",
        principal_sats=150,
    )
    await factory.run_engine()


BAD_MANUAL = [
    ({"fiat_amount": "10.001"}, "fiat_amount"),
    ({"fiat_amount": "-10.00"}, "fiat_amount"),
    ({"fiat_amount": "0"}, "fiat_amount"),
    ({"fiat_amount": "ten"}, "fiat_amount"),
    ({"fiat_amount": True}, "fiat_amount"),
    ({"fiat_amount": None}, "fiat_amount"),
    ({"principal_sats": "1500"}, "principal_sats"),
    ({"principal_sats": 1500.5}, "principal_sats"),
    ({"principal_sats": 0}, "principal_sats"),
    ({"principal_sats": -1}, "principal_sats"),
    ({"principal_sats": 10**30}, "principal_sats"),
    ({"fee_sats": -1}, "fee_sats"),
    ({"fee_sats": "5"}, "fee_sats"),
    ({"tx_type": "cash_in", "fee_sats": 2_000}, "fee_sats"),
    ({"tx_type": "refund"}, "tx_type"),
    ({"external_id": ""}, "external_id"),
    ({"external_id": "x" * 201}, "external_id"),
    ({"surprise": 1}, "surprise"),
    ({"principal_sats": None}, "principal_sats or exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "0"}, "exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "-150"}, "exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "abc"}, "exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "NaN"}, "exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "1E+999999999"}, "exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "1E-999999999"}, "exchange_rate"),
    ({"principal_sats": None, "exchange_rate": "0.001"}, "principal_sats"),
]


async def test_manual_entry_refuses_bad_input_and_other_operators_machines(
    factory, http, no_platform_fee
):
    world = await _world(factory, deposits=())
    good = {
        "tx_type": "cash_out",
        "external_id": "R",
        "fiat_amount": "10.00",
        "principal_sats": 1_500,
        "fee_sats": 100,
    }
    for change, field in BAD_MANUAL:
        body = {**good, **change}
        body = {
            k: v for k, v in body.items() if not (k == "principal_sats" and v is None)
        }
        response = await http.post(
            f"{API}/settlements",
            headers=world.operator.admin,
            json={"machine_id": world.machine["id"], **body},
        )
        assert response.status_code == 400, (change, response.text)
        assert field in response.json()["detail"], (change, response.text)
    # An invoice key may read but not write.
    response = await http.post(
        f"{API}/settlements",
        headers=world.operator.invoice,
        json={"machine_id": world.machine["id"], **good},
    )
    assert response.status_code in (401, 403)
    stranger = await factory.operator()
    for machine_id in (world.machine["id"], "0" * 32):
        response = await http.post(
            f"{API}/settlements",
            headers=stranger.admin,
            json={"machine_id": machine_id, **good},
        )
        assert response.status_code == 404, response.text
    assert await _get(http, "/settlements", world.operator) == []


# ------------------------------------------------------------ listing and legs


async def test_settlement_list_filters_and_paging(factory, http, no_platform_fee):
    world = await _world(factory, deposits=())
    second = await factory.machine(world.operator)
    m1, m2 = world.machine["id"], second["id"]
    ids = []
    for i, (machine_id, tx_type) in enumerate(
        [(m1, "cash_out"), (m1, "cash_in"), (m1, "cash_out"), (m2, "cash_out")]
    ):
        made = await _manual(
            http,
            world.operator,
            machine_id,
            tx_type=tx_type,
            external_id=f"F-{i}",
            fiat_amount="1.00",
            principal_sats=150,
            fee_sats=0,
        )
        ids.append(made["id"])
    played = await factory.cash_out(
        world.machine, world.customer.wallet, "1.00", 150, 0, type="bogus"
    )
    rejected = await factory.settlement_of(played["payment_hash"])
    assert rejected.status == "rejected"

    async def listing(**params):
        response = await http.get(
            f"{API}/settlements", headers=world.operator.invoice, params=params
        )
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()], int(
            response.headers["X-Total-Count"]
        )

    assert await listing(machine_id=m1) == (
        [rejected.id, ids[2], ids[1], ids[0]],
        4,
    )  # newest first
    assert await listing(machine_id=m2) == ([ids[3]], 1)
    assert await listing(status="rejected") == ([rejected.id], 1)
    assert await listing(tx_type="cash_in") == ([ids[1]], 1)
    assert (await listing(status="pending", tx_type="cash_out"))[1] == 3
    assert await listing(status="processed") == ([], 0)
    page, total = await listing(limit=2)
    assert total == 5 and page == [rejected.id, ids[3]]
    page, total = await listing(limit=2, offset=4)
    assert total == 5 and page == [ids[0]]
    assert await listing(offset=50) == ([], 5)

    for params in (
        {"status": "nope"},
        {"tx_type": "refund"},
        {"limit": 0},
        {"limit": 501},
        {"offset": -1},
        {"limit": "x"},
    ):
        response = await http.get(
            f"{API}/settlements", headers=world.operator.invoice, params=params
        )
        assert response.status_code == 400, params
    stranger = await factory.operator()
    response = await http.get(
        f"{API}/settlements", headers=stranger.invoice, params={"machine_id": m1}
    )
    assert response.status_code == 404
    response = await http.get(f"{API}/settlements", headers=stranger.invoice)
    assert response.json() == [] and response.headers["X-Total-Count"] == "0"
    await factory.run_engine()


async def test_get_settlement_shows_every_leg_completed_or_skipped_with_reason(
    factory, http, super_user
):
    """Platform fraction without a fee wallet, orphan sats: every sat is a leg row."""
    await factory.platform(super_user, "0.10", None)
    world = await _world(factory, deposits=("5.00", "2.50"))
    settlement = await _landed_cash_out(factory, world, "10.00", 1_500, 100)
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "pending" and shown["legs"] == []
    await factory.run_engine()
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "processed"
    assert shown["platform_fee_sats"] == 10 and shown["operator_fee_sats"] == 90
    assert shown["orphan_sats"] == 375 and shown["orphan_fiat"] == "2.50"
    legs = {(leg["leg_type"], leg["client_id"]): leg for leg in shown["legs"]}
    assert len(legs) == len(shown["legs"]) == 5
    fee = legs[("super_fee", None)]
    assert (fee["status"], fee["amount_sats"]) == ("skipped", 10)
    assert "no platform fee wallet" in fee["error"]
    split = legs[("operator_split", None)]
    assert (split["status"], split["amount_sats"], split["destination"]) == (
        "completed",
        90,
        world.split.id,
    )
    assert split["payment_hash"] and split["error"] is None
    first, second = (legs[("dca", c["id"])] for c in world.clients)
    assert (first["status"], first["amount_sats"], first["amount_fiat"]) == (
        "completed",
        750,
        "5.00",
    )
    assert (second["status"], second["amount_sats"], second["amount_fiat"]) == (
        "completed",
        375,
        "2.50",
    )
    orphan = legs[("dca", None)]
    assert (orphan["status"], orphan["amount_sats"], orphan["amount_fiat"]) == (
        "skipped",
        375,
        "2.50",
    )
    assert "orphan" in orphan["error"]
    for leg in shown["legs"]:
        assert leg["settlement_id"] == settlement.id
        assert leg["status"] in ("completed", "skipped")
        assert (leg["status"] == "skipped") == bool(leg["error"])
    # 10 platform + 375 orphan sats stay in the machine wallet.
    assert await factory.balance(world.machine["wallet"]) == 385
    await factory.platform(super_user, "0", None)


# ------------------------------------------------------------ retry


async def test_retry_pays_only_what_failed(factory, http, super_user, no_platform_fee):
    """A cash-in whose 1,000-sat commission the float can cover only half of: one split
    leg completes, the other fails; after a top-up a retry pays only the failed one."""
    world = await _world(factory, deposits=(), split=False)
    targets = [await factory.wallet(world.operator, f"t{i}") for i in range(2)]
    await factory.splits(
        world.operator,
        [{"target": t.id, "percent": "50"} for t in targets],
        world.machine["id"],
    )
    machine_wallet = world.machine["wallet"]
    await factory.fund(machine_wallet, 14_600)
    played = await factory.cash_in(
        world.machine, world.customer.wallet, "100.00", 15_000, 1_000
    )
    from satmachineadmin import bitspire, crud

    await bitspire.sweep_all()
    settlement = await factory.settlement_of(played["payment_hash"], timeout=0)
    assert await factory.balance(machine_wallet) == 600
    await factory.run_engine()
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "errored"
    assert shown["error"] == "insufficient float: need 500 sats"
    assert shown["next_attempt_at"]
    states = sorted(
        (leg["leg_type"], leg["status"], leg["amount_sats"]) for leg in shown["legs"]
    )
    assert states == [
        ("dca", "skipped", 0),
        ("operator_split", "completed", 500),
        ("operator_split", "failed", 500),
    ]
    first_paid = next(leg for leg in shown["legs"] if leg["status"] == "completed")
    assert await factory.balance(targets[0]) == 500

    # /health shows the float short of what the failed leg needs.
    health = await _get(http, "/health", world.operator)
    assert set(health) >= {
        "listener_alive",
        "engine_alive",
        "sweep_alive",
        "last_sweep_at",
        "settlements",
        "errored",
        "stuck",
        "machines",
    }
    assert health["listener_alive"] is True
    assert health["errored"] >= 1 and health["settlements"]["errored"] >= 1
    row = next(m for m in health["machines"] if m["machine_id"] == world.machine["id"])
    assert row == {
        "machine_id": world.machine["id"],
        "name": world.machine["name"],
        "status": "active",
        "float_sats": 100,
        "pending_legs_need_sats": 500,
        "float_short_by_sats": 400,
    }

    # A cash-in (with a leg paid, too) is never rescaled.
    response = await http.post(
        f"{API}/settlements/{settlement.id}/partial-dispense",
        headers=world.operator.admin,
        json={"dispensed_fraction": "0.5"},
    )
    assert response.status_code == 422, response.text
    assert (await _settlement(http, world.operator, settlement.id))[
        "status"
    ] == "errored"

    await factory.fund(machine_wallet, 400)
    response = await http.post(
        f"{API}/settlements/{settlement.id}/retry", headers=world.operator.admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    response = await http.post(
        f"{API}/settlements/{settlement.id}/retry", headers=world.operator.admin
    )
    assert response.status_code == 409  # pending now: nothing to retry
    await factory.run_engine()
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "processed" and shown["error"] is None
    assert [await factory.balance(t) for t in targets] == [500, 500]
    assert await factory.balance(machine_wallet) == 0
    again = next(leg for leg in shown["legs"] if leg["id"] == first_paid["id"])
    assert again["payment_hash"] == first_paid["payment_hash"]
    assert again["attempts"] == first_paid["attempts"]
    # One LNbits payment for the customer and one per leg: nothing paid twice.
    outgoing = await _outgoing(machine_wallet.id)
    legs = await crud.list_settlement_legs(settlement.id)
    assert len(outgoing) == 3
    assert {p.payment_hash for p in outgoing} == {played["payment_hash"]} | {
        leg.payment_hash for leg in legs if leg.status == "completed"
    }
    # Retrying a processed settlement is a conflict.
    response = await http.post(
        f"{API}/settlements/{settlement.id}/retry", headers=world.operator.admin
    )
    assert response.status_code == 409
    health = await _get(http, "/health", world.operator)
    row = next(m for m in health["machines"] if m["machine_id"] == world.machine["id"])
    assert (
        row["float_sats"],
        row["pending_legs_need_sats"],
        row["float_short_by_sats"],
    ) == (0, 0, 0)


# ------------------------------------------------------------ partial dispense


async def test_partial_dispense_keeps_the_original_platform_ratio(
    factory, http, super_user
):
    fee_wallet = await factory.wallet(super_user, "partial fees")
    await factory.platform(super_user, "0.30", fee_wallet)
    world = await _world(factory, deposits=("100.00",))
    settlement = await _landed_cash_out(factory, world, "10.00", 1_500, 100)
    assert settlement.platform_fee_sats == 30
    by_fiat = await _landed_cash_out(factory, world, "10.00", 1_500, 100)
    # The super user changes the fraction after the settlements landed.
    await factory.platform(super_user, "0.50", fee_wallet)
    fee_before = await factory.balance(fee_wallet)

    for bad in (
        {},
        {"dispensed_fraction": "0.5", "dispensed_fiat": "5.00"},
        {"dispensed_fraction": "0"},
        {"dispensed_fraction": "1.5"},
        {"dispensed_fraction": "-0.5"},
        {"dispensed_fraction": "half"},
        {"dispensed_fraction": "1E-999999999"},
        {"dispensed_fraction": True},
        {"dispensed_fiat": "10.01"},
        {"dispensed_fiat": "5.001"},
        {"dispensed_fiat": "0"},
        {"dispensed_fraction": "0.0001"},  # floor(1000 x 0.0001) = 0 minor units
        {"dispensed_fiat": "5.00", "extra": 1},
    ):
        response = await http.post(
            f"{API}/settlements/{settlement.id}/partial-dispense",
            headers=world.operator.admin,
            json=bad,
        )
        assert response.status_code == 400, (bad, response.text)
    assert (await _settlement(http, world.operator, settlement.id))[
        "principal_sats"
    ] == 1_500

    response = await http.post(
        f"{API}/settlements/{settlement.id}/partial-dispense",
        headers=world.operator.admin,
        json={"dispensed_fraction": "0.5"},
    )
    assert response.status_code == 200, response.text
    rescaled = response.json()
    assert rescaled["status"] == "pending"
    assert rescaled["fiat_amount"] == "5.00"
    assert (
        rescaled["principal_sats"],
        rescaled["fee_sats"],
        rescaled["wire_sats"],
    ) == (750, 50, 800)
    assert (rescaled["platform_fee_sats"], rescaled["operator_fee_sats"]) == (15, 35)
    assert rescaled["super_fee_fraction"] == "0.30"
    assert rescaled["exchange_rate"] == "150.00000000"
    assert len(rescaled["notes"]) == 1
    note = rescaled["notes"][0]
    assert "partial dispense" in note["note"] and "5.00 of 10.00" in note["note"]
    assert note["author_user_id"] == world.operator.id and note["created_at"]

    response = await http.post(
        f"{API}/settlements/{by_fiat.id}/partial-dispense",
        headers=world.operator.admin,
        json={"dispensed_fiat": 2.5},
    )
    assert response.status_code == 200, response.text
    by_fiat_shown = response.json()
    assert by_fiat_shown["fiat_amount"] == "2.50"
    assert (by_fiat_shown["principal_sats"], by_fiat_shown["fee_sats"]) == (375, 25)
    # 25 x 30 / 100 = 7.5, half to even: 8.
    assert (by_fiat_shown["platform_fee_sats"], by_fiat_shown["operator_fee_sats"]) == (
        8,
        17,
    )

    await factory.run_engine()
    for settlement_id, principal, platform, operator in (
        (settlement.id, 750, 15, 35),
        (by_fiat.id, 375, 8, 17),
    ):
        shown = await _settlement(http, world.operator, settlement_id)
        assert shown["status"] == "processed"
        paid = {
            leg["leg_type"]: leg["amount_sats"]
            for leg in shown["legs"]
            if leg["status"] == "completed"
        }
        assert paid == {
            "super_fee": platform,
            "operator_split": operator,
            "dca": principal,
        }
    assert await factory.balance(fee_wallet) - fee_before == 23
    assert await factory.balance(world.split) == 52
    assert await factory.balance(world.lps[0].wallet) == 1_125
    # What was not dispensed stays in the machine wallet: 3,200 in, 1,200 out.
    assert await factory.balance(world.machine["wallet"]) == 2_000
    balance = await factory.balance_of(world.operator, world.clients[0]["id"])
    assert balance["remaining_balance"] == "92.50"

    # Legs are paid: refused from now on, nothing changes.
    response = await http.post(
        f"{API}/settlements/{settlement.id}/partial-dispense",
        headers=world.operator.admin,
        json={"dispensed_fraction": "0.5"},
    )
    assert response.status_code == 422
    assert (await _settlement(http, world.operator, settlement.id))[
        "principal_sats"
    ] == 750
    await factory.platform(super_user, "0", None)


async def test_partial_dispense_after_a_crash_mid_payment_never_pays_twice(
    factory, http, no_platform_fee
):
    """The engine died right after LNbits paid a leg, before the row said so. A
    partial dispense must see that leg as paid (refused), not void and re-plan it."""
    from satmachineadmin import crud, distribution
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    world = await _world(factory, deposits=("100.00",))
    settlement = await _landed_cash_out(factory, world, "10.00", 1_500, 100)
    crash_points["after_payment"] = 0
    with pytest.raises(EngineCrash):
        await distribution.run_due_settlements()
    paid_before = await factory.balance(world.split) + await factory.balance(
        world.lps[0].wallet
    )
    assert paid_before > 0  # one leg's payment went through
    # The dead worker's lease has run out.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    response = await http.post(
        f"{API}/settlements/{settlement.id}/partial-dispense",
        headers=world.operator.admin,
        json={"dispensed_fraction": "0.5"},
    )
    assert response.status_code == 422, response.text
    await distribution.reconcile_open_legs()
    await factory.run_engine()
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "processed" and shown["principal_sats"] == 1_500
    assert await factory.balance(world.split) == 100
    assert await factory.balance(world.lps[0].wallet) == 1_500
    assert len(await _outgoing(world.machine["wallet"].id)) == 2


async def test_a_cash_in_cannot_be_partially_dispensed(factory, http, no_platform_fee):
    world = await _world(factory, deposits=())
    made = await _manual(
        http,
        world.operator,
        world.machine["id"],
        tx_type="cash_in",
        external_id="IN-1",
        fiat_amount="10.00",
        principal_sats=1_500,
        fee_sats=100,
    )
    response = await http.post(
        f"{API}/settlements/{made['id']}/partial-dispense",
        headers=world.operator.admin,
        json={"dispensed_fraction": "0.5"},
    )
    assert response.status_code == 422, response.text
    assert "cash-in" in response.json()["detail"]
    shown = await _settlement(http, world.operator, made["id"])
    assert (shown["wire_sats"], shown["principal_sats"], shown["fee_sats"]) == (
        1_400,
        1_500,
        100,
    )
    assert shown["notes"] == []
    await factory.run_engine()


# ------------------------------------------------------------ notes, other operators


async def test_notes_append_and_other_operators_get_404_everywhere(
    factory, http, no_platform_fee
):
    world = await _world(factory, deposits=("10.00",))
    settlement = await _landed_cash_out(factory, world, "1.00", 150, 0)
    path = f"{API}/settlements/{settlement.id}"
    for text in ("counted the cassette: 1 note short", "  resolved with the LP  "):
        response = await http.post(
            f"{path}/notes", headers=world.operator.admin, json={"note": text}
        )
        assert response.status_code == 201, response.text
    notes = response.json()["notes"]
    assert [n["note"] for n in notes] == [
        "counted the cassette: 1 note short",
        "resolved with the LP",
    ]
    assert all(
        n["author_user_id"] == world.operator.id and n["created_at"] for n in notes
    )
    assert notes[0]["id"] != notes[1]["id"]
    for bad in ({"note": ""}, {"note": "   "}, {}, {"note": 5}, {"note": "x" * 2001}):
        response = await http.post(
            f"{path}/notes", headers=world.operator.admin, json=bad
        )
        assert response.status_code == 400, bad
    # Append-only: no way to edit or delete a note.
    for method in ("put", "patch", "delete"):
        response = await getattr(http, method)(
            f"{path}/notes", headers=world.operator.admin
        )
        assert response.status_code == 405
    assert [
        n["note"]
        for n in (await _settlement(http, world.operator, settlement.id))["notes"]
    ] == [n["note"] for n in notes]

    stranger = await factory.operator()
    calls = [
        ("get", path, None),
        ("post", f"{path}/retry", None),
        ("post", f"{path}/partial-dispense", {"dispensed_fraction": "0.5"}),
        ("post", f"{path}/notes", {"note": "mine now"}),
    ]
    for method, url, body in calls:
        kwargs = {"headers": stranger.admin}
        if body is not None:
            kwargs["json"] = body
        response = await getattr(http, method)(url, **kwargs)
        assert response.status_code == 404, (url, response.text)
    legs = await _get(http, "/payments", stranger, settlement_id=settlement.id)
    assert legs == []
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "pending" and len(shown["notes"]) == 2
    assert shown["principal_sats"] == 150
    await factory.run_engine()


# ------------------------------------------------------------ payments and CSV


async def test_payments_filters_and_csv(factory, http, super_user):
    fee_wallet = await factory.wallet(super_user, "csv fees")
    await factory.platform(super_user, "0.30", fee_wallet)
    world = await _world(factory, deposits=("100.00", "50.00"))
    first = await _landed_cash_out(factory, world, "15.00", 2_250, 100)
    second = await _landed_cash_out(factory, world, "3.00", 450, 0)
    await factory.run_engine()
    c1, c2 = (c["id"] for c in world.clients)
    machine_id = world.machine["id"]

    async def payments(**params):
        return await _get(
            http, "/payments", world.operator, machine_id=machine_id, **params
        )

    every = await payments()
    assert len(every) == 6
    assert {
        (leg["leg_type"], leg["client_id"], leg["amount_sats"], leg["amount_fiat"])
        for leg in every
    } == {
        ("super_fee", None, 30, None),
        ("operator_split", None, 70, None),
        ("dca", c1, 1_500, "10.00"),
        ("dca", c2, 750, "5.00"),
        ("dca", c1, 300, "2.00"),
        ("dca", c2, 150, "1.00"),
    }
    assert len(await payments(leg_type="dca")) == 4
    assert [leg["amount_sats"] for leg in await payments(leg_type="super_fee")] == [30]
    assert len(await payments(status="completed")) == 6
    assert await payments(status="failed") == []
    assert sorted(leg["amount_sats"] for leg in await payments(client_id=c1)) == [
        300,
        1_500,
    ]
    assert len(await payments(settlement_id=first.id)) == 4
    assert sorted(
        leg["amount_sats"] for leg in await payments(settlement_id=second.id)
    ) == [150, 300]
    both = await payments(settlement_id=first.id, leg_type="dca", client_id=c2)
    assert [leg["amount_sats"] for leg in both] == [750]
    assert len(await payments(limit=2)) == 2
    for bad in ({"leg_type": "tip"}, {"status": "lost"}, {"limit": 0}):
        response = await http.get(
            f"{API}/payments", headers=world.operator.invoice, params=bad
        )
        assert response.status_code == 400, bad

    from satmachineadmin.services.reports import CSV_COLUMNS

    response = await http.get(
        f"{API}/payments.csv",
        headers=world.operator.invoice,
        params={"machine_id": machine_id, "settlement_id": first.id},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == CSV_COLUMNS
    assert {
        "amount_sats",
        "amount_fiat",
        "currency",
        "exchange_rate_sats_per_unit",
        "fiat_per_btc",
        "leg_type",
        "status",
        "client_id",
    } <= set(rows[0])
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(records) == 4
    by_key = {(r["leg_type"], r["client_id"]): r for r in records}
    lp1 = by_key[("dca", c1)]
    assert (lp1["amount_sats"], lp1["amount_fiat"], lp1["currency"]) == (
        "1500",
        "10.00",
        "GTQ",
    )
    assert lp1["exchange_rate_sats_per_unit"] == "150.00000000"
    assert lp1["fiat_per_btc"] == "666666.67"  # 100,000,000 x 10.00 / 1,500
    assert lp1["status"] == "completed" and lp1["settlement_id"] == first.id
    assert lp1["destination"] == world.lps[0].wallet.id and lp1["payment_hash"]
    lp2 = by_key[("dca", c2)]
    assert (lp2["amount_sats"], lp2["amount_fiat"], lp2["fiat_per_btc"]) == (
        "750",
        "5.00",
        "666666.67",
    )
    platform = by_key[("super_fee", "")]
    assert (
        platform["amount_sats"],
        platform["amount_fiat"],
        platform["fiat_per_btc"],
    ) == ("30", "", "")
    assert platform["destination"] == fee_wallet.id
    assert by_key[("operator_split", "")]["amount_sats"] == "70"
    # The CSV holds exactly the legs the JSON endpoint returns for the same filters.
    response = await http.get(
        f"{API}/payments.csv",
        headers=world.operator.invoice,
        params={"machine_id": machine_id, "leg_type": "dca"},
    )
    dca_rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["leg_id"] for r in dca_rows) == sorted(
        leg["id"] for leg in await payments(leg_type="dca")
    )
    stranger = await factory.operator()
    response = await http.get(
        f"{API}/payments.csv",
        headers=stranger.invoice,
        params={"machine_id": machine_id},
    )
    assert list(csv.reader(io.StringIO(response.text))) == [CSV_COLUMNS]
    await factory.platform(super_user, "0", None)


# ------------------------------------------------------------ commission splits


async def test_commission_to_lps_pays_pro_rata_without_touching_fiat_balances(
    factory, http, no_platform_fee
):
    world = await _world(factory, deposits=("300.00", "100.00"), split=False)
    await factory.splits(
        world.operator, [{"target": "lps", "percent": "100"}], world.machine["id"]
    )
    shown = await _get(
        http, "/commission/splits", world.operator, machine_id=world.machine["id"]
    )
    assert shown["legs"][0]["target_kind"] == "lps" and shown["inherited"] is False
    balances = [
        await factory.balance_of(world.operator, c["id"]) for c in world.clients
    ]

    # A cash-in: commission only, no principal for LPs.
    await factory.fund(world.machine["wallet"], 15_000)
    played = await factory.cash_in(
        world.machine, world.customer.wallet, "100.00", 15_000, 400
    )
    from satmachineadmin import bitspire

    await bitspire.sweep_all()
    settlement = await factory.settlement_of(played["payment_hash"], timeout=0)
    await factory.run_engine()
    shown = await _settlement(http, world.operator, settlement.id)
    assert shown["status"] == "processed"
    shares = {
        leg["client_id"]: leg["amount_sats"]
        for leg in shown["legs"]
        if leg["leg_type"] == "operator_split"
    }
    assert shares == {world.clients[0]["id"]: 300, world.clients[1]["id"]: 100}
    assert [await factory.balance(lp.wallet) for lp in world.lps] == [300, 100]
    assert [
        await factory.balance_of(world.operator, c["id"]) for c in world.clients
    ] == balances

    # A cash-out: principal by balance, commission by the same balances, and only
    # the principal moves the fiat balances and the sats counted as bought.
    await _landed_cash_out(factory, world, "10.00", 1_500, 400)
    await factory.run_engine()
    assert [await factory.balance(lp.wallet) for lp in world.lps] == [
        300 + 1_125 + 300,
        100 + 375 + 100,
    ]
    after = [await factory.balance_of(world.operator, c["id"]) for c in world.clients]
    assert [(b["remaining_balance"], b["total_sats"]) for b in after] == [
        ("292.50", 1_125),
        ("97.50", 375),
    ]
    assert await factory.balance(world.machine["wallet"]) == 0


async def test_machine_rules_override_the_operator_default(
    factory, http, no_platform_fee
):
    world = await _world(factory, deposits=(), split=False)
    default_wallet = await factory.wallet(world.operator, "default")
    machine_wallet = await factory.wallet(world.operator, "machine rules")
    await factory.splits(
        world.operator, [{"target": default_wallet.id, "percent": "100"}]
    )
    await factory.splits(
        world.operator,
        [{"target": machine_wallet.inkey, "percent": "100"}],
        world.machine["id"],
    )
    plain = await factory.machine(world.operator)
    inherited = await _get(
        http, "/commission/splits", world.operator, machine_id=plain["id"]
    )
    assert inherited["inherited"] is True
    assert inherited["legs"][0]["target"] == default_wallet.id
    own = await _get(
        http, "/commission/splits", world.operator, machine_id=world.machine["id"]
    )
    assert own["inherited"] is False and own["legs"][0]["target_kind"] == "wallet"

    for machine, fee in ((world.machine, 100), (plain, 40)):
        played = await factory.cash_out(
            machine, world.customer.wallet, "1.00", 150, fee
        )
        assert (await factory.settlement_of(played["payment_hash"])).status == "pending"
    await factory.run_engine()
    assert await factory.balance(machine_wallet) == 100
    assert await factory.balance(default_wallet) == 40


# ------------------------------------------------------------ the LP's views


async def test_lp_summary_and_payments_show_only_their_own(
    factory, http, no_platform_fee
):
    world = await _world(factory, deposits=("30.00", "10.00"))
    lp1, lp2 = world.lps
    c1, c2 = (c["id"] for c in world.clients)
    await _landed_cash_out(factory, world, "10.00", 1_500, 0)
    await _landed_cash_out(factory, world, "10.00", 1_600, 0)
    await factory.run_engine()

    summary = await _get(http, "/lp/summary", lp1)
    assert len(summary) == 1
    row = summary[0]
    assert row["client_id"] == c1 and row["machine_id"] == world.machine["id"]
    assert row["currency"] == "GTQ"
    assert row["remaining_balance"] == "15.00"
    assert row["sats_received"] == 1_125 + 1_200
    # 100,000,000 x 15.00 / 2,325 = 645,161.2903...
    assert row["average_cost_basis_fiat_per_btc"] == "645161.29"
    assert row["cycle_complete"] is False

    await _landed_cash_out(factory, world, "20.00", 3_000, 0)
    await factory.run_engine()
    first = (await _get(http, "/lp/summary", lp1))[0]
    second = (await _get(http, "/lp/summary", lp2))[0]
    assert (
        first["remaining_balance"],
        first["sats_received"],
        first["cycle_complete"],
    ) == ("0.00", 4_575, True)
    assert first["average_cost_basis_fiat_per_btc"] == "655737.70"  # 1e8 x 30 / 4575
    assert (
        second["remaining_balance"],
        second["sats_received"],
        second["cycle_complete"],
    ) == ("0.00", 1_525, True)
    assert second["average_cost_basis_fiat_per_btc"] == "655737.70"  # 1e8 x 10 / 1525
    assert [await factory.balance(lp.wallet) for lp in world.lps] == [4_575, 1_525]

    mine = await _get(http, "/lp/payments", lp1)
    theirs = await _get(http, "/lp/payments", lp2)
    assert len(mine) == 3 and all(leg["client_id"] == c1 for leg in mine)
    assert len(theirs) == 3 and all(leg["client_id"] == c2 for leg in theirs)
    assert sorted(leg["amount_sats"] for leg in mine) == [1_125, 1_200, 2_250]
    assert not {leg["id"] for leg in mine} & {leg["id"] for leg in theirs}
    # The operator's summary view is not an LP's: they hold no enrolment.
    assert await _get(http, "/lp/summary", world.operator) == []
    assert await _get(http, "/lp/payments", world.operator) == []


async def test_autoforward_to_an_unreachable_address_keeps_the_sats(
    factory, http, no_platform_fee
):
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp(
        autoforward_enabled=True,
        # .test is reserved (RFC 2606): it never resolves, here or anywhere.
        autoforward_ln_address="alice@gone.satmachine.test",
    )
    client = await factory.enrol(operator, machine, lp, deposit="50.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000)
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    shown = await _settlement(http, operator, settlement.id)
    assert shown["status"] == "processed", shown["error"]
    dca = next(leg for leg in shown["legs"] if leg["leg_type"] == "dca")
    forward = next(leg for leg in shown["legs"] if leg["leg_type"] == "autoforward")
    assert (dca["status"], dca["amount_sats"], dca["client_id"]) == (
        "completed",
        1_500,
        client["id"],
    )
    # What it would forward: the leg less LNbits' routing-fee reserve (1 % here).
    assert (forward["status"], forward["amount_sats"], forward["client_id"]) == (
        "failed",
        1_485,
        client["id"],
    )
    assert forward["destination"] == "alice@gone.satmachine.test"
    assert forward["error"] and "stay in your LNbits wallet" in forward["error"]
    assert await factory.balance(lp.wallet) == 1_500
    balance = await factory.balance_of(operator, client["id"])
    assert (balance["remaining_balance"], balance["total_sats"]) == ("40.00", 1_500)
    lp_view = await _get(http, "/lp/payments", lp)
    assert {(leg["leg_type"], leg["status"]) for leg in lp_view} == {
        ("dca", "completed"),
        ("autoforward", "failed"),
    }
    # Running the engine again neither re-forwards blindly nor re-pays the LP.
    await factory.run_engine()
    assert await factory.balance(lp.wallet) == 1_500
    assert (
        len(
            [
                leg
                for leg in (await _settlement(http, operator, settlement.id))["legs"]
                if leg["leg_type"] == "autoforward"
            ]
        )
        == 1
    )
