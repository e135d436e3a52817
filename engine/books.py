"""LNbits' books kept whole where LNbits 1.6.2 leaves an internal transfer half-paid.

An internal payment is two rows: the payer's debit (`internal_<hash>`, written as
succeeded) and the payee's invoice, marked succeeded right after. Two things can
leave the debit without its credit:
- a process killed between the two statements (the invoice stays pending, and the
  next start-up marks it failed);
- another LNbits process starting up: its `check_pending_payments` lists every
  pending incoming invoice, then walks the list asking its funding source, and a
  fresh process has never seen an internal invoice, so it writes its copy from the
  list back as failed — even when that invoice was paid in between. Found by
  tests/test_chaos.py with two servers on one PostgreSQL.
Either way the payer was debited and the payee holds nothing: sats that left a
machine and reached nobody. The debit is the proof of payment, so the credit LNbits
owed is applied, once, by the same status change its `_pay_internal_invoice` makes —
a compare-and-swap on LNbits' row (crud.restore_internal_credit), so two servers
repairing at once change it once. Only invoices of this extension's own: a leg's
invoice on its destination wallet, or a payment into a machine wallet (the ATM's
cash-out; a settlement not yet landed from it is landed by the sweep afterwards,
since the repair moves the invoice's `updated_at`).
"""

from typing import Optional

from loguru import logger

from .. import crud

# The marker of the extension's own actions in the audit trail.
BOOKS_ACTOR = "satmachineadmin"
# A running server looks back this far on every pass (an overlap: the passes run
# every SWEEP_INTERVAL_SECONDS); at start-up as far as LNbits' own start-up check,
# which rewrites only invoices created in the last 15 days.
RECENT_SECONDS = 15 * 60
START_UP_SECONDS = 15 * 24 * 60 * 60
BATCH = 1_000


async def restore_credit(
    checking_id: str,
    payment_hash: str,
    wallet_id: str,
    amount_msat: int,
    operator_user_id: Optional[str],
    entity_type: str,
    entity_id: str,
    status_was: str,
) -> bool:
    """Apply the credit LNbits owed for a succeeded internal debit; audited. True
    when this call applied it (False: already applied, or the debit is not there)."""
    if not await crud.restore_internal_credit(
        checking_id, payment_hash, wallet_id, amount_msat
    ):
        return False
    logger.warning(
        f"satmachineadmin: {entity_type} {entity_id}: LNbits had debited the payer of "
        f"invoice {payment_hash} but left the payee's side {status_was}; credited "
        f"{amount_msat // 1000} sats to {wallet_id}"
    )
    async with crud.transaction() as tx:
        await crud.add_audit(
            tx,
            BOOKS_ACTOR,
            operator_user_id,
            "payment.credit_restored",
            entity_type,
            entity_id,
            {
                "payment_hash": payment_hash,
                "wallet_id": wallet_id,
                "amount_sats": amount_msat // 1000,
                "payee_status_was": status_was,
            },
        )
    return True


async def restore_undone_credits(since: int, batch: int = BATCH) -> int:
    """Every credit of this extension's invoices LNbits wrote back as failed since
    `since` (epoch s) although their internal debit succeeded. The count restored.

    Page by page: a credit restored leaves the list, one left as it is (another
    extension's or user's invoice, or one another server restored first) moves the
    next page past it, so no number of those keeps ours from being reached."""
    restored = 0
    left = 0
    while True:
        credits = await crud.undone_internal_credits(since, batch, offset=left)
        if not credits:
            return restored
        done = await _restore_page(credits)
        restored += done
        left += len(credits) - done
        if len(credits) < batch:
            return restored


async def _restore_page(credits: list[crud.UndoneCredit]) -> int:
    legs = {
        leg.payment_hash: leg
        for leg in await crud.legs_paying_invoices([c.payment_hash for c in credits])
    }
    restored = 0
    for credit in credits:
        leg = legs.get(credit.payment_hash)
        if leg is not None and leg.destination == credit.wallet_id:
            owner, entity_type, entity_id = leg.operator_user_id, "leg", leg.id
        else:
            machine = await crud.get_machine_by_wallet(credit.wallet_id)
            if machine is None:
                continue  # another extension's or user's invoice: not ours to touch
            owner, entity_type = machine.operator_user_id, "machine"
            entity_id = machine.id
        if await restore_credit(
            credit.checking_id,
            credit.payment_hash,
            credit.wallet_id,
            credit.amount,
            owner,
            entity_type,
            entity_id,
            "failed",
        ):
            restored += 1
    return restored


async def restore_recent() -> int:
    """A running server's pass (the sweep's interval)."""
    return await restore_undone_credits(crud.now() - RECENT_SECONDS)


async def restore_since_start_up_window() -> int:
    """A starting server's pass: as far back as LNbits' start-up check rewrites."""
    return await restore_undone_credits(crud.now() - START_UP_SECONDS)
