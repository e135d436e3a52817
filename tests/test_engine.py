"""The distribution engine through real LNbits payments: docs/money.md's worked examples,
to the sat, with every wallet's balance moving accordingly."""

import asyncio

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

FIELD_REPORT_BALANCES = ["690.00", "7.54", "2.38", "0.07"]


async def _machine_with_lps(factory, balances, currency="GTQ"):
    operator = await factory.operator()
    machine = await factory.machine(operator, currency=currency)
    lps, clients = [], []
    for amount in balances:
        lp = await factory.lp()
        client = await factory.enrol(operator, machine, lp, deposit=amount)
        lps.append(lp)
        clients.append(client)
    return operator, machine, lps, clients


async def _legs(settlement_id):
    from satmachineadmin import crud

    return await crud.list_settlement_legs(settlement_id)


@pytest.fixture
async def no_platform_fee(factory, super_user):
    await factory.platform(super_user, "0", None)


async def test_covered_cash_out_pays_lps_pro_rata_to_the_sat(
    factory, super_user, no_platform_fee
):
    operator, machine, lps, clients = await _machine_with_lps(
        factory, FIELD_REPORT_BALANCES
    )
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)

    played = await factory.cash_out(machine, customer.wallet, "500.00", 75_000, 0)
    settlement = await factory.settlement_of(played["payment_hash"])
    assert settlement is not None and settlement.status == "pending"
    assert await factory.run_engine() == 1

    from satmachineadmin import crud

    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed"
    assert settlement.orphan_sats == 0
    dca = [leg for leg in await _legs(settlement.id) if leg.leg_type == "dca"]
    by_client = {leg.client_id: leg for leg in dca}
    assert [by_client[c["id"]].amount_sats for c in clients] == [73_929, 809, 255, 7]
    assert [by_client[c["id"]].amount_fiat_minor for c in clients] == [
        49_286,
        539,
        170,
        5,
    ]
    assert all(leg.status == "completed" for leg in dca)
    assert [await factory.balance(lp.wallet) for lp in lps] == [73_929, 809, 255, 7]
    assert await factory.balance(machine["wallet"]) == 0
    remaining = [
        (await factory.balance_of(operator, c["id"]))["remaining_balance"]
        for c in clients
    ]
    assert remaining == ["197.14", "2.15", "0.68", "0.02"]
    first = await factory.balance_of(operator, clients[0]["id"])
    assert first["total_sats"] == 73_929
    assert first["total_distributed"] == "492.86"


async def test_short_cash_out_pays_everyone_in_full_and_keeps_orphan_sats(
    factory, super_user, no_platform_fee
):
    """The field report: 2000 GTQ left the machine, only 699.99 GTQ was tracked."""
    operator, machine, lps, clients = await _machine_with_lps(
        factory, FIELD_REPORT_BALANCES
    )
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)

    played = await factory.cash_out(machine, customer.wallet, "2000.00", 300_000, 0)
    settlement = await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    from satmachineadmin import crud

    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed"
    assert settlement.orphan_sats == 195_002
    assert settlement.orphan_fiat_minor == 130_001
    legs = await _legs(settlement.id)
    paid = {
        leg.client_id: leg.amount_sats
        for leg in legs
        if leg.leg_type == "dca" and leg.client_id
    }
    assert [paid[c["id"]] for c in clients] == [103_500, 1_131, 357, 10]
    orphan = [leg for leg in legs if leg.leg_type == "dca" and leg.client_id is None]
    assert len(orphan) == 1
    assert orphan[0].status == "skipped"
    assert orphan[0].amount_sats == 195_002
    assert "orphan" in orphan[0].error
    assert [await factory.balance(lp.wallet) for lp in lps] == [103_500, 1_131, 357, 10]
    assert await factory.balance(machine["wallet"]) == 195_002
    for client in clients:
        balance = await factory.balance_of(operator, client["id"])
        assert balance["remaining_balance"] == "0.00"
        assert balance["cycle_complete"] is True


async def test_commission_two_stages_platform_then_operator_rules(factory, super_user):
    operator, machine, lps, clients = await _machine_with_lps(factory, ["100.00"])
    fee_wallet = await factory.wallet(super_user, "platform fees")
    await factory.platform(super_user, "0.30", fee_wallet)
    targets = [await factory.wallet(operator, f"split{i}") for i in range(3)]
    await factory.splits(
        operator,
        [
            {"target": targets[0].id, "percent": "50"},
            {"target": targets[1].id, "percent": "30"},
            {"target": targets[2].inkey, "percent": "20", "label": "partner"},
        ],
    )
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    before_fee = await factory.balance(fee_wallet)

    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 100)
    settlement = await factory.settlement_of(played["payment_hash"])
    assert settlement.platform_fee_sats == 30
    assert settlement.operator_fee_sats == 70
    assert settlement.super_fee_fraction == "0.30"
    await factory.run_engine()

    assert await factory.balance(fee_wallet) - before_fee == 30
    assert [await factory.balance(t) for t in targets] == [35, 21, 14]
    assert await factory.balance(lps[0].wallet) == 1_500
    assert await factory.balance(machine["wallet"]) == 0
    # The fraction in force when the settlement landed is kept: changing it later
    # changes nothing for this settlement.
    await factory.platform(super_user, "0.50", fee_wallet)
    from satmachineadmin import crud

    assert (await crud.get_settlement(settlement.id)).platform_fee_sats == 30
    await factory.platform(super_user, "0", None)


async def test_cash_in_splits_commission_and_records_skipped_lp_leg(
    factory, super_user, no_platform_fee
):
    operator, machine, lps, clients = await _machine_with_lps(factory, ["100.00"])
    split_wallet = await factory.wallet(operator, "commission")
    await factory.splits(
        operator, [{"target": split_wallet.id, "percent": "100"}], machine["id"]
    )
    await factory.fund(machine["wallet"], 20_000)
    customer = await factory.user()

    played = await factory.cash_in(machine, customer.wallet, "100.00", 15_000, 750)
    assert await factory.balance(customer.wallet) == 14_250
    from satmachineadmin import bitspire, crud

    # LNbits never dispatches outgoing payments to listeners: the sweep finds cash-ins.
    assert await factory.settlement_of(played["payment_hash"], timeout=0.3) is None
    assert await bitspire.sweep_all() >= 1
    settlement = await factory.settlement_of(played["payment_hash"])
    assert settlement.tx_type == "cash_in"
    await factory.run_engine()
    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed"
    legs = await _legs(settlement.id)
    assert {(leg.leg_type, leg.status, leg.amount_sats) for leg in legs} == {
        ("operator_split", "completed", 750),
        ("dca", "skipped", 0),
    }
    assert "cash-in" in next(leg.error for leg in legs if leg.leg_type == "dca")
    assert await factory.balance(split_wallet) == 750
    assert (await factory.balance_of(operator, clients[0]["id"]))[
        "remaining_balance"
    ] == "100.00"
    # Sweeping again finds nothing new.
    assert await bitspire.sweep_all() == 0


async def test_every_unpaid_amount_is_a_skipped_leg_with_its_reason(
    factory, super_user
):
    """No platform wallet, no split rules, no LPs: nothing silent, sats stay put."""
    await factory.platform(super_user, "0.10", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)

    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 100)
    settlement = await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    from satmachineadmin import crud

    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed"
    legs = await _legs(settlement.id)
    reasons = {leg.leg_type: (leg.status, leg.amount_sats, leg.error) for leg in legs}
    assert reasons["super_fee"][:2] == ("skipped", 10)
    assert "no platform fee wallet" in reasons["super_fee"][2]
    assert reasons["operator_split"][:2] == ("skipped", 90)
    assert "no commission split rules" in reasons["operator_split"][2]
    assert reasons["dca"][:2] == ("skipped", 1_500)
    assert "no flow-mode LPs" in reasons["dca"][2]
    assert sum(leg.amount_sats for leg in legs) == 1_600
    assert await factory.balance(machine["wallet"]) == 1_600
    await factory.platform(super_user, "0", None)


async def test_fixed_mode_lps_are_left_out_of_flow_distribution(
    factory, super_user, no_platform_fee
):
    operator = await factory.operator()
    machine = await factory.machine(operator)
    flow_lp = await factory.lp()
    fixed_lp = await factory.lp(mode="fixed", limit="10.00")
    flow_client = await factory.enrol(operator, machine, flow_lp, deposit="50.00")
    fixed_client = await factory.enrol(operator, machine, fixed_lp, deposit="500.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)

    played = await factory.cash_out(machine, customer.wallet, "20.00", 3_000, 0)
    await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    assert await factory.balance(flow_lp.wallet) == 3_000
    assert await factory.balance(fixed_lp.wallet) == 0
    assert (await factory.balance_of(operator, flow_client["id"]))[
        "remaining_balance"
    ] == "30.00"
    assert (await factory.balance_of(operator, fixed_client["id"]))[
        "remaining_balance"
    ] == "500.00"


async def test_sweep_catches_every_payment_missed_while_down(
    factory, super_user, no_platform_fee
):
    """More cash-outs than one LNbits page while the listener was not running."""
    from lnbits.core.services import create_invoice, pay_invoice

    from satmachineadmin import bitspire, crud

    operator, machine, lps, clients = await _machine_with_lps(factory, ["1000.00"])
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    hashes = []
    for _ in range(25):
        extra = factory.bitspire_extra(machine, "cash_out", "1.00", 150, 0)
        # Tagged so the listener ignores them: the process "was down" when they came.
        extra["source"] = "bitspire-offline"
        invoice = await create_invoice(
            wallet_id=machine["wallet"].id,
            amount=150,
            memo="x",
            extra=extra,
            internal=True,
        )
        await pay_invoice(wallet_id=customer.wallet.id, payment_request=invoice.bolt11)
        hashes.append(invoice.payment_hash)
    await crud.db.execute(
        "UPDATE satmachineadmin.machines SET sweep_cursor = 0 WHERE id = :id",
        {"id": machine["id"]},
    )
    # Restore the marker in LNbits' own records, as the machine would have sent it.
    from lnbits.core.db import db as core_db

    for payment_hash in hashes:
        await core_db.execute(
            "UPDATE apipayments SET extra = REPLACE(extra, 'bitspire-offline', 'bitspire') "
            "WHERE payment_hash = :h",
            {"h": payment_hash},
        )
    assert await bitspire.sweep_all() == 25
    assert all([await factory.settlement_of(h, timeout=0) for h in hashes])
    assert await bitspire.sweep_all() == 0
    await factory.run_engine()
    assert await factory.balance(lps[0].wallet) == 25 * 150


async def test_listener_hands_off_while_a_100_lp_distribution_runs(
    factory, super_user, no_platform_fee
):
    """LNbits' listener queue is shared by every extension: our handler must return at
    once and the next ATM payment must land while a long distribution is paying."""
    from lnbits.core.crud import get_standalone_payment

    from satmachineadmin import crud, distribution, tasks

    operator = await factory.operator()
    machine = await factory.machine(operator)
    await factory.many_lps(operator, machine, 100, 1_000)
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    first = await factory.cash_out(machine, customer.wallet, "500.00", 75_000, 0)
    await factory.settlement_of(first["payment_hash"])

    engine = asyncio.create_task(distribution.run_due_settlements())
    while not await crud.list_legs(
        machine_id=machine["id"], status="completed", limit=1
    ):
        await asyncio.sleep(0.01)  # the distribution is paying

    # The next ATM payment, at a second machine of the operator's without LPs, so
    # that paying it later costs one skipped leg, not another hundred.
    other = await factory.machine(operator)
    second = factory.bitspire_extra(other, "cash_out", "1.00", 150, 0)
    from lnbits.core.services import create_invoice, pay_invoice

    second["source"] = "bitspire-held"  # keep LNbits' own dispatch out of the way
    invoice = await create_invoice(
        wallet_id=other["wallet"].id,
        amount=150,
        memo="x",
        extra=second,
        internal=True,
    )
    await pay_invoice(wallet_id=customer.wallet.id, payment_request=invoice.bolt11)
    payment = await get_standalone_payment(invoice.payment_hash, incoming=True)
    payment.extra["source"] = "bitspire"

    await tasks.on_invoice_paid(payment)
    landed = await factory.settlement_of(invoice.payment_hash, timeout=10)
    assert landed is not None
    assert not engine.done(), (
        "the second payment should land while the first still pays"
    )
    await engine
    assert (await crud.get_settlement(landed.id)).status == "pending"
    settlement = await crud.get_settlement(
        (await factory.settlement_of(first["payment_hash"])).id
    )
    assert settlement.status == "processed"
    assert (
        len(
            [
                leg
                for leg in await crud.list_settlement_legs(settlement.id)
                if leg.status == "completed"
            ]
        )
        == 100
    )


async def test_machines_are_paid_in_parallel_each_one_in_order(
    factory, super_user, no_platform_fee, monkeypatch
):
    """Scale-out: one pass pays several machines at once, never two settlements of
    one machine at once, each machine's oldest first; a settlement another worker
    holds (a live claim) is left to that worker."""
    from satmachineadmin import crud, distribution

    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    machines, hashes = [], {}
    for _ in range(4):
        _, machine, _, _ = await _machine_with_lps(factory, ["100.00"])
        machines.append(machine)
        for _ in range(2):
            played = await factory.cash_out(machine, customer.wallet, "1.00", 150, 0)
            hashes[played["payment_hash"]] = machine["id"]
    settlements = {(await factory.settlement_of(h)).id: m for h, m in hashes.items()}
    held = next(s for s, m in sorted(settlements.items()) if m == machines[3]["id"])
    assert await crud.claim_settlement(held, "another-worker", 120)

    real = distribution.process_settlement
    in_flight: dict[str, int] = {}
    peak = 0
    order: dict[str, list[str]] = {}

    async def tracked(settlement_id: str):
        nonlocal peak
        machine_id = settlements.get(settlement_id)
        if machine_id is None:  # another test's leftover
            return await real(settlement_id)
        in_flight[machine_id] = in_flight.get(machine_id, 0) + 1
        assert in_flight[machine_id] == 1, "two settlements of one machine at once"
        peak = max(peak, sum(in_flight.values()))
        order.setdefault(machine_id, []).append(settlement_id)
        try:
            await asyncio.sleep(0.2)  # long enough for the other machines to start
            return await real(settlement_id)
        finally:
            in_flight[machine_id] -= 1

    monkeypatch.setattr(distribution, "process_settlement", tracked)
    monkeypatch.setattr(distribution, "MACHINES_IN_FLIGHT", 4)
    assert await distribution.run_due_settlements() == 7
    assert peak == 4  # every machine at once
    for machine in machines[:3]:
        assert order[machine["id"]] == sorted(
            s for s, m in settlements.items() if m == machine["id"]
        )
    # Held by the other worker: left alone (its machine's next one was paid).
    assert held not in order[machines[3]["id"]]
    assert (await crud.get_settlement(held)).status == "processing"
    # The other worker's lease runs out: the held one is taken over and paid.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": held},
    )
    assert await distribution.run_due_settlements() == 1
    assert order[machines[3]["id"]][-1] == held
    for settlement_id in settlements:
        assert (await crud.get_settlement(settlement_id)).status == "processed"


async def test_a_machine_whose_pass_fails_does_not_stop_the_others(
    factory, super_user, no_platform_fee, monkeypatch
):
    """An error at one machine (the database gone for a moment, say) is raised from
    the pass, after the other machines in flight have been paid."""
    from satmachineadmin import crud, distribution

    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    settlements = []
    for _ in range(2):
        _, machine, _, _ = await _machine_with_lps(factory, ["100.00"])
        played = await factory.cash_out(machine, customer.wallet, "1.00", 150, 0)
        settlements.append((await factory.settlement_of(played["payment_hash"])).id)
    broken, fine = settlements
    real = distribution.process_settlement

    async def failing(settlement_id: str):
        if settlement_id == broken:
            raise RuntimeError("database unreachable")
        await asyncio.sleep(0.1)  # still paying when the other one fails
        return await real(settlement_id)

    monkeypatch.setattr(distribution, "process_settlement", failing)
    with pytest.raises(RuntimeError, match="database unreachable"):
        await distribution.run_due_settlements()
    assert (await crud.get_settlement(fine)).status == "processed"
    assert (await crud.get_settlement(broken)).status == "pending"
    monkeypatch.setattr(distribution, "process_settlement", real)
    assert await distribution.run_due_settlements() == 1
    assert (await crud.get_settlement(broken)).status == "processed"
