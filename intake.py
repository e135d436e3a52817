"""Intake: how an ATM transaction becomes a settlement row, exactly once.

Every source (bitspire.py, lamassu/, manual entry in services/) builds a draft here
and lands it; the engine (distribution.py) only ever reads what landed. A draft locks
the platform fraction in force at that moment (docs/money.md, "Commission"); landing
is an insert that the unique key (machine, source, external_id) makes idempotent, so
seeing the same transaction again is harmless. Landing wakes the engine.
"""

import asyncio
import json
from decimal import Decimal
from typing import Any, Optional

from loguru import logger

from . import crud
from .calculations import exchange_rate_text, split_commission
from .engine.rates import current_rate
from .models import DEFAULT_RATE_BAND_PERCENT, Machine, Settlement

_wake = asyncio.Event()


def wake_engine() -> None:
    """Tell the engine loop there is work, without waiting for its next tick."""
    _wake.set()


async def wait_for_work(timeout: float) -> None:
    """The engine's idle wait: returns when woken or after `timeout` seconds."""
    try:
        await asyncio.wait_for(_wake.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    _wake.clear()


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
    return Settlement(
        **_row_identity(machine, source, external_id, payment_hash),
        tx_type=tx_type,
        status="pending",
        fiat_amount_minor=fiat_amount_minor,
        wire_sats=wire_sats,
        principal_sats=principal_sats,
        fee_sats=fee_sats,
        fee_fraction=fee_fraction,
        super_fee_fraction=str(super_fee_fraction),
        platform_fee_sats=commission.platform_fee_sats,
        operator_fee_sats=commission.operator_fee_sats,
        exchange_rate=exchange_rate_text(
            principal_sats, fiat_amount_minor, machine.fiat_currency
        ),
        estimated=estimated,
        raw_payload=json.dumps(raw_payload, default=str) if raw_payload else None,
        external_created_at=external_created_at,
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
    return Settlement(
        **_row_identity(machine, source, external_id, payment_hash),
        tx_type=tx_type if tx_type in ("cash_out", "cash_in") else "cash_out",
        status="rejected",
        raw_payload=json.dumps(raw_payload, default=str)[:20000],
        error=reason[:1000],
    )


def _row_identity(
    machine: Machine, source: str, external_id: str, payment_hash: Optional[str]
) -> dict[str, Any]:
    """What every settlement row says of where it came from, and when it landed."""
    moment = crud.now()
    return {
        "id": crud.new_id(),
        "machine_id": machine.id,
        "operator_user_id": machine.operator_user_id,
        "currency": machine.fiat_currency,
        "source": source,
        "external_id": external_id,
        "payment_hash": payment_hash,
        "created_at": moment,
        "updated_at": moment,
    }


async def current_super_fee_fraction() -> Decimal:
    return Decimal((await crud.get_platform_config()).super_fee_fraction)


async def land_batch(drafts: list[Settlement]) -> list[Settlement]:
    """Record many transactions in one database transaction (a catch-up): the new
    ones only. Each claims its real-world transaction's keys with it; one whose
    transaction another settlement already pays lands as a `rejected` duplicate
    (visible, never paid), and one that is that very settlement seen again, not at
    all."""
    landed = []
    async with crud.transaction() as tx:
        for draft in drafts:
            if await crud.settlement_known(tx, draft):
                continue
            holder = await crud.claim_transaction_keys(
                tx, draft.transaction_keys(), draft.operator_user_id, draft.id
            )
            if holder is not None:
                if _same_transaction(holder, draft):
                    continue
                draft = _as_duplicate(draft, holder)
            await crud.insert_settlement(tx, draft)
            landed.append(draft)
    for settlement in landed:
        _log_landed(settlement)
    if any(s.status == "pending" for s in landed):
        wake_engine()
    return landed


def _same_transaction(holder: Settlement, draft: Settlement) -> bool:
    """A racing lander of this very row (same key, or same payment): not news."""
    return (
        holder.machine_id == draft.machine_id
        and holder.source == draft.source
        and holder.external_id == draft.external_id
    ) or (draft.payment_hash is not None and holder.payment_hash == draft.payment_hash)


def _as_duplicate(draft: Settlement, holder: Settlement) -> Settlement:
    return draft.copy(
        update={
            "status": "rejected",
            "error": (
                f"duplicate: transaction {draft.external_id[:80]} is already settled "
                f"by {holder.source} settlement {holder.id} at machine "
                f"{holder.machine_id}; this one is never paid"
            ),
        }
    )


async def land_settlement(*, machine: Machine, **fields: Any) -> Optional[Settlement]:
    """Record one successful ATM transaction as a pending settlement, exactly once.

    Returns the new settlement, or None when (machine, source, external_id) or the
    payment was already known: seeing a transaction again is harmless.
    """
    draft = settlement_draft(
        machine=machine, super_fee_fraction=await current_super_fee_fraction(), **fields
    )
    landed = await land_batch([await _held_if_rate_strays(machine, draft)])
    return landed[0] if landed else None


async def _held_if_rate_strays(machine: Machine, draft: Settlement) -> Settlement:
    """A settlement whose rate (principal / fiat) strays further than the machine's
    band from the reference rate lands `held`: paid only once the operator approves
    it. Anyone with the machine wallet's invoice key can have a payment made with any
    `extra`: 1 sat claiming 100,000.00 of fiat would otherwise zero the LPs'
    balances for nothing. No reference known (a machine's first settlement, no
    exchange-rate service): nothing to compare with, it lands as usual."""
    if not draft.exchange_rate:
        return draft
    reference = await current_rate(machine)
    if reference is None:
        return draft
    expected, origin = reference
    if expected <= 0:
        return draft
    rate = Decimal(draft.exchange_rate)
    band = Decimal(machine.rate_band_percent or DEFAULT_RATE_BAND_PERCENT)
    off = abs(rate - expected) * 100 / expected
    if off <= band:
        return draft
    currency = machine.fiat_currency
    return draft.copy(
        update={
            "status": "held",
            "error": (
                f"held: its rate {rate.normalize():f} sats/{currency} is "
                f"{off.quantize(Decimal('0.1'))} % away from the {origin} rate "
                f"{expected.normalize():f} (band {band} %): approve or reject it"
            ),
        }
    )


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
