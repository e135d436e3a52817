"""Crash the engine between every step and restart it: every leg ends paid exactly
once, and the wallets balance to the sat."""

import asyncio
import json
import time
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

# (checkpoint, passes let through before it fires, legs paid per batch). The
# settlement below has 5 legs: one batch of all of them, or batches of 2, 2 and 1
# (the crash then lands in a later batch, after earlier ones have completed).
CHECKPOINTS = [
    ("after_claim", 0, 50),
    ("after_plan", 0, 50),
    ("after_invoice", 0, 50),
    ("after_payment", 0, 50),
    ("after_payment", 3, 50),
    ("before_outcome", 0, 50),
    ("after_invoice", 1, 2),
    ("after_payment", 2, 2),
    ("before_outcome", 1, 2),
]


async def _setup(factory, super_user, lps=3):
    operator = await factory.operator()
    machine = await factory.machine(operator)
    fee_wallet = await factory.wallet(super_user, "fees")
    await factory.platform(super_user, "0.30", fee_wallet)
    split = await factory.wallet(operator, "commission")
    await factory.splits(
        operator, [{"target": split.id, "percent": "100"}], machine["id"]
    )
    wallets = []
    for i in range(lps):
        lp = await factory.lp()
        await factory.enrol(operator, machine, lp, deposit=f"{100 + i}.00")
        wallets.append(lp.wallet)
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000_000)
    return operator, machine, fee_wallet, split, wallets, customer


async def _outgoing_payments(wallet_id):
    from lnbits.core.crud import get_payments

    return [
        p
        for p in await get_payments(wallet_id=wallet_id, outgoing=True, limit=10_000)
        if p.success
    ]


async def _restart():
    """What a new process does: leases of the dead one run out, then reconcile first."""
    from satmachineadmin import crud, distribution

    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE status = 'processing'"
    )
    await distribution.reconcile_open_legs()
    await distribution.run_due_settlements()


@pytest.mark.parametrize("point,skips,batch", CHECKPOINTS)
async def test_crash_at_each_step_then_restart_pays_each_leg_once(
    factory, super_user, monkeypatch, point, skips, batch
):
    from satmachineadmin import crud, distribution
    from satmachineadmin.engine import payouts
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    operator, machine, fee_wallet, split, lp_wallets, customer = await _setup(
        factory, super_user
    )
    fee_before = await factory.balance(fee_wallet)
    played = await factory.cash_out(machine, customer.wallet, "30.00", 4_500, 200)
    settlement = await factory.settlement_of(played["payment_hash"])

    monkeypatch.setattr(payouts, "PAY_BATCH", batch)
    crash_points[point] = skips
    with pytest.raises(EngineCrash):
        await distribution.run_due_settlements()
    assert point not in crash_points
    legs = await crud.list_settlement_legs(settlement.id)
    if batch < len(legs) and skips:
        # The crash hit a later batch: the first one is already recorded paid.
        assert sum(leg.status == "completed" for leg in legs) >= batch
    # The dead process's claim blocks everyone else until its lease runs out.
    assert await distribution.run_due_settlements() == 0

    await _restart()
    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed", settlement.error
    legs = await crud.list_settlement_legs(settlement.id)
    payable = [leg for leg in legs if leg.amount_sats > 0]
    assert all(leg.status == "completed" for leg in payable)
    # Exactly one LNbits payment out of the machine wallet per leg, no more.
    outgoing = await _outgoing_payments(machine["wallet"].id)
    assert sorted(p.payment_hash for p in outgoing) == sorted(
        leg.payment_hash for leg in payable
    )
    # Conservation: everything that arrived went out as legs, to the sat.
    assert await factory.balance(machine["wallet"]) == 0
    assert sum(leg.amount_sats for leg in payable) == 4_700
    assert await factory.balance(fee_wallet) - fee_before == 60
    assert await factory.balance(split) == 140
    assert sum([await factory.balance(w) for w in lp_wallets]) == 4_500
    # Restarting again changes nothing.
    await _restart()
    assert len(await _outgoing_payments(machine["wallet"].id)) == len(payable)
    await factory.platform(super_user, "0", None)


async def test_two_engines_racing_pay_each_leg_once(factory, super_user):
    from satmachineadmin import crud, distribution

    operator, machine, fee_wallet, split, lp_wallets, customer = await _setup(
        factory, super_user, lps=5
    )
    hashes = []
    for i in range(6):
        played = await factory.cash_out(
            machine, customer.wallet, "10.00", 1_500, 100 + i
        )
        hashes.append(played["payment_hash"])
    settlements = [await factory.settlement_of(h) for h in hashes]

    results = await asyncio.gather(
        *(distribution.run_due_settlements() for _ in range(4))
    )
    assert sum(results) == 6  # each settlement processed by exactly one engine
    for settlement in settlements:
        refreshed = await crud.get_settlement(settlement.id)
        assert refreshed.status == "processed"
    legs = [leg for s in settlements for leg in await crud.list_settlement_legs(s.id)]
    payable = [leg for leg in legs if leg.amount_sats > 0]
    outgoing = await _outgoing_payments(machine["wallet"].id)
    assert len(outgoing) == len(payable)
    assert len({leg.idempotency_key for leg in legs}) == len(legs)
    assert await factory.balance(machine["wallet"]) == 0
    await factory.platform(super_user, "0", None)


async def test_insufficient_float_waits_then_pays_after_top_up(factory, super_user):
    """A cash-in's commission is paid from the float: an empty float waits, errored
    with what it needs, and is retried once the operator tops the float up."""
    from satmachineadmin import crud, distribution, tasks

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    split = await factory.wallet(operator, "commission")
    await factory.splits(
        operator, [{"target": split.id, "percent": "100"}], machine["id"]
    )
    await factory.fund(machine["wallet"], 1_000)
    customer = await factory.user()
    played = await factory.cash_in(machine, customer.wallet, "10.00", 1_500, 500)
    from satmachineadmin import bitspire

    await bitspire.sweep_all()
    settlement = await factory.settlement_of(played["payment_hash"])
    # The float paid the customer 1,000 and has nothing left for the 500 commission.
    assert await factory.balance(machine["wallet"]) == 0
    await distribution.run_due_settlements()
    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "errored"
    assert settlement.error == "insufficient float: need 500 sats"
    assert settlement.next_attempt_at > crud.now()
    # Not due yet: nothing happens.
    assert await distribution.run_due_settlements() == 0

    # The operator tops up; LNbits tells the listener; the settlement becomes due.
    await factory.fund(machine["wallet"], 700)
    from lnbits.core.crud import get_payments

    top_up = (await get_payments(wallet_id=machine["wallet"].id, incoming=True))[0]
    await tasks.on_invoice_paid(top_up)
    await asyncio.sleep(0.1)
    await distribution.run_due_settlements()
    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed"
    assert await factory.balance(split) == 500
    assert await factory.balance(machine["wallet"]) == 200
    legs = await crud.list_settlement_legs(settlement.id)
    commission = [leg for leg in legs if leg.leg_type == "operator_split"]
    assert len(commission) == 1 and commission[0].attempts == 2


@pytest.mark.parametrize("payee_left", ["pending", "failed"])
async def test_crash_inside_lnbits_between_debit_and_credit_is_completed(
    factory, super_user, monkeypatch, payee_left
):
    """LNbits commits an internal payment in two statements: the payer's debit, then
    the payee's invoice marked paid. A process killed between them (found by the
    SIGKILL test) debits the machine and credits nobody. The next start-up's
    reconcile completes the transfer once; LNbits' start-up may also have failed the
    payee's forgotten invoice in the meantime."""
    import lnbits.core.services.payments as lnbits_payments
    from lnbits.core.crud import get_standalone_payment, update_payment
    from lnbits.core.models import PaymentState

    from satmachineadmin import crud, distribution
    from satmachineadmin.engine.faults import EngineCrash

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp_wallets = []
    for deposit in ("100.00", "50.00"):
        lp = await factory.lp()
        await factory.enrol(operator, machine, lp, deposit=deposit)
        lp_wallets.append(lp.wallet)
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    played = await factory.cash_out(machine, customer.wallet, "30.00", 4_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])

    real_update = lnbits_payments.update_payment
    killed: list[str] = []

    async def die_before_crediting(payment, *args, **kwargs):
        if not killed and payment.is_in and (payment.extra or {}).get("leg_id"):
            killed.append(payment.payment_hash)
            raise EngineCrash("between LNbits' debit and credit")
        return await real_update(payment, *args, **kwargs)

    monkeypatch.setattr(lnbits_payments, "update_payment", die_before_crediting)
    with pytest.raises(EngineCrash):
        await distribution.run_due_settlements()
    monkeypatch.setattr(lnbits_payments, "update_payment", real_update)

    # The state a SIGKILL there leaves: debited, not credited.
    outgoing = await _outgoing_payments(machine["wallet"].id)
    assert [p.payment_hash for p in outgoing] == killed
    incoming = await get_standalone_payment(killed[0], incoming=True)
    assert incoming is not None and incoming.pending
    assert sum([await factory.balance(w) for w in lp_wallets]) == 0
    assert await factory.balance(machine["wallet"]) == 4_500 + incoming.amount // -1000
    if payee_left == "failed":  # what the next LNbits start-up does to it
        incoming.status = PaymentState.FAILED
        await update_payment(incoming)

    await _restart()
    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed", settlement.error
    legs = [leg for leg in await crud.list_settlement_legs(settlement.id)]
    assert [leg.status for leg in legs if leg.leg_type == "dca"] == ["completed"] * 2
    assert sorted(
        p.payment_hash for p in await _outgoing_payments(machine["wallet"].id)
    ) == sorted(leg.payment_hash for leg in legs if leg.leg_type == "dca")
    # Every sat that left the machine reached its LP, none twice.
    assert await factory.balance(machine["wallet"]) == 0
    assert [await factory.balance(w) for w in lp_wallets] == [3_000, 1_500]
    repaired = await get_standalone_payment(killed[0], incoming=True)
    assert repaired is not None and repaired.success
    audit = await crud.get_audit_log(operator.id)
    completed = [a for a in audit if a.action == "payment.credit_restored"]
    assert len(completed) == 1 and completed[0].operator_user_id == operator.id
    # A second restart finds nothing left to do.
    await _restart()
    assert [await factory.balance(w) for w in lp_wallets] == [3_000, 1_500]
    assert len(await _outgoing_payments(machine["wallet"].id)) == 2


async def test_a_worker_holding_a_stale_leg_never_pays_it_again(factory, super_user):
    """Two workers on one leg (a lease that ran out under a stalled but living
    engine): the second read the leg before the first stored its invoice. Only one
    invoice can be stored on the row, and only its owner pays it."""
    from satmachineadmin import crud, distribution
    from satmachineadmin.engine import payouts
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    await factory.enrol(operator, machine, lp, deposit="100.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    await factory.fund(machine["wallet"], 10_000)  # a float a double payment could use
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])

    crash_points["after_plan"] = 0  # planned, nothing paid
    with pytest.raises(EngineCrash):
        await distribution.run_due_settlements()
    (stale,) = [
        leg
        for leg in await crud.list_settlement_legs(settlement.id)
        if leg.leg_type == "dca"
    ]
    assert stale.status == "pending" and stale.payment_hash is None

    # The stalled worker's lease runs out and a second worker takes the settlement.
    stalled = payouts.Claim((await crud.get_settlement(settlement.id)).claim_token, 120)
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    assert await crud.claim_settlement(settlement.id, "second-worker", 120)
    first = await payouts.pay_leg(stale, payouts.Claim("second-worker", 120))
    assert first.status == "completed"
    second = await payouts.pay_leg(stale, stalled)  # what the slower worker holds
    assert second.status == "completed"
    assert second.payment_hash == first.payment_hash
    outgoing = await _outgoing_payments(machine["wallet"].id)
    assert [p.payment_hash for p in outgoing] == [first.payment_hash]
    assert await factory.balance(lp.wallet) == 1_500
    assert await factory.balance(machine["wallet"]) == 10_000


# ------------------------------------------- found by tests/test_chaos.py


async def test_a_server_starting_up_does_not_unpay_a_leg_the_other_server_paid(
    factory, drained_engine, monkeypatch
):
    """What the chaos run found (the `destination-balance` violation, e.g. seed 6):
    server b restarts while server a distributes. b's LNbits start-up
    (check_pending_payments) first lists every pending incoming invoice, the legs'
    stored invoices among them, then walks the list, asking its funding source about
    each; a fresh process has never seen an internal invoice, so each is marked
    failed - from the list, as it stood when listed. Meanwhile a pays one of those
    invoices: LNbits debits the machine wallet and credits the LP, and the engine
    marks the leg completed. Then b's walk reaches that invoice and writes its stale
    copy back as failed: the debit stays and the LP's credit is gone. The sweep's
    books pass (engine/books.py) gives the credit back, once, and says so in the
    audit trail."""
    from lnbits.core.crud import get_payments
    from lnbits.core.services import payments as lnbits_payments
    from lnbits.wallets.base import PaymentFailedStatus

    from satmachineadmin import crud, distribution, tasks
    from satmachineadmin.engine import books
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    operator = await factory.operator()
    machine = await factory.machine(operator)
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000)
    lp = await factory.lp()
    await factory.enrol(operator, machine, lp, deposit="100.00")
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])
    assert settlement is not None

    # Server a stores the leg's invoice, then stalls (its lease will run out).
    crash_points["after_invoice"] = 0
    try:
        await distribution.run_due_settlements()
    except EngineCrash:
        pass
    finally:
        crash_points.pop("after_invoice", None)
    [leg] = [
        leg
        for leg in await crud.list_settlement_legs(settlement.id)
        if leg.leg_type == "dca" and leg.payment_hash
    ]
    # Server b starts: LNbits lists the pending invoices it is going to check.
    listed = [
        payment
        for payment in await get_payments(
            since=int(time.time()) - 60 * 60 * 24 * 15,
            complete=False,
            pending=True,
            exclude_uncheckable=True,
        )
        if payment.payment_hash == leg.payment_hash
    ]
    assert listed, "the leg's invoice is pending, so b's start-up check lists it"
    # Meanwhile the lease runs out and a worker pays the leg.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    await distribution.run_due_settlements()
    assert (await crud.get_leg(leg.id)).status == "completed"
    assert await factory.balance(lp.wallet) == 1_500
    # b's walk reaches the invoice: its funding source (a fresh FakeWallet) never
    # saw it, so LNbits writes the listed copy back as failed.
    monkeypatch.setattr(
        lnbits_payments, "check_payment_status", _never_seen_here, raising=True
    )
    for payment in listed:
        await lnbits_payments.update_pending_payment(payment)
    monkeypatch.undo()
    assert await factory.balance(lp.wallet) == 0, "the race is reproduced"
    # Whatever the extension's own loops do next...
    await distribution.reconcile_open_legs()
    await distribution.run_due_settlements()
    await tasks.sweep_once()
    await tasks.scheduler_once()
    # ...the LP holds the sats of their completed leg, credited once.
    assert await factory.balance(lp.wallet) == 1_500, (
        "the machine wallet was debited for the leg, the LP's credit was undone "
        f"by a stale start-up check, and the leg stays completed ({leg.id})"
    )
    await tasks.sweep_once()
    assert await books.restore_since_start_up_window() == 0
    assert await factory.balance(lp.wallet) == 1_500
    [restored] = [
        entry
        for entry in await crud.get_audit_log(operator.id, entity_id=leg.id)
        if entry.action == "payment.credit_restored"
    ]
    assert json.loads(restored.detail or "{}")["amount_sats"] == 1_500
    assert PaymentFailedStatus  # what _never_seen_here answers


async def test_an_atm_payment_a_starting_server_wrote_back_as_failed_is_restored(
    factory, drained_engine, monkeypatch
):
    """The same race on the ATM's own payment into the machine wallet: the customer
    was debited, LNbits wrote the machine's invoice back as failed. The books pass
    restores the machine's float once; an invoice of the same shape in a wallet
    that is no machine's is left alone (not this extension's to touch)."""
    from lnbits.core.crud import get_standalone_payment
    from lnbits.core.services import create_invoice, pay_invoice
    from lnbits.core.services import payments as lnbits_payments

    from satmachineadmin import tasks
    from satmachineadmin.engine import books

    operator = await factory.operator()
    machine_wallet = await factory.wallet(operator, "machine")
    await factory.machine(operator, wallet=machine_wallet)
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000)
    bystander = await factory.user()
    stale = []
    for wallet_id in (machine_wallet.id, bystander.wallet.id):
        invoice = await create_invoice(
            wallet_id=wallet_id, amount=700, memo="not a cash-out"
        )
        stale.append(await get_standalone_payment(invoice.payment_hash, incoming=True))
        await pay_invoice(wallet_id=customer.wallet.id, payment_request=invoice.bolt11)
    float_before = await factory.balance(machine_wallet)
    monkeypatch.setattr(
        lnbits_payments, "check_payment_status", _never_seen_here, raising=True
    )
    for payment in stale:
        await lnbits_payments.update_pending_payment(payment)
    monkeypatch.undo()
    assert await factory.balance(machine_wallet) == float_before - 700
    assert await factory.balance(bystander.wallet) == 0

    await tasks.sweep_once()
    assert await factory.balance(machine_wallet) == float_before
    assert await factory.balance(bystander.wallet) == 0, "not this extension's"
    assert await books.restore_since_start_up_window() == 0
    assert await factory.balance(machine_wallet) == float_before


async def _never_seen_here(payment):  # type: ignore[no-untyped-def]
    from lnbits.wallets.base import PaymentFailedStatus

    return PaymentFailedStatus()


async def test_a_failing_books_pass_does_not_keep_cash_outs_from_landing(monkeypatch):
    """The sweep restores undone credits first; when that raises (a database error in
    LNbits' tables), the ATM sweep still runs in the same pass."""
    from satmachineadmin import bitspire, tasks
    from satmachineadmin.engine import books

    swept: list[bool] = []

    async def broken() -> int:
        raise RuntimeError("apipayments unreadable")

    async def sweep_all() -> None:
        swept.append(True)

    monkeypatch.setattr(books, "restore_recent", broken)
    monkeypatch.setattr(bitspire, "sweep_all", sweep_all)
    await tasks.sweep_once()
    assert swept == [True]


async def test_other_undone_credits_never_keep_the_machines_from_being_restored(
    factory,
):
    """More undone credits of other users' invoices than one page, written back as
    failed before the machine's: the books pass pages past them (they are not the
    extension's to touch and stay as they are) and restores the machine's cash-out
    credit once."""
    from lnbits.core.db import db as core_db
    from lnbits.core.services import create_invoice, pay_invoice

    from satmachineadmin import crud
    from satmachineadmin.engine import books

    since = crud.now() - 5
    payer = await factory.user()
    await factory.fund(payer.wallet, 10_000)

    async def paid_then_undone(wallet: Any, sats: int) -> str:
        invoice = await create_invoice(
            wallet_id=wallet.id, amount=sats, memo="undone", internal=True
        )
        await pay_invoice(wallet_id=payer.wallet.id, payment_request=invoice.bolt11)
        await core_db.execute(
            "UPDATE apipayments SET status = 'failed' "
            "WHERE payment_hash = :h AND amount > 0",
            {"h": invoice.payment_hash},
        )
        return invoice.payment_hash

    others = [await factory.user() for _ in range(4)]
    for other in others:
        await paid_then_undone(other.wallet, 100)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    await paid_then_undone(machine["wallet"], 700)
    assert await factory.balance(machine["wallet"]) == 0

    assert await books.restore_undone_credits(since, batch=3) == 1
    assert await factory.balance(machine["wallet"]) == 700
    assert [await factory.balance(o.wallet) for o in others] == [0, 0, 0, 0]
    assert await books.restore_undone_credits(since, batch=3) == 0
    assert await factory.balance(machine["wallet"]) == 700
