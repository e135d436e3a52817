"""Manual entry: a transaction the operator settled outside the machine
(docs/sources.md, "Manual entry"). It lands like any other settlement, with the same
uniqueness."""

from decimal import Decimal
from typing import Optional

from .. import crud
from ..calculations import MAX_SATS, fiat_to_sats
from ..errors import BadInput, Conflict
from ..inputs import fiat_input
from ..intake import land_settlement
from ..models import Settlement
from .access import operator_machine
from .corrections import append_note


async def enter_settlement(
    operator_user_id: str,
    *,
    machine_id: str,
    tx_type: str,
    external_id: str,
    fiat_amount: str,
    principal_sats: Optional[int],
    fee_sats: int,
    exchange_rate: Optional[Decimal],
    notes: Optional[str],
) -> Settlement:
    machine = await operator_machine(operator_user_id, machine_id)
    fiat_minor = fiat_input(fiat_amount, machine.fiat_currency, "fiat_amount")
    if fiat_minor <= 0:
        raise BadInput("fiat_amount: must be greater than zero")
    if principal_sats is None:
        if exchange_rate is None:
            raise BadInput("principal_sats or exchange_rate is required")
        if exchange_rate <= 0:
            raise BadInput("exchange_rate: must be greater than zero")
        # Bounded before any exact arithmetic: 1E+999999999 or 1E-999999999 would
        # build a billion-digit integer and stall the whole LNbits event loop.
        if exchange_rate > MAX_SATS or exchange_rate.as_tuple().exponent < -18:  # type: ignore[operator]
            raise BadInput("exchange_rate: sats per fiat unit, at most 18 decimals")
        principal_sats = fiat_to_sats(fiat_minor, exchange_rate, machine.fiat_currency)
    if principal_sats <= 0 or principal_sats > MAX_SATS:
        raise BadInput("principal_sats: must be between 1 and 21 million BTC in sats")
    if fee_sats < 0 or fee_sats > MAX_SATS:
        raise BadInput("fee_sats: must not be negative")
    if tx_type == "cash_in" and fee_sats > principal_sats:
        raise BadInput("fee_sats: a cash-in fee cannot exceed its principal")
    wire = (
        principal_sats + fee_sats
        if tx_type == "cash_out"
        else principal_sats - fee_sats
    )
    if await crud.find_settlement(machine.id, "manual", external_id):
        raise Conflict(
            f"a manual settlement with reference {external_id} already exists"
        )
    landed = await land_settlement(
        machine=machine,
        source="manual",
        external_id=external_id,
        tx_type=tx_type,
        fiat_amount_minor=fiat_minor,
        principal_sats=principal_sats,
        fee_sats=fee_sats,
        wire_sats=wire,
        raw_payload={"entered_by": operator_user_id, "notes": notes},
    )
    if landed is None:
        raise Conflict(
            f"a manual settlement with reference {external_id} already exists"
        )
    if notes:
        await append_note(operator_user_id, landed.id, notes)
    await crud.audit(
        operator_user_id,
        operator_user_id,
        "settlement.manual",
        "settlement",
        landed.id,
        {
            "external_id": external_id,
            "fiat_minor": fiat_minor,
            "principal_sats": principal_sats,
            "fee_sats": fee_sats,
        },
    )
    return landed
