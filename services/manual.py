"""Manual entry: a transaction the operator settled outside the machine
(docs/sources.md, "Manual entry"). It lands like any other settlement, with the same
uniqueness."""

from typing import Optional

from .. import crud
from ..calculations import MAX_SATS, fiat_to_sats
from ..errors import BadInput, Conflict
from ..inputs import fiat_input, rate_input
from ..intake import land_settlement
from ..models import Machine, ManualSettlementIn, Settlement
from .access import operator_machine
from .corrections import append_note


async def enter_settlement(
    operator_user_id: str, data: ManualSettlementIn
) -> Settlement:
    machine = await operator_machine(operator_user_id, data.machine_id)
    fiat_minor = fiat_input(data.fiat_amount, machine.fiat_currency, "fiat_amount")
    if fiat_minor <= 0:
        raise BadInput("fiat_amount: must be greater than zero")
    principal_sats = data.principal_sats
    if principal_sats is None:
        principal_sats = _principal_at_rate(data.exchange_rate, fiat_minor, machine)
    fee_sats = data.fee_sats
    if principal_sats <= 0 or principal_sats > MAX_SATS:
        raise BadInput("principal_sats: must be between 1 and 21 million BTC in sats")
    if fee_sats < 0 or fee_sats > MAX_SATS:
        raise BadInput("fee_sats: must not be negative")
    cash_out = data.tx_type == "cash_out"
    if not cash_out and fee_sats > principal_sats:
        raise BadInput("fee_sats: a cash-in fee cannot exceed its principal")
    duplicate = f"a manual settlement with reference {data.external_id} already exists"
    if await crud.find_settlement(machine.id, "manual", data.external_id):
        raise Conflict(duplicate)
    landed = await land_settlement(
        machine=machine,
        source="manual",
        external_id=data.external_id,
        tx_type=data.tx_type,
        fiat_amount_minor=fiat_minor,
        principal_sats=principal_sats,
        fee_sats=fee_sats,
        wire_sats=principal_sats + fee_sats if cash_out else principal_sats - fee_sats,
        raw_payload={"entered_by": operator_user_id, "notes": data.notes},
    )
    if landed is None:
        raise Conflict(duplicate)
    if data.notes:
        await append_note(operator_user_id, landed.id, data.notes)
    await crud.audit(
        operator_user_id,
        operator_user_id,
        "settlement.manual",
        "settlement",
        landed.id,
        {
            "external_id": data.external_id,
            "fiat_minor": fiat_minor,
            "principal_sats": principal_sats,
            "fee_sats": fee_sats,
        },
    )
    return landed


def _principal_at_rate(
    rate_text: Optional[str], fiat_minor: int, machine: Machine
) -> int:
    """principal_sats from a stated rate, for an entry that gives a rate instead."""
    if rate_text is None:
        raise BadInput("principal_sats or exchange_rate is required")
    # Bounded before any exact arithmetic (inputs.decimal_input).
    rate = rate_input(rate_text, maximum=MAX_SATS)
    return fiat_to_sats(fiat_minor, rate, machine.fiat_currency)
