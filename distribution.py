"""The distribution engine: settlements in, legs out, each leg paid exactly once.

Life of a settlement
1. `land_settlement` (called by every source: bitspire.py, lamassu.py, manual entry)
   inserts it `pending`, unique on (machine, source, external_id), with the platform
   fraction in force at that moment, and wakes the engine.
2. The engine claims it (`crud.claim_settlement`: one conditional UPDATE, so two
   workers or two LNbits processes never both take it; a dead worker's lease expires).
3. The first claim plans every leg (calculations.py) and writes all of them in one
   transaction, each with a deterministic idempotency key, *before* any is paid.
4. Each payable leg gets an invoice on its destination (stored on the row), then is
   paid from the source wallet, then its outcome is recorded.
5. A crash anywhere leaves rows that say what to do next: `reconcile_leg` asks LNbits
   whether the leg's invoice was paid before paying anything again.
"""

import asyncio
import json
import os
import time
from decimal import Decimal
from typing import Any, Optional

from loguru import logger

from . import crud, payouts
from .calculations import exchange_rate, split_commission
from .faults import EngineCrash, checkpoint
from .models import Leg, Machine, Settlement
from .payouts import (
    RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
    forward_landed_legs,
    pay_legs,
    reconcile_leg,
)
from .planning import ensure_plan
from .small_balances import auto_settle_after

_wake = asyncio.Event()


def wake_engine() -> None:
    """Tell the engine loop there is work, without waiting for its next tick."""
    _wake.set()


def settlement_draft(
    *,
    machine: Machine,
    super_fee_fraction: Decimal,
    source: str,
    external_id: str,
    tx_type: str,
    fiat_amount_minor: int,
    principal_sats: int,
    fee_sats: int,
    wire_sats: int,
    fee_fraction: Optional[str] = None,
    estimated: bool = False,
    raw_payload: Optional[dict] = None,
    payment_hash: Optional[str] = None,
    external_created_at: Optional[int] = None,
) -> Settlement:
    """A pending settlement with the platform fraction in force now locked on it."""
    commission = split_commission(fee_sats, super_fee_fraction, [])
    moment = crud.now()
    return Settlement(
        id=crud.new_id(),
        machine_id=machine.id,
        operator_user_id=machine.operator_user_id,
        source=source,
        external_id=external_id,
        payment_hash=payment_hash,
        tx_type=tx_type,
        status="pending",
        fiat_amount_minor=fiat_amount_minor,
        currency=machine.fiat_currency,
        wire_sats=wire_sats,
        principal_sats=principal_sats,
        fee_sats=fee_sats,
        fee_fraction=fee_fraction,
        super_fee_fraction=str(super_fee_fraction),
        platform_fee_sats=commission.platform_fee_sats,
        operator_fee_sats=commission.operator_fee_sats,
        exchange_rate=rate_text(
            principal_sats, fiat_amount_minor, machine.fiat_currency
        ),
        estimated=estimated,
        raw_payload=json.dumps(raw_payload, default=str) if raw_payload else None,
        external_created_at=external_created_at,
        created_at=moment,
        updated_at=moment,
    )


def rejected_draft(
    *,
    machine: Machine,
    source: str,
    external_id: str,
    reason: str,
    raw_payload: Any,
    payment_hash: Optional[str] = None,
    tx_type: str = "cash_out",
) -> Settlement:
    """A malformed transaction kept as a `rejected` settlement: visible, never paid."""
    moment = crud.now()
    return Settlement(
        id=crud.new_id(),
        machine_id=machine.id,
        operator_user_id=machine.operator_user_id,
        source=source,
        external_id=external_id,
        payment_hash=payment_hash,
        tx_type=tx_type if tx_type in ("cash_out", "cash_in") else "cash_out",
        status="rejected",
        currency=machine.fiat_currency,
        raw_payload=json.dumps(raw_payload, default=str)[:20000],
        error=reason[:1000],
        created_at=moment,
        updated_at=moment,
    )


async def current_super_fee_fraction() -> Decimal:
    return Decimal((await crud.get_platform_config()).super_fee_fraction)


async def land_batch(drafts: list[Settlement]) -> list[Settlement]:
    """Record many transactions in one transaction (a catch-up): the new ones only."""
    landed = await crud.insert_settlements_if_new(drafts)
    for settlement in landed:
        _log_landed(settlement)
    if any(s.status == "pending" for s in landed):
        wake_engine()
    return landed


async def land_settlement(*, machine: Machine, **fields: Any) -> Optional[Settlement]:
    """Record one successful ATM transaction as a pending settlement, exactly once.

    Returns the new settlement, or None when (machine, source, external_id) or the
    payment was already known: seeing a transaction again is harmless.
    """
    draft = settlement_draft(
        machine=machine, super_fee_fraction=await current_super_fee_fraction(), **fields
    )
    landed = await land_batch([draft])
    return landed[0] if landed else None


async def land_rejected(*, machine: Machine, **fields: Any) -> Optional[Settlement]:
    """Keep a malformed transaction as a `rejected` settlement: visible, never paid."""
    landed = await land_batch([rejected_draft(machine=machine, **fields)])
    return landed[0] if landed else None


def _log_landed(settlement: Settlement) -> None:
    if settlement.status == "rejected":
        logger.warning(
            f"satmachineadmin: rejected {settlement.source} transaction "
            f"{settlement.external_id} at machine {settlement.machine_id}: "
            f"{settlement.error}"
        )
        return
    logger.info(
        f"satmachineadmin: settlement {settlement.id} landed from {settlement.source} "
        f"({settlement.tx_type}, {settlement.principal_sats}+{settlement.fee_sats} "
        f"sats) at machine {settlement.machine_id}"
    )


def rate_text(principal_sats: int, fiat_minor: int, currency: str) -> Optional[str]:
    rate = exchange_rate(principal_sats, fiat_minor, currency)
    return None if rate is None else format(rate, "f")


# ---------------------------------------------------------------- engine

# How long a claim on a settlement lasts before another worker may take it over (a
# worker that died mid-distribution). SATMACHINE_LEASE_SECONDS shortens it for tests
# that kill the server process and restart it.
LEASE_SECONDS = int(os.environ.get("SATMACHINE_LEASE_SECONDS", "120"))


async def process_settlement(settlement_id: str) -> Optional[str]:
    """Claim, plan (once) and pay one settlement. Returns its final status, or None
    when another worker holds it or it is not due."""
    token = crud.new_id()
    if not await crud.claim_settlement(settlement_id, token, LEASE_SECONDS):
        return None
    checkpoint("after_claim")
    settlement = await crud.get_settlement(settlement_id)
    assert settlement
    machine = await crud.get_machine(settlement.machine_id)
    try:
        if machine is None:
            raise RuntimeError("machine no longer exists")
        legs = await ensure_plan(settlement, machine)
        checkpoint("after_plan")
        extended_at = time.monotonic()

        async def keep_claim() -> None:
            # Renew the lease well before it runs out, not after every payment.
            nonlocal extended_at
            if time.monotonic() - extended_at > LEASE_SECONDS / 4:
                await crud.extend_claim(settlement_id, token, LEASE_SECONDS)
                extended_at = time.monotonic()

        open_at = [
            i for i, leg in enumerate(legs) if leg.status in ("pending", "failed")
        ]
        for start in range(0, len(open_at), payouts.PAY_BATCH):
            batch = open_at[start : start + payouts.PAY_BATCH]
            # pay_legs returns the rows as they now stand: nothing is read back.
            paid = await pay_legs([legs[i] for i in batch], keep_claim)
            for i, leg in zip(batch, paid, strict=True):
                legs[i] = leg
        await forward_landed_legs(settlement_id, legs)
    except EngineCrash:
        raise
    except Exception as exc:
        logger.exception(f"satmachineadmin: settlement {settlement_id} errored")
        await _finish_errored(settlement, token, f"engine error: {exc}")
        return "errored"
    return await _finish(settlement, token, machine, legs)


async def _finish(
    settlement: Settlement, token: str, machine: Machine, legs: list[Leg]
) -> str:
    """`legs` is the plan (no autoforwards: their failures never hold a settlement)."""
    open_legs = [leg for leg in legs if leg.status in ("pending", "failed")]
    if not open_legs:
        await crud.finish_settlement(settlement.id, token, "processed", None)
        await after_processed(settlement, machine)
        return "processed"
    failed = [leg for leg in open_legs if leg.status == "failed"]
    if any(_is_insufficient(leg.error) for leg in failed):
        need = sum(leg.amount_sats for leg in open_legs)
        reason = f"insufficient float: need {need} sats"
    else:
        reason = "; ".join(
            f"{leg.leg_type} leg {leg.id[:8]}: {leg.error or leg.status}"
            for leg in open_legs
        )
    await _finish_errored(settlement, token, reason)
    return "errored"


async def _finish_errored(settlement: Settlement, token: str, reason: str) -> None:
    current = await crud.get_settlement(settlement.id)
    attempts = current.attempts if current else 1
    delay = min(RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1), RETRY_MAX_SECONDS)
    await crud.finish_settlement(
        settlement.id, token, "errored", reason[:1000], crud.now() + delay
    )


def _is_insufficient(error: Optional[str]) -> bool:
    return bool(error) and "insufficient" in (error or "").lower()


async def run_due_settlements(limit: int = 100) -> int:
    """One engine pass: every settlement that is pending, due for retry or abandoned."""
    done = 0
    for settlement_id in await crud.list_due_settlement_ids(limit):
        if await process_settlement(settlement_id):
            done += 1
    return done


async def after_processed(settlement: Settlement, machine: Machine) -> None:
    """Auto-settlement follows a completed distribution; its failures stay its own."""
    try:
        await auto_settle_after(settlement, machine)
    except Exception:
        logger.exception(
            f"satmachineadmin: auto-settlement after {settlement.id} failed"
        )


async def wait_for_work(timeout: float) -> None:
    try:
        await asyncio.wait_for(_wake.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    _wake.clear()


async def reconcile_open_legs() -> int:
    """Start-up: before paying anything, settle every in-flight leg against LNbits."""
    fixed = 0
    for status in ("pending", "failed"):
        for leg in await crud.list_legs_by_status(status, limit=100_000):
            if leg.payment_hash and (await reconcile_leg(leg)).status == "completed":
                fixed += 1
    if fixed:
        logger.info(f"satmachineadmin: reconciled {fixed} legs paid before a restart")
    return fixed


async def on_wallet_credited(wallet_id: str) -> None:
    machine = await crud.get_machine_by_wallet(wallet_id)
    if machine and await crud.make_errored_due(machine.id):
        wake_engine()
