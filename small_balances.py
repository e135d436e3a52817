"""Small balances (product.md flow 5, money.md "Small-balance settlement").

Manual: the operator pays all or part of an LP's remaining balance from a funding
wallet they own, at a stated or current rate, as a `settlement` leg. Automatic: after
each distribution, LPs left with a balance under the machine's threshold are settled
the same way at that settlement's rate. A failed payment stays a visible failed leg
and is retried later; it never blocks a distribution.
"""

import json
from decimal import Decimal, InvalidOperation
from typing import Optional

from lnbits.core.services.websockets import websocket_updater
from loguru import logger

from . import crud
from .calculations import (
    FiatError,
    auto_settle_due,
    fiat_to_sats,
    format_fiat,
    parse_fiat,
)
from .errors import BadInput, Refused
from .models import Leg, Machine, Settlement
from .payouts import pay_standalone_leg
from .rates import current_rate
from .services import operator_client, operator_machine, owned_wallet


def _settlement_leg(
    machine: Machine,
    client: crud.ClientWithPrefs,
    key: str,
    fiat: int,
    rate: Decimal,
    origin: str,
    funding_wallet_id: str,
) -> Leg:
    currency = machine.fiat_currency
    sats = fiat_to_sats(fiat, rate, currency)
    completes = fiat >= client.remaining_minor
    memo = (
        f"Balance settlement {format_fiat(fiat, currency)} {currency} at {rate} "
        f"sats/{currency} ({origin}), {machine.name}"
    )
    if completes:
        memo += " - your balance is now fully converted: DCA cycle complete"
    moment = crud.now()
    return Leg(
        id=crud.new_id(),
        idempotency_key=key,
        machine_id=machine.id,
        operator_user_id=machine.operator_user_id,
        client_id=client.id,
        leg_type="settlement",
        status="pending",
        amount_sats=sats,
        amount_fiat_minor=fiat,
        currency=currency,
        exchange_rate=format(rate, "f"),
        source_wallet_id=funding_wallet_id,
        destination=client.wallet_id,
        destination_kind="wallet",
        memo=memo,
        created_at=moment,
        updated_at=moment,
    )


async def _write_and_pay(leg: Leg, actor: str) -> Leg:
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


async def settle_client(
    operator_user_id: str,
    client_id: str,
    funding_wallet_id: str,
    exchange_rate: Optional[str],
    amount_fiat: Optional[str],
    request_key: Optional[str] = None,
) -> Leg:
    client_row = await operator_client(operator_user_id, client_id)
    machine = await operator_machine(operator_user_id, client_row.machine_id)
    await owned_wallet(operator_user_id, funding_wallet_id, "funding_wallet_id")
    client = await crud.get_client_with_prefs(client_row.id)
    assert client
    if not client.wallet_id:
        raise Refused("this LP has not set a destination wallet yet")
    remaining = client.remaining_minor
    if remaining <= 0:
        raise Refused("this LP has no remaining balance to settle")
    fiat = remaining
    if amount_fiat is not None:
        try:
            fiat = parse_fiat(amount_fiat, machine.fiat_currency)
        except FiatError as exc:
            raise BadInput(f"amount_fiat: {exc}") from None
        if fiat <= 0:
            raise BadInput("amount_fiat: must be greater than zero")
        if fiat > remaining:
            currency = machine.fiat_currency
            raise Refused(
                f"amount_fiat {format_fiat(fiat, currency)} is more than the "
                f"remaining balance {format_fiat(remaining, currency)}"
            )
    stated = None
    if exchange_rate is not None:
        try:
            stated = Decimal(exchange_rate)
        except InvalidOperation:
            raise BadInput(
                "exchange_rate: must be a decimal (sats per fiat unit)"
            ) from None
        if not stated.is_finite() or stated <= 0 or stated > 10**9:
            raise BadInput(
                "exchange_rate: must be a positive number of sats per fiat unit"
            )
    quote = await current_rate(machine, stated)
    if quote is None:
        raise Refused(
            "no exchange rate is available right now: state one (exchange_rate)"
        )
    rate, origin = quote
    if fiat_to_sats(fiat, rate, machine.fiat_currency) <= 0:
        raise Refused("that amount is worth less than one sat at this rate")
    key = f"settle:{client.id}:{request_key or crud.new_id()}"
    leg = _settlement_leg(machine, client, key, fiat, rate, origin, funding_wallet_id)
    return await _write_and_pay(leg, operator_user_id)


def validate_auto_settlement(
    enabled: bool, threshold_type: Optional[str], threshold_value: Optional[str]
) -> Optional[str]:
    if not enabled:
        return threshold_value
    if threshold_type not in ("absolute", "percent"):
        raise BadInput("threshold_type: must be 'absolute' or 'percent'")
    try:
        value = Decimal(str(threshold_value))
    except InvalidOperation:
        raise BadInput("threshold_value: must be a decimal") from None
    if not value.is_finite() or value <= 0:
        raise BadInput("threshold_value: must be greater than zero")
    if threshold_type == "percent" and value > 100:
        raise BadInput("threshold_value: a percentage is at most 100")
    return format(value, "f")


async def configure_auto_settlement(
    operator_user_id: str,
    machine_id: str,
    enabled: bool,
    threshold_type: Optional[str],
    threshold_value: Optional[str],
    funding_wallet_id: Optional[str],
) -> Machine:
    machine = await operator_machine(operator_user_id, machine_id)
    value = validate_auto_settlement(enabled, threshold_type, threshold_value)
    if enabled:
        if not funding_wallet_id:
            raise BadInput(
                "funding_wallet_id: required when auto-settlement is enabled"
            )
        await owned_wallet(operator_user_id, funding_wallet_id, "funding_wallet_id")
        if threshold_type == "absolute":
            try:
                parse_fiat(value or "", machine.fiat_currency)
            except FiatError as exc:
                raise BadInput(f"threshold_value: {exc}") from None
    elif funding_wallet_id:
        await owned_wallet(operator_user_id, funding_wallet_id, "funding_wallet_id")
    async with crud.transaction() as tx:
        await crud.save_auto_settlement(
            tx, machine.id, enabled, threshold_type, value, funding_wallet_id
        )
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "machine.auto_settlement",
            "machine",
            machine.id,
            {
                "enabled": enabled,
                "threshold_type": threshold_type,
                "threshold_value": value,
                "funding_wallet_id": funding_wallet_id,
            },
        )
    updated = await crud.get_machine(machine.id)
    assert updated
    return updated


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
        leg = _settlement_leg(
            machine,
            client,
            f"autosettle:{settlement.id}:{client.id}",
            client.remaining_minor,
            rate,
            "this settlement's rate",
            machine.auto_settle_funding_wallet_id,
        )
        try:
            legs.append(await _write_and_pay(leg, machine.operator_user_id))
        except Exception:
            logger.exception(f"satmachineadmin: auto-settlement of {client.id} failed")
    return legs
