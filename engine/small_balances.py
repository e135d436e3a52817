"""Small balances (docs/money.md, "Small-balance settlement").

Manual: the operator pays all or part of an LP's remaining balance from a funding
wallet they own, at a stated or current rate, as a `settlement` leg. Automatic: after
each distribution, LPs left with a balance under the machine's threshold are settled
the same way at that settlement's rate; after each fixed-mode slot, the LPs it paid,
at the slot's rate. A failed payment stays a visible failed leg
and is retried later; it never blocks a distribution.
"""

import json
from decimal import Decimal
from typing import Optional

from lnbits.core.services.websockets import websocket_updater
from loguru import logger

from .. import crud
from ..calculations import MAX_FIAT_MINOR, MAX_SATS, auto_settle_due, fiat_to_sats
from ..inputs import InputError, bounded_decimal
from ..models import ClientWithPrefs, Leg, Machine, Settlement
from .legs import lp_leg
from .payouts import pay_standalone_leg


def settlement_leg(
    machine: Machine,
    client: ClientWithPrefs,
    key: str,
    fiat: int,
    rate: Decimal,
    origin: str,
    funding_wallet_id: str,
) -> Leg:
    """A `settlement` leg: `fiat` of the LP's balance, paid from a funding wallet."""
    return lp_leg(
        machine,
        client,
        key=key,
        leg_type="settlement",
        label="Balance settlement",
        fiat=fiat,
        quote=(rate, origin),
        source_wallet_id=funding_wallet_id,
    )


async def write_and_pay(leg: Leg, actor: str) -> Leg:
    """Write a settlement leg (once per idempotency key, with its audit row), pay it."""
    async with crud.transaction() as tx:
        inserted = await crud.insert_leg(tx, leg)
        if inserted:
            await crud.add_audit(
                tx,
                actor,
                leg.operator_user_id,
                "client.settle",
                "client",
                leg.client_id or "",
                {
                    "leg_id": leg.id,
                    "fiat_minor": leg.amount_fiat_minor,
                    "sats": leg.amount_sats,
                    "rate": leg.exchange_rate,
                },
            )
    existing = leg if inserted else await crud.get_leg_by_key(leg.idempotency_key)
    assert existing
    paid = await pay_standalone_leg(existing)
    if paid.status == "completed":
        await notify_if_complete(paid)
    return paid


async def notify_if_complete(leg: Leg) -> None:
    """Tell the LP their cycle is complete: the memo says it, and LNbits' websocket
    channel for their user carries it to any page listening."""
    if not leg.client_id:
        return
    client = await crud.get_client(leg.client_id)
    if client and client.cycle_complete:
        try:
            await websocket_updater(
                f"satmachineadmin-{client.user_id}",
                json.dumps(
                    {
                        "event": "cycle_complete",
                        "client_id": client.id,
                        "machine_id": client.machine_id,
                        "leg_id": leg.id,
                    }
                ),
            )
        except Exception:  # a missing listener must never undo a payment record
            logger.debug("satmachineadmin: no websocket listener for cycle completion")


# What the engine accepts from the database: wider than what the API lets anyone
# store today (a value an older version wrote still works), and bounded, so that no
# stored text can stall a distribution. A settlement's own rate is at most MAX_SATS
# sats per minor unit of a 3-decimal currency.
_STORED_THRESHOLD_PLACES = 18
_STORED_MAXIMUM = {"absolute": MAX_FIAT_MINOR, "percent": 100}
_STORED_RATE_MAXIMUM = MAX_SATS * 1000


def stored_auto_settlement(
    settlement: Settlement, machine: Machine
) -> Optional[tuple[Decimal, str, Decimal]]:
    """(rate, threshold type, threshold) for auto-settlement after `settlement`, read
    bounded from the rows; None, with a log line, when a stored value is unusable."""
    return _stored(machine, settlement.exchange_rate, f"settlement {settlement.id}")


def _stored(
    machine: Machine, rate_text: Optional[str], after: str
) -> Optional[tuple[Decimal, str, Decimal]]:
    threshold_type = machine.auto_settle_threshold_type or "absolute"
    try:
        if threshold_type not in _STORED_MAXIMUM:
            raise InputError(f"threshold type {threshold_type!r} is unknown")
        threshold = bounded_decimal(
            machine.auto_settle_threshold_value or "0",
            minimum=0,
            maximum=_STORED_MAXIMUM[threshold_type],
            places=_STORED_THRESHOLD_PLACES,
        )
        rate = bounded_decimal(
            rate_text or "",
            minimum=0,
            exclusive_minimum=True,
            maximum=_STORED_RATE_MAXIMUM,
            places=_STORED_THRESHOLD_PLACES,
        )
    except InputError as exc:
        logger.warning(
            f"satmachineadmin: auto-settlement at machine {machine.id} skipped after "
            f"{after}: a stored value is unusable ({exc}); save "
            "the machine's auto-settlement again"
        )
        return None
    return rate, threshold_type, threshold


async def auto_settle_after(settlement: Settlement, machine: Machine) -> list[Leg]:
    """After a distribution: settle every LP left under the machine's threshold."""
    if not machine.auto_settle_enabled or not machine.auto_settle_funding_wallet_id:
        return []
    if not settlement.exchange_rate or settlement.tx_type != "cash_out":
        return []
    stored = stored_auto_settlement(settlement, machine)
    if stored is None:
        return []
    return await _settle_small(
        machine, stored, f"autosettle:{settlement.id}", "this settlement's rate", None
    )


async def auto_settle_after_slot(
    machine: Machine, slot_key: str, rate: Decimal, client_ids: set[str]
) -> list[Leg]:
    """After a fixed-mode slot: settle the LPs it paid that are now under the
    machine's threshold, at the slot's rate, keyed by the slot (a rerun of the
    slot finds the same legs)."""
    if not client_ids:
        return []
    if not machine.auto_settle_enabled or not machine.auto_settle_funding_wallet_id:
        return []
    stored = _stored(machine, format(rate, "f"), f"slot {slot_key}")
    if stored is None:
        return []
    return await _settle_small(
        machine, stored, f"autosettle:{slot_key}", "this slot's rate", client_ids
    )


async def _settle_small(
    machine: Machine,
    stored: tuple[Decimal, str, Decimal],
    key_prefix: str,
    origin: str,
    only: Optional[set[str]],
) -> list[Leg]:
    rate, threshold_type, threshold = stored
    legs = []
    for client in await crud.list_machine_clients_with_prefs(machine.id):
        if only is not None and client.id not in only:
            continue
        if (
            client.status != "active"
            or not client.wallet_id
            or client.remaining_minor <= 0
        ):
            continue
        if not auto_settle_due(
            client.remaining_minor,
            client.deposits_minor,
            threshold_type,
            threshold,
            machine.fiat_currency,
        ):
            continue
        if fiat_to_sats(client.remaining_minor, rate, machine.fiat_currency) <= 0:
            continue
        leg = settlement_leg(
            machine,
            client,
            f"{key_prefix}:{client.id}",
            client.remaining_minor,
            rate,
            origin,
            machine.auto_settle_funding_wallet_id or "",
        )
        try:
            legs.append(await write_and_pay(leg, machine.operator_user_id))
        except crud.BalanceShort:
            # Spent meanwhile (a fixed slot, a manual settlement): nothing to settle.
            continue
        except Exception:
            logger.exception(f"satmachineadmin: auto-settlement of {client.id} failed")
    return legs
