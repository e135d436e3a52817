"""Invariants the database holds (issue "Every sat held by the database").

Each test is a race or a stall that paid money it must not on the code before: two
writers spending one LP balance, a worker that lost its lease still paying. They run
concurrently inside one real LNbits, with real payments, and check LNbits' own books.
"""

import asyncio
from decimal import Decimal

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

API = "/satmachineadmin/api/v1"


@pytest.fixture
async def no_platform_fee(factory, super_user):
    await factory.platform(super_user, "0", None)


async def _client_row(client_id):
    from satmachineadmin import crud

    row = await crud.db.fetchone(
        "SELECT deposits_minor, reserved_minor FROM satmachineadmin.clients "
        "WHERE id = :id",
        {"id": client_id},
    )
    return int(row["deposits_minor"]), int(row["reserved_minor"])


async def _outgoing(wallet_id):
    from lnbits.core.crud import get_payments

    return [
        p for p in await get_payments(wallet_id=wallet_id, complete=True) if p.is_out
    ]


@pytest.fixture
def slow_rate(monkeypatch):
    """The rate lookup takes a moment (as LNbits' exchange-rate service does): long
    enough for every concurrent request to have read the LP's balance first."""
    from satmachineadmin.engine import rates
    from satmachineadmin.services import settle

    real = rates.current_rate

    async def slow(machine, stated=None):
        await asyncio.sleep(0.3)
        return await real(machine, stated)

    monkeypatch.setattr(settle, "current_rate", slow)


async def test_two_settle_requests_at_once_spend_the_balance_once(
    http, factory, no_platform_fee, slow_rate
):
    operator = await factory.operator()
    funding = await factory.wallet(operator, "funding")
    await factory.fund(funding, 1_000_000)
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="100.00")

    async def settle():
        return await http.post(
            f"{API}/clients/{client['id']}/settle",
            headers=operator.admin,
            json={"funding_wallet_id": funding.id, "exchange_rate": "150"},
        )

    answers = await asyncio.gather(*(settle() for _ in range(4)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201, 409, 409, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert "balance changed" in refused.json()["detail"]
    assert await factory.balance(lp.wallet) == 15_000
    assert await factory.balance(funding) == 1_000_000 - 15_000
    assert await _client_row(client["id"]) == (10_000, 10_000)
    assert len(await _outgoing(funding.id)) == 1


async def test_a_cash_out_distributed_while_a_settle_waits_is_not_paid_twice(
    http, factory, no_platform_fee, slow_rate
):
    operator = await factory.operator()
    funding = await factory.wallet(operator, "funding")
    await factory.fund(funding, 1_000_000)
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="100.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)

    settle = asyncio.create_task(
        http.post(
            f"{API}/clients/{client['id']}/settle",
            headers=operator.admin,
            json={"funding_wallet_id": funding.id, "exchange_rate": "150"},
        )
    )
    await asyncio.sleep(0.05)  # the settle has read 100.00 and waits for its rate
    played = await factory.cash_out(machine, customer.wallet, "50.00", 7_500, 0)
    assert await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    answer = await settle

    # Before: 201, and 7,500 + 15,000 sats for 100.00 GTQ of deposits.
    assert answer.status_code == 409, answer.text
    assert await factory.balance(lp.wallet) == 7_500
    assert await _client_row(client["id"]) == (10_000, 5_000)
    # What remains can still be settled, once.
    again = await http.post(
        f"{API}/clients/{client['id']}/settle",
        headers=operator.admin,
        json={"funding_wallet_id": funding.id, "exchange_rate": "150"},
    )
    assert again.status_code == 201, again.text
    assert again.json()["amount_sats"] == 7_500
    assert await factory.balance(lp.wallet) == 15_000
    assert await _client_row(client["id"]) == (10_000, 10_000)


async def test_a_reservation_the_balance_no_longer_covers_writes_nothing(
    factory, no_platform_fee
):
    """The conditional UPDATE itself: a leg for more than remains is refused inside
    the transaction, and the leg row goes with it."""
    from satmachineadmin import crud
    from satmachineadmin.engine.legs import lp_leg
    from satmachineadmin.models import Machine

    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="10.00")
    row = Machine.parse_obj(await crud.get_machine(machine["id"]))
    prefs = await crud.get_client_with_prefs(client["id"])

    def leg(key, fiat):
        return lp_leg(
            row,
            prefs,
            key=key,
            leg_type="settlement",
            label="test",
            fiat=fiat,
            quote=None,
            source_wallet_id=machine["wallet"].id,
        )

    async with crud.transaction() as tx:
        assert await crud.insert_leg(tx, leg("inv:a", 600))
    with pytest.raises(crud.BalanceShort):
        async with crud.transaction() as tx:
            await crud.insert_leg(tx, leg("inv:b", 401))
    assert await crud.get_leg_by_key("inv:b") is None
    assert await _client_row(client["id"]) == (1_000, 600)
    async with crud.transaction() as tx:
        assert await crud.insert_leg(tx, leg("inv:c", 400))
        # The same key again is the same leg, not a second reservation.
        assert not await crud.insert_leg(tx, leg("inv:c", 400))
    assert await _client_row(client["id"]) == (1_000, 1_000)


async def test_a_worker_that_lost_its_lease_pays_nothing_more(
    http, factory, no_platform_fee, monkeypatch
):
    """Worker A stores its invoices and stalls; its lease runs out; the operator
    records a partial dispense of half (voiding A's legs and planning new ones); A
    wakes up. Before: A paid its voided 15,000-sat leg and the new 7,500-sat leg was
    paid too. Now A's compare-and-swap before the payment fails and it stops."""
    from satmachineadmin import crud, distribution

    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="200.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    await factory.fund(machine["wallet"], 50_000)  # a float a double payment could use
    played = await factory.cash_out(machine, customer.wallet, "100.00", 15_000, 0)
    settlement = await factory.settlement_of(played["payment_hash"])

    stalled, resume = asyncio.Event(), asyncio.Event()
    real_store = crud.set_leg_payments

    async def store_then_stall(invoices):
        stored = await real_store(invoices)
        stalled.set()
        await resume.wait()
        return stored

    monkeypatch.setattr(crud, "set_leg_payments", store_then_stall)
    worker_a = asyncio.create_task(distribution.process_settlement(settlement.id))
    await asyncio.wait_for(stalled.wait(), 10)
    monkeypatch.setattr(crud, "set_leg_payments", real_store)

    # A's lease runs out while it sleeps; the operator rescales the settlement.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    answer = await http.post(
        f"{API}/settlements/{settlement.id}/partial-dispense",
        headers=operator.admin,
        json={"dispensed_fraction": "0.5"},
    )
    assert answer.status_code == 200, answer.text
    resume.set()
    assert await worker_a is None  # it stopped: not its settlement any more
    await factory.run_engine()

    legs = await crud.list_settlement_legs(settlement.id)
    dca = [leg for leg in legs if leg.leg_type == "dca"]
    assert sorted((leg.status, leg.amount_sats) for leg in dca) == [
        ("completed", 7_500),
        ("voided", 15_000),
    ]
    assert await factory.balance(lp.wallet) == 7_500
    assert [p.amount // -1000 for p in await _outgoing(machine["wallet"].id)] == [7_500]
    assert (await crud.get_settlement(settlement.id)).status == "processed"
    assert await _client_row(client["id"]) == (20_000, 5_000)


async def test_a_stale_standalone_leg_is_not_paid_without_its_lease(
    factory, no_platform_fee
):
    """A fixed or settlement leg is paid only under its own lease, with at least
    half of it left: a worker whose lease lapsed while it stalled pays nothing."""
    from satmachineadmin import crud
    from satmachineadmin.engine import payouts
    from satmachineadmin.engine.legs import lp_leg
    from satmachineadmin.models import Machine

    operator = await factory.operator()
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], 10_000)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="10.00")
    row = Machine.parse_obj(await crud.get_machine(machine["id"]))
    prefs = await crud.get_client_with_prefs(client["id"])
    leg = lp_leg(
        row,
        prefs,
        key="stale-standalone",
        leg_type="settlement",
        label="test",
        fiat=1_000,
        quote=(Decimal(150), "stated"),
        source_wallet_id=machine["wallet"].id,
    )
    async with crud.transaction() as tx:
        assert await crud.insert_leg(tx, leg)
    # The worker took the lease long ago; it has almost run out.
    await crud.db.execute(
        "UPDATE satmachineadmin.legs SET claimed_until = :t WHERE id = :id",
        {"t": crud.now() + 5, "id": leg.id},
    )
    with pytest.raises(payouts.ClaimLost):
        await payouts.pay_leg(leg, payouts.Claim(None, 120))
    assert await factory.balance(lp.wallet) == 0
    # Under a fresh lease it is paid, once.
    await crud.release_leg(leg.id)
    paid = await payouts.pay_standalone_leg(leg)
    assert paid.status == "completed", paid.error
    assert await factory.balance(lp.wallet) == 1_500
    assert len(await _outgoing(machine["wallet"].id)) == 1
