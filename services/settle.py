"""Small balances, the operator's side (docs/money.md, "Small-balance settlement"):
settle an LP's balance now, configure automatic settlement; and the fixed-mode
schedule of a machine (docs/money.md, "Fixed mode"). The legs themselves are built
and paid by engine/small_balances.py and engine/fixed_mode.py.
"""

import json
from decimal import Decimal
from typing import Optional

from .. import crud
from ..calculations import fiat_to_sats, format_fiat
from ..engine import fixed_mode
from ..engine.rates import current_rate
from ..engine.small_balances import settlement_leg, write_and_pay
from ..errors import BadInput, Conflict, Refused
from ..inputs import fiat_input, percent_input, rate_input
from ..models import AutoSettlementIn, Leg, Machine, SettleIn
from .access import operator_client, operator_machine, owned_wallet


async def settle_client(
    operator_user_id: str,
    client_id: str,
    data: SettleIn,
    request_key: Optional[str] = None,
) -> Leg:
    """Pay all or part of the LP's remaining balance from the operator's funding
    wallet; `request_key` (the Idempotency-Key header) makes a retried request land on
    the same leg instead of paying again."""
    funding_wallet_id = data.funding_wallet_id
    exchange_rate, amount_fiat = data.exchange_rate, data.amount_fiat
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
        fiat = fiat_input(amount_fiat, machine.fiat_currency, "amount_fiat")
        if fiat <= 0:
            raise BadInput("amount_fiat: must be greater than zero")
        if fiat > remaining:
            currency = machine.fiat_currency
            raise Refused(
                f"amount_fiat {format_fiat(fiat, currency)} is more than the "
                f"remaining balance {format_fiat(remaining, currency)}"
            )
    # Bounded before any arithmetic: "1E-4000000" is refused here, not turned into
    # a four-million-digit fraction by fiat_to_sats.
    stated = None if exchange_rate is None else rate_input(exchange_rate)
    quote = await current_rate(machine, stated)
    if quote is None:
        raise Refused(
            "no exchange rate is available right now: state one (exchange_rate)"
        )
    rate, origin = quote
    if fiat_to_sats(fiat, rate, machine.fiat_currency) <= 0:
        raise Refused("that amount is worth less than one sat at this rate")
    key = f"settle:{client.id}:{request_key or crud.new_id()}"
    leg = settlement_leg(machine, client, key, fiat, rate, origin, funding_wallet_id)
    try:
        return await write_and_pay(leg, operator_user_id)
    except crud.BalanceShort:
        raise Conflict(
            "the LP's remaining balance changed while this request ran (another "
            "payout took part of it): nothing was paid; reload and try again"
        ) from None


def validate_auto_settlement(
    enabled: bool,
    threshold_type: Optional[str],
    threshold_value: Optional[str],
    currency: str,
) -> Optional[str]:
    """The threshold as it is stored, checked with the bounded parsers: a fiat amount
    of the machine's currency (absolute), or a percent > 0 and at most 100 with at most
    PERCENT_PLACES decimals (percent)."""
    if not enabled:
        return threshold_value
    if threshold_type not in ("absolute", "percent"):
        raise BadInput("threshold_type: must be 'absolute' or 'percent'")
    if threshold_value is None:
        raise BadInput("threshold_value: is required when auto-settlement is enabled")
    if threshold_type == "percent":
        return format(percent_input(threshold_value, "threshold_value"), "f")
    if fiat_input(threshold_value, currency, "threshold_value") <= 0:
        raise BadInput("threshold_value: must be greater than zero")
    # parse_fiat read it within its bounds (at most 100 characters, digits checked):
    # the text is a small exact number.
    return format(Decimal(threshold_value.strip()), "f")


async def configure_auto_settlement(
    operator_user_id: str, machine_id: str, data: AutoSettlementIn
) -> Machine:
    enabled, threshold_type = data.enabled, data.threshold_type
    threshold_value, funding_wallet_id = data.threshold_value, data.funding_wallet_id
    machine = await operator_machine(operator_user_id, machine_id)
    value = validate_auto_settlement(
        enabled, threshold_type, threshold_value, machine.fiat_currency
    )
    if enabled:
        if not funding_wallet_id:
            raise BadInput(
                "funding_wallet_id: required when auto-settlement is enabled"
            )
        await owned_wallet(operator_user_id, funding_wallet_id, "funding_wallet_id")
    elif funding_wallet_id:
        await owned_wallet(operator_user_id, funding_wallet_id, "funding_wallet_id")
    async with crud.audited(
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
    ) as tx:
        await crud.save_auto_settlement(
            tx, machine.id, enabled, threshold_type, value, funding_wallet_id
        )
    updated = await crud.get_machine(machine.id)
    assert updated
    return updated


async def set_fixed_schedule(
    operator_user_id: str, machine_id: str, times: list[str], timezone: str
) -> Machine:
    machine = await operator_machine(operator_user_id, machine_id)
    slots, zone = fixed_mode.validate_schedule(times, timezone)
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "machine.fixed_schedule",
        "machine",
        machine.id,
        {"times": slots, "timezone": zone},
    ) as tx:
        await crud.save_fixed_schedule(tx, machine.id, json.dumps(slots), zone)
    return await operator_machine(operator_user_id, machine_id)


async def run_fixed_slot(operator_user_id: str, machine_id: str) -> list[Leg]:
    """Pay the machine's current fixed-mode slot now, if it was not paid yet."""
    machine = await operator_machine(operator_user_id, machine_id)
    if not json.loads(machine.fixed_times or "[]"):
        raise Conflict("this machine has no fixed-mode schedule (PUT fixed-schedule)")
    return await fixed_mode.run_slot(machine)
