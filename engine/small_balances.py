"""Small balances (docs/money.md, "Small-balance settlement").

Manual: the operator pays all or part of an LP's remaining balance from a funding
wallet they own, at a stated or current rate, as a `settlement` leg. Automatic: after
each distribution, LPs left with a balance under the machine's threshold are settled
the same way at that settlement's rate. A failed payment stays a visible failed leg
and is retried later; it never blocks a distribution.
"""

import json
from decimal import Decimal

from lnbits.core.services.websockets import websocket_updater
from loguru import logger

from .. import crud
from ..calculations import auto_settle_due, fiat_to_sats
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


async def auto_settle_after(settlement: Settlement, machine: Machine) -> list[Leg]:
    """After a distribution: settle every LP left under the machine's threshold."""
    if not machine.auto_settle_enabled or not machine.auto_settle_funding_wallet_id:
        return []
    if not settlement.exchange_rate or settlement.tx_type != "cash_out":
        return []
    rate = Decimal(settlement.exchange_rate)
    threshold = Decimal(machine.auto_settle_threshold_value or "0")
    legs = []
    for client in await crud.list_machine_clients_with_prefs(machine.id):
        if (
            client.status != "active"
            or not client.wallet_id
            or client.remaining_minor <= 0
        ):
            continue
        if not auto_settle_due(
            client.remaining_minor,
            client.deposits_minor,
            machine.auto_settle_threshold_type or "absolute",
            threshold,
            machine.fiat_currency,
        ):
            continue
        if fiat_to_sats(client.remaining_minor, rate, machine.fiat_currency) <= 0:
            continue
        leg = settlement_leg(
            machine,
            client,
            f"autosettle:{settlement.id}:{client.id}",
            client.remaining_minor,
            rate,
            "this settlement's rate",
            machine.auto_settle_funding_wallet_id,
        )
        try:
            legs.append(await write_and_pay(leg, machine.operator_user_id))
        except crud.BalanceShort:
            # Spent meanwhile (a fixed slot, a manual settlement): nothing to settle.
            continue
        except Exception:
            logger.exception(f"satmachineadmin: auto-settlement of {client.id} failed")
    return legs
