"""Corrections of a settlement: retry, partial dispense, notes (docs/api.md,
"Settlements").

Each change leaves an audit row. Completed legs are never paid again: retry only
re-opens what failed, and a partial dispense is refused once any leg has been paid.
"""

from typing import Optional

from .. import crud
from ..calculations import (
    DISPENSED_FRACTION_PLACES,
    dispensed_fiat_from_fraction,
    exchange_rate_text,
    format_fiat,
    rescale_partial_dispense,
)
from ..distribution import LEASE_SECONDS
from ..engine.payouts import reconcile_leg
from ..errors import BadInput, Conflict, Refused
from ..inputs import decimal_input, fiat_input
from ..intake import wake_engine
from ..models import PartialDispenseIn, Settlement, SettlementNote
from .access import operator_settlement


async def append_note(
    author_user_id: str, settlement_id: str, note: str
) -> SettlementNote:
    text = note.strip()
    if not text:
        raise BadInput("note: must not be empty")
    entry = SettlementNote(
        id=crud.new_id(),
        settlement_id=settlement_id,
        author_user_id=author_user_id,
        note=text[:2000],
        created_at=crud.now(),
    )
    async with crud.transaction() as tx:
        await crud.insert_note(tx, entry)
    return entry


async def add_operator_note(
    operator_user_id: str, settlement_id: str, note: str
) -> SettlementNote:
    settlement = await operator_settlement(operator_user_id, settlement_id)
    entry = await append_note(operator_user_id, settlement.id, note)
    await crud.audit(
        operator_user_id,
        operator_user_id,
        "settlement.note",
        "settlement",
        settlement.id,
        {"note_id": entry.id},
    )
    return entry


async def retry(operator_user_id: str, settlement_id: str) -> Settlement:
    settlement = await operator_settlement(operator_user_id, settlement_id)
    if settlement.status != "errored":
        raise Conflict(
            f"settlement is {settlement.status}; only an errored one can be retried"
        )
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "settlement.retry",
        "settlement",
        settlement.id,
    ) as tx:
        if not await crud.set_settlement_status(
            tx, settlement.id, ["errored"], "pending"
        ):
            raise Conflict("settlement changed meanwhile; reload and try again")
    wake_engine()
    refreshed = await crud.get_settlement(settlement.id)
    assert refreshed
    return refreshed


async def approve_held(operator_user_id: str, settlement_id: str) -> Settlement:
    """A held settlement's rate is what the operator expected: pay it."""
    return await _decide_held(
        operator_user_id, settlement_id, "pending", "settlement.approve", None
    )


async def reject_held(
    operator_user_id: str, settlement_id: str, reason: str
) -> Settlement:
    """A held settlement is not a real transaction (or not one to pay): never paid;
    it stays visible with the operator's reason."""
    return await _decide_held(
        operator_user_id,
        settlement_id,
        "rejected",
        "settlement.reject",
        f"rejected by the operator: {reason}"[:1000],
    )


async def _decide_held(
    operator_user_id: str,
    settlement_id: str,
    to_status: str,
    action: str,
    error: Optional[str],
) -> Settlement:
    settlement = await operator_settlement(operator_user_id, settlement_id)
    if settlement.status != "held":
        raise Conflict(
            f"settlement is {settlement.status}; only a held settlement can be "
            "approved or rejected"
        )
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        action,
        "settlement",
        settlement.id,
        {"held_because": settlement.error, "reason": error},
    ) as tx:
        if not await crud.set_settlement_status(
            tx, settlement.id, ["held"], to_status, error
        ):
            raise Conflict("settlement changed meanwhile; reload and try again")
        if to_status == "rejected":
            # One held by the upgrade may have planned legs: release what they hold.
            await crud.void_open_legs(tx, settlement.id)
    if to_status == "pending":
        wake_engine()
    refreshed = await crud.get_settlement(settlement.id)
    assert refreshed
    return refreshed


async def partial_dispense(
    operator_user_id: str, settlement_id: str, data: PartialDispenseIn
) -> Settlement:
    dispensed_fiat, dispensed_fraction = data.dispensed_fiat, data.dispensed_fraction
    settlement = await operator_settlement(operator_user_id, settlement_id)
    if (dispensed_fraction is None) == (dispensed_fiat is None):
        raise BadInput("give exactly one of dispensed_fraction or dispensed_fiat")
    if settlement.status == "rejected":
        raise Conflict("a rejected settlement pays nothing and cannot be rescaled")
    if settlement.status == "held":
        raise Conflict("the settlement is held: approve or reject it first")
    if settlement.tx_type != "cash_out":
        # Rescaling would also rewrite wire_sats as principal + fee, a cash-out's sum.
        raise Refused(
            "only a cash-out dispenses cash; a cash-in cannot be partially dispensed"
        )
    if dispensed_fraction is not None:
        # Bounded before any arithmetic: 1E-999999999 would build a billion-digit
        # integer and stall LNbits.
        fraction = decimal_input(
            dispensed_fraction,
            "dispensed_fraction",
            minimum=0,
            exclusive_minimum=True,
            maximum=1,
            places=DISPENSED_FRACTION_PLACES,
        )
        dispensed_minor = dispensed_fiat_from_fraction(
            settlement.fiat_amount_minor, fraction
        )
    else:
        dispensed_minor = fiat_input(
            dispensed_fiat or "", settlement.currency, "dispensed_fiat"
        )
    if not 0 < dispensed_minor <= settlement.fiat_amount_minor:
        raise BadInput(
            "the dispensed amount must be above zero and at most the settlement's "
            f"{format_fiat(settlement.fiat_amount_minor, settlement.currency)} "
            f"{settlement.currency}"
        )
    # Take the settlement the way a worker does, so no engine pays it meanwhile, and
    # only as it was read: the amounts rescaled above and the state put back on a
    # refusal are the ones the claim took (a concurrent change answers 409).
    token = crud.new_id()
    if not await crud.claim_settlement_as_read(settlement, token, LEASE_SECONDS):
        raise Conflict(
            "the settlement is being processed or changed meanwhile; reload and try "
            "again shortly"
        )
    try:
        for leg in await crud.list_settlement_legs(settlement.id):
            if leg.status in ("pending", "failed") and leg.payment_hash:
                # LNbits may have paid it before a crash kept the row from saying so:
                # voiding and re-planning such a leg would pay it twice.
                await reconcile_leg(leg)
        if await crud.count_completed_legs(settlement.id):
            raise Refused(
                "a leg of this settlement has already been paid; Lightning payments "
                "cannot be clawed back, so it can no longer be rescaled"
            )
        # Re-planning would void a leg whose payment may still arrive, and pay its
        # destination again. The claim held here keeps any other leg from leaving.
        if await crud.count_in_flight_legs(settlement.id):
            raise Conflict(
                "a leg of this settlement is in flight (its payment is pending at "
                "the Lightning node): rescale it once that payment completes or fails"
            )
        rescaled = rescale_partial_dispense(
            settlement.fiat_amount_minor,
            settlement.principal_sats,
            settlement.fee_sats,
            settlement.platform_fee_sats,
            dispensed_minor,
        )
        currency = settlement.currency
        memo = (
            f"partial dispense: {format_fiat(dispensed_minor, currency)} of "
            f"{format_fiat(settlement.fiat_amount_minor, currency)} {currency} "
            f"dispensed; principal {settlement.principal_sats} -> "
            f"{rescaled.principal_sats} sats, fee {settlement.fee_sats} -> "
            f"{rescaled.fee_sats} sats (platform {settlement.platform_fee_sats} -> "
            f"{rescaled.platform_fee_sats})"
        )
        async with crud.audited(
            operator_user_id,
            operator_user_id,
            "settlement.partial_dispense",
            "settlement",
            settlement.id,
            {"memo": memo},
        ) as tx:
            # First, a compare-and-swap on the claim taken above: if it lapsed and
            # an engine took the settlement back, nothing here is written.
            rescaled_now = await crud.rescale_settlement(
                tx,
                settlement.id,
                token,
                fiat_amount_minor=rescaled.fiat_minor,
                principal_sats=rescaled.principal_sats,
                fee_sats=rescaled.fee_sats,
                platform_fee_sats=rescaled.platform_fee_sats,
                operator_fee_sats=rescaled.operator_fee_sats,
                wire_sats=rescaled.wire_sats,
                exchange_rate=exchange_rate_text(
                    rescaled.principal_sats, rescaled.fiat_minor, settlement.currency
                ),
            )
            if not rescaled_now:
                raise Conflict(
                    "the settlement was taken up by the engine meanwhile; reload and "
                    "try again"
                )
            await crud.void_open_legs(tx, settlement.id)
    except BaseException:
        # As it was read; a dead worker's "processing" as pending (due), not as a
        # processing row with no lease, never due again.
        await crud.release_claim_as_read(settlement, token)
        raise
    await append_note(operator_user_id, settlement.id, memo)
    await crud.finish_settlement(settlement.id, token, "pending", None)
    wake_engine()
    refreshed = await crud.get_settlement(settlement.id)
    assert refreshed
    return refreshed
