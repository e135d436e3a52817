"""Pay one leg, exactly once, and find out after a crash whether it was paid.

A leg row exists before any money moves. Paying it is three steps, each leaving a
trace: (1) an invoice on the destination, stored on the row; (2) LNbits pays it from
the source wallet; (3) the row is marked completed. Whatever step a crash interrupts,
`reconcile_leg` asks LNbits whether the stored invoice was paid from the source
wallet, so a leg is never paid twice nor forgotten. LNbits itself refuses to pay an
internal invoice twice, a second guard under the first.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Optional

from lnbits.bolt11 import decode as decode_bolt11
from lnbits.core.crud import get_standalone_payment, update_payment
from lnbits.core.models import Payment, PaymentState
from lnbits.core.services import create_invoice, pay_invoice
from lnbits.exceptions import InvoiceError, PaymentError
from loguru import logger

from .. import crud
from ..calculations import RETRY_BASE_SECONDS, retry_delay
from ..models import Leg
from .faults import checkpoint

INVOICE_EXPIRY_SECONDS = 30 * 86400
PAYMENT_MARKER = "satmachineadmin"


async def reconcile_leg(leg: Leg) -> Leg:
    """Bring a pending or failed leg in line with what LNbits knows of its invoice."""
    if leg.status not in ("pending", "failed") or not leg.payment_hash:
        return leg
    payment = await get_standalone_payment(
        leg.payment_hash, wallet_id=leg.source_wallet_id
    )
    if payment is None or not payment.is_out:
        return leg
    if payment.success:
        await _complete_half_paid_transfer(leg, payment)
        await crud.transition_leg(
            leg.id, "completed", from_statuses=("pending", "failed")
        )
        logger.info(f"satmachineadmin: leg {leg.id} found paid on reconcile")
    elif payment.pending:
        # An external payment still in flight: never pay it again while it might land.
        return leg
    refreshed = await crud.get_leg(leg.id)
    assert refreshed
    return refreshed


async def _complete_half_paid_transfer(leg: Leg, outgoing: Payment) -> None:
    """Finish an internal transfer LNbits left half-written by a crash.

    LNbits 1.6.2 commits an internal payment in two statements: the payer's debit
    (`internal_<hash>`, success), then the payee's invoice marked success. A process
    killed between them leaves the source wallet debited and the payee's invoice
    pending (or failed by the next start-up): sats that left the machine and reached
    nobody. The debit is the proof of payment, so the credit LNbits owed is applied
    here, once: the same status change LNbits' own `_pay_internal_invoice` makes.
    Only for the leg's own invoice on its own destination wallet, at its amount.
    """
    if not outgoing.checking_id.startswith("internal_"):
        return
    if leg.destination_kind != "wallet" or not leg.payment_hash:
        return
    incoming = await get_standalone_payment(leg.payment_hash, incoming=True)
    if (
        incoming is None
        or incoming.success
        or incoming.wallet_id != leg.destination
        or incoming.amount != leg.amount_sats * 1000
        or incoming.amount != -outgoing.amount
        or (incoming.bolt11 or "").lower() != (outgoing.bolt11 or "").lower()
    ):
        return
    was = incoming.status
    incoming.status = PaymentState.SUCCESS
    await update_payment(incoming)
    logger.warning(
        f"satmachineadmin: leg {leg.id}: LNbits had debited {leg.source_wallet_id} "
        f"but left the payee's invoice {was}; credited {leg.amount_sats} sats to "
        f"{leg.destination} to complete the transfer"
    )
    async with crud.transaction() as tx:
        await crud.add_audit(
            tx,
            PAYMENT_MARKER,
            leg.operator_user_id,
            "leg.transfer_completed",
            "leg",
            leg.id,
            {
                "payment_hash": leg.payment_hash,
                "amount_sats": leg.amount_sats,
                "payee_status_was": str(was),
            },
        )


def _invoice_usable(bolt11: Optional[str]) -> bool:
    if not bolt11:
        return False
    try:
        invoice = decode_bolt11(bolt11)
    except Exception:
        return False
    return invoice.date + (invoice.expiry or 3600) > time.time() + 60


async def _invoice_dead(leg: Leg) -> bool:
    """LNbits will never pay the leg's stored invoice: a fresh one is needed.

    At every start-up LNbits fails each pending incoming invoice its funding source
    does not know (an internal invoice is forgotten by a restart), and it refuses to
    retry an outgoing payment that failed. Reusing such an invoice would fail the leg
    forever. Safe: reconcile_leg has just found that the old invoice was not paid, and
    LNbits never pays an invoice whose incoming side has failed.
    """
    if not leg.payment_hash:
        return False
    incoming = await get_standalone_payment(leg.payment_hash, incoming=True)
    if incoming is not None and incoming.failed:
        return True
    outgoing = await get_standalone_payment(
        leg.payment_hash, wallet_id=leg.source_wallet_id
    )
    return outgoing is not None and outgoing.is_out and outgoing.failed


async def _invoice_for(leg: Leg) -> tuple[str, str]:
    """(bolt11, payment_hash) of a fresh invoice on the leg's destination."""
    extra = {"tag": PAYMENT_MARKER, "source": PAYMENT_MARKER, "leg_id": leg.id}
    if leg.destination_kind == "wallet" and leg.destination:
        payment = await create_invoice(
            wallet_id=leg.destination,
            amount=leg.amount_sats,
            memo=(leg.memo or f"satmachineadmin {leg.leg_type}")[:600],
            extra=extra,
            internal=True,
            expiry=INVOICE_EXPIRY_SECONDS,
        )
        return payment.bolt11, payment.payment_hash
    if leg.destination_kind in ("lnaddress", "lnurl") and leg.destination:
        from lnbits.core.services.lnurl import get_pr_from_lnurl

        bolt11 = await get_pr_from_lnurl(
            leg.destination, leg.amount_sats * 1000, comment=leg.memo
        )
        invoice = decode_bolt11(bolt11)
        if invoice.amount_msat != leg.amount_sats * 1000:
            raise ValueError(
                f"{leg.destination} returned an invoice for "
                f"{invoice.amount_msat} msat instead of {leg.amount_sats * 1000}"
            )
        return bolt11, invoice.payment_hash
    raise ValueError(f"leg has no payable destination ({leg.destination_kind})")


async def _fail(leg: Leg, reason: str) -> Leg:
    await crud.transition_leg(
        leg.id,
        "failed",
        error=reason[:500],
        from_statuses=("pending",),
        count_attempt=True,
    )
    logger.warning(f"satmachineadmin: leg {leg.id} ({leg.leg_type}) failed: {reason}")
    refreshed = await crud.get_leg(leg.id)
    assert refreshed
    return refreshed


# Legs paid per batch: their invoices are stored in one commit before any is paid, and
# their outcomes in one commit after, instead of two commits per leg.
PAY_BATCH = 50


class ClaimLost(Exception):
    """The worker no longer holds the claim its legs were planned under (its lease ran
    out while it stalled, and another worker or a correction took over): it must not
    pay anything more. What it already paid is recorded; the new owner goes on."""


@dataclass(frozen=True)
class Claim:
    """What entitles a worker to pay: the settlement's claim token (settlement and
    autoforward legs), or the token of a standalone leg's own lease. Each payment needs
    at least half the lease left, so a live worker always passes and a stalled one
    whose lease could lapse mid-payment never starts one."""

    token: str
    lease_seconds: int
    standalone: bool = False

    async def fence(self, leg: Leg) -> bool:
        return await crud.fence_payment(
            leg.id,
            leg.payment_hash or "",
            None if self.standalone else leg.settlement_id,
            self.token,
            crud.now() + self.lease_seconds // 2,
        )


async def pay_leg(leg: Leg, claim: Claim) -> Leg:
    return (await pay_legs([leg], claim))[0]


async def pay_legs(
    legs: list[Leg],
    claim: Claim,
    after_each: Optional[Callable[[], Awaitable[None]]] = None,
) -> list[Leg]:
    """Pay a batch of legs; returns each row as it now stands, in the same order.

    The three steps of every leg keep their order (invoice stored, paid, outcome
    recorded), batch-wide: all invoices are stored before the first payment, and
    a crash between a payment and its recorded outcome is what `reconcile_leg`
    repairs. Every payment is preceded by a compare-and-swap (`claim.fence`): the
    leg still open with the invoice this worker stored, under the claim it holds;
    if not, ClaimLost, after recording what was paid. `after_each` runs after every
    payment (to keep that claim alive; it raises ClaimLost when it cannot).
    """
    result = list(legs)
    fresh: list[int] = []  # positions of legs that need a new invoice
    ready: list[int] = []  # positions of legs whose stored invoice is paid as is
    for i, leg in enumerate(legs):
        leg = result[i] = await _open_for_payment(leg)
        if leg.status != "pending":
            continue
        if not _invoice_usable(leg.bolt11) or await _invoice_dead(leg):
            fresh.append(i)
        else:
            ready.append(i)
    invoices: dict[int, tuple[str, str]] = {}
    for i in fresh:
        try:
            invoices[i] = await _invoice_for(result[i])
        except (InvoiceError, PaymentError) as exc:
            result[i] = await _fail(
                result[i], f"could not get an invoice: {exc.message}"
            )
        except Exception as exc:
            result[i] = await _fail(result[i], f"could not get an invoice: {exc}")
    stored = await crud.set_leg_payments(
        [
            (result[i].id, payment_hash, bolt11, result[i].payment_hash)
            for i, (bolt11, payment_hash) in invoices.items()
        ]
    )
    for i, (bolt11, payment_hash) in invoices.items():
        if result[i].id in stored:
            result[i] = result[i].copy(
                update={"bolt11": bolt11, "payment_hash": payment_hash}
            )
            ready.append(i)
        else:
            # Another worker stored an invoice for this leg first: it pays; the
            # next pass reconciles against whatever it did.
            logger.warning(
                f"satmachineadmin: leg {result[i].id} taken by another worker"
            )
            result[i] = await _reload(result[i])
    checkpoint("after_invoice")
    paid = await _pay_in_order(result, sorted(ready), claim, after_each)
    checkpoint("before_outcome")
    completed = await crud.complete_paid_legs([result[i] for i in paid])
    moment = crud.now()
    for i in paid:
        if result[i].id in completed:
            # What the row now says, without reading it back.
            result[i] = result[i].copy(
                update={
                    "status": "completed",
                    "error": None,
                    "attempts": result[i].attempts + 1,
                    "completed_at": moment,
                }
            )
        else:
            result[i] = await _reload(result[i])
    return result


async def _pay_in_order(
    result: list[Leg],
    ready: list[int],
    claim: Claim,
    after_each: Optional[Callable[[], Awaitable[None]]],
) -> list[int]:
    """Pay the legs at `ready`, each fenced; the positions LNbits paid. Legs that
    failed are replaced in `result` by their rows as they now stand."""
    paid: list[int] = []
    try:
        if after_each is not None and ready:
            # Invoices for a whole batch may have taken a while: renew first.
            await after_each()
        for i in ready:
            if not await claim.fence(result[i]):
                raise ClaimLost(f"leg {result[i].id}: claim lost before its payment")
            outcome = await _pay_stored_invoice(result[i])
            if outcome is None:
                paid.append(i)
                checkpoint("after_payment")
            else:
                result[i] = outcome
            if after_each is not None:
                await after_each()
    except ClaimLost:
        await crud.complete_paid_legs([result[i] for i in paid])
        raise
    return paid


async def _open_for_payment(leg: Leg) -> Leg:
    """The leg reconciled with LNbits and, if still unpaid, `pending` and payable.
    A zero-sat leg (a fiat share that rounds to 0 sats) is completed here: recorded,
    nothing to send."""
    leg = await reconcile_leg(leg)
    if leg.status not in ("pending", "failed"):
        return leg
    if leg.status == "failed":
        await crud.transition_leg(
            leg.id, "pending", error=leg.error, from_statuses=("failed",)
        )
        leg = leg.copy(update={"status": "pending"})
    if leg.amount_sats <= 0:
        await crud.transition_leg(leg.id, "completed", from_statuses=("pending",))
        return await _reload(leg)
    return leg


async def _pay_stored_invoice(leg: Leg) -> Optional[Leg]:
    """Pay the leg's stored invoice from its source wallet. None when LNbits paid it
    (the outcome is not recorded yet); else the leg as it now stands."""
    assert leg.bolt11
    try:
        await pay_invoice(
            wallet_id=leg.source_wallet_id or "",
            payment_request=leg.bolt11,
            extra={
                "source": PAYMENT_MARKER,
                "leg_id": leg.id,
                "leg_type": leg.leg_type,
            },
            description=(leg.memo or "")[:600],
        )
    except PaymentError as exc:
        return await _after_payment_error(leg, _payment_error_text(exc.message))
    except Exception as exc:
        return await _after_payment_error(leg, str(exc) or exc.__class__.__name__)
    return None


async def _after_payment_error(leg: Leg, reason: str) -> Leg:
    # A payment can fail after LNbits has recorded it paid (a crash in its own
    # bookkeeping): believe LNbits' rows, not the exception.
    refreshed = await reconcile_leg(await _reload(leg))
    if refreshed.status == "completed":
        return refreshed
    return await _fail(leg, reason)


def _payment_error_text(message: str) -> str:
    if "insufficient balance" in message.lower():
        return "insufficient balance in the source wallet"
    return message


async def _reload(leg: Leg) -> Leg:
    refreshed = await crud.get_leg(leg.id)
    assert refreshed
    return refreshed


async def forward_landed_legs(
    settlement_id: str, legs: list[Leg], claim: Claim
) -> None:
    """Autoforward: after an LP's leg lands, send it on to their Lightning address.

    `legs` are the settlement's legs as they stand now. On failure the sats simply
    stay in the LP's wallet; the failed forward is a row they can see, and it is not
    retried blindly.
    """
    landed = [
        leg
        for leg in legs
        if leg.leg_type == "dca"
        and leg.status == "completed"
        and leg.amount_sats > 0
        and leg.client_id
    ]
    if not landed:
        return
    addresses = await crud.autoforward_addresses(landed[0].machine_id)
    if not addresses:
        return
    forwarded = {
        leg.parent_leg_id
        for leg in await crud.list_settlement_legs(settlement_id)
        if leg.leg_type == "autoforward"
    }
    for leg in landed:
        address = addresses.get(leg.client_id or "")
        if not address or leg.id in forwarded:
            continue
        forward = Leg(
            id=crud.new_id(),
            idempotency_key=f"{leg.idempotency_key}:autoforward",
            settlement_id=settlement_id,
            machine_id=leg.machine_id,
            operator_user_id=leg.operator_user_id,
            client_id=leg.client_id,
            parent_leg_id=leg.id,
            leg_type="autoforward",
            status="pending",
            amount_sats=leg.amount_sats,
            currency=leg.currency,
            source_wallet_id=leg.destination,
            destination=address,
            destination_kind="lnaddress",
            memo="satmachineadmin autoforward",
            created_at=crud.now(),
            updated_at=crud.now(),
        )
        async with crud.transaction() as tx:
            inserted = await crud.insert_leg(tx, forward)
        if inserted:
            result = await pay_leg(forward, claim)
            if result.status == "failed":
                await crud.transition_leg(
                    forward.id,
                    "failed",
                    error=f"{result.error}; the sats stay in your LNbits wallet",
                    from_statuses=("failed",),
                )


STANDALONE_LEASE_SECONDS = 120


async def pay_standalone_leg(leg: Leg) -> Leg:
    """Pay a leg no settlement claim covers (fixed, balance settlement): its own
    lease makes sure a scheduler, a manual run and a retry never pay it at once."""
    token = crud.new_id()
    if not await crud.claim_leg(leg.id, token, STANDALONE_LEASE_SECONDS):
        return await _reload(leg)
    claim = Claim(token, STANDALONE_LEASE_SECONDS, standalone=True)
    try:
        return await pay_leg(await _reload(leg), claim)
    except ClaimLost:
        logger.warning(f"satmachineadmin: leg {leg.id}: its lease ran out unpaid")
        return await _reload(leg)
    finally:
        await crud.release_leg(leg.id, token)


async def retry_standalone_legs() -> int:
    """Failed fixed and settlement legs are retried with backoff by attempts."""
    retried = 0
    for leg in await crud.list_retryable_standalone_legs(
        crud.now() - RETRY_BASE_SECONDS
    ):
        wait = retry_delay(leg.attempts)
        if leg.status == "failed" and leg.updated_at + wait > crud.now():
            continue
        if (await pay_standalone_leg(leg)).status == "completed":
            retried += 1
    return retried
