"""Void (write off) a settlement that can never be paid (docs/api.md, "Settlements").

Only while none of its legs completed: Lightning payments cannot be clawed back, so a
settlement that paid anyone is history, not something to write off. A reason is
required. In one transaction: every open leg `voided` (its LP reservation released),
the settlement `voided` (never retried, never claimed again), and an audit row. The
guards are in the database (crud.void_settlement): a leg that completes
concurrently makes the void refuse with 409 and change nothing.
"""

import asyncio

from .. import crud
from ..distribution import LEASE_SECONDS
from ..engine.payouts import reconcile_leg
from ..errors import BadInput, Conflict
from ..models import Settlement
from .access import operator_settlement
from .corrections import append_note

# Statuses a void may start from; `processing` only when its worker's lease ran out
# (the claim below refuses a live one).
VOIDABLE = ("pending", "errored", "processing", "processed")
CLAIM_ATTEMPTS = 10
CLAIM_WAIT_SECONDS = 0.5


async def void_settlement(
    operator_user_id: str, settlement_id: str, reason: str
) -> Settlement:
    text = reason.strip()
    if not text:
        raise BadInput("reason: must not be empty")
    # Take the settlement the way a worker does, so no engine pays a leg meanwhile,
    # and only as it was read: what is checked, audited ("was") and, on a refusal,
    # put back is the state the claim took.
    token = crud.new_id()
    # An engine pass retrying an errored settlement holds it for about a second:
    # wait that out rather than answer the operator 409 for it.
    for _ in range(CLAIM_ATTEMPTS):
        settlement = await operator_settlement(operator_user_id, settlement_id)
        if settlement.status == "held":
            raise Conflict("the settlement is held: reject it instead of voiding it")
        if settlement.status not in VOIDABLE:
            raise Conflict(f"settlement is {settlement.status}; it cannot be voided")
        if await crud.claim_settlement_as_read(settlement, token, LEASE_SECONDS):
            break
        await asyncio.sleep(CLAIM_WAIT_SECONDS)
    else:
        raise Conflict("the settlement is being processed right now; try again shortly")
    written_off = f"voided by the operator: {text}"[:1000]
    try:
        for leg in await crud.list_settlement_legs(settlement.id):
            if leg.status in ("pending", "failed") and leg.payment_hash:
                # LNbits may have paid it before a crash kept the row from saying so.
                await reconcile_leg(leg)
        if await crud.count_completed_legs(settlement.id):
            raise Conflict(
                "a leg of this settlement has already been paid; Lightning payments "
                "cannot be clawed back, so it can no longer be voided"
            )
        async with crud.transaction() as tx:
            voided = await crud.void_settlement(tx, settlement.id, token, written_off)
            if voided is None:
                raise Conflict(
                    "a leg of this settlement was paid or is in flight (or the "
                    "settlement changed meanwhile): nothing was voided"
                )
            # What the voided legs held of their LPs' balances (as crud releases it).
            released = sum(
                leg.amount_fiat_minor or 0
                for leg in voided
                if leg.client_id
                and leg.leg_type in crud.BALANCE_LEG_TYPES
                and leg.status in crud.RESERVING_STATUSES
            )
            await crud.add_audit(
                tx,
                operator_user_id,
                operator_user_id,
                "settlement.void",
                "settlement",
                settlement.id,
                {
                    "reason": text,
                    "was": settlement.status,
                    "voided_legs": [leg.id for leg in voided],
                    "released_fiat_minor": released,
                },
            )
    except BaseException:
        await crud.release_claim_as_read(settlement, token)
        raise
    await append_note(operator_user_id, settlement.id, written_off)
    refreshed = await crud.get_settlement(settlement.id)
    assert refreshed
    return refreshed
