"""Leg factory for legs that land in an LP's wallet outside a settlement's plan.

Fixed-mode slots and balance settlements are standalone legs (no settlement); they
share one shape and one memo. The memo tells the LP what they bought, at which rate,
where, and when their balance is fully converted (their DCA cycle is complete).
"""

from decimal import Decimal
from typing import Any, Optional, Union

from .. import crud
from ..calculations import fiat_to_sats, format_fiat
from ..models import ClientWithPrefs, Leg, Machine

CYCLE_COMPLETE = " - your balance is now fully converted: DCA cycle complete"


def lp_memo(
    label: str,
    fiat: int,
    currency: str,
    rate: Union[Decimal, str],
    machine_name: str,
    *,
    origin: Optional[str] = None,
    completes: bool = False,
) -> str:
    """e.g. "DCA 5.39 GTQ at 150 sats/GTQ (stated), ATM 1 - ... cycle complete"."""
    memo = f"{label} {format_fiat(fiat, currency)} {currency} at {rate} sats/{currency}"
    if origin:
        memo += f" ({origin})"
    memo += f", {machine_name}"
    if completes:
        memo += CYCLE_COMPLETE
    return memo


def lp_leg(
    machine: Machine,
    client: ClientWithPrefs,
    *,
    key: str,
    leg_type: str,
    label: str,
    fiat: int,
    quote: Optional[tuple[Decimal, str]],
    source_wallet_id: str,
    **fields: Any,
) -> Leg:
    """A pending standalone leg of `fiat` to the LP's own wallet, at `quote` (rate,
    where it came from). Without a quote it carries no sats and no memo: the caller
    records why nothing could be paid."""
    currency = machine.fiat_currency
    sats, rate_text, memo = 0, None, None
    if quote is not None:
        rate, origin = quote
        sats = fiat_to_sats(fiat, rate, currency)
        rate_text = format(rate, "f")
        memo = lp_memo(
            label,
            fiat,
            currency,
            rate,
            machine.name,
            origin=origin,
            completes=fiat >= client.remaining_minor,
        )
    moment = crud.now()
    return Leg(
        id=crud.new_id(),
        idempotency_key=key,
        machine_id=machine.id,
        operator_user_id=machine.operator_user_id,
        client_id=client.id,
        leg_type=leg_type,
        status="pending",
        amount_sats=sats,
        amount_fiat_minor=fiat,
        currency=currency,
        exchange_rate=rate_text,
        source_wallet_id=source_wallet_id,
        destination=client.wallet_id,
        destination_kind="wallet",
        memo=memo,
        created_at=moment,
        updated_at=moment,
        **fields,
    )
