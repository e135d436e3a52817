"""Pay one leg, exactly once, and find out after a crash whether it was paid.

A leg row exists before any money moves. Paying it is three steps, each leaving a
trace: (1) an invoice on the destination, stored on the row; (2) LNbits pays it from
the source wallet; (3) the row records what LNbits reported. Whatever step a crash
interrupts, `reconcile_leg` asks LNbits about the stored invoice's payment from the
source wallet, so a leg is never paid twice nor forgotten. LNbits itself refuses to
pay an invoice twice from one wallet, a second guard under the first.

A payment that leaves LNbits (an invoice of another node) has three outcomes, and
each is taken as LNbits reports it: success (the leg is `completed`, with the sats
sent and the routing fee), failure (the leg is `failed` with LNbits' reason; only now
may a fresh invoice be fetched), or pending: the node has not answered within LNbits'
wait, or answered ambiguously. A pending payment may still arrive, so its leg stays
`pending` and *in flight* (`in_flight_since`), is asked about again on every pass
(LNbits asks its node), and is never paid again nor given a fresh invoice while it is,
whether or not its invoice has expired meanwhile.
"""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Optional, Union

from lnbits.bolt11 import decode as decode_bolt11
from lnbits.core.crud import check_internal, get_standalone_payment
from lnbits.core.models import Payment
from lnbits.core.services import create_invoice, pay_invoice
from lnbits.core.services.payments import (
    fee_reserve_total,
    update_pending_payment,
)
from lnbits.exceptions import InvoiceError, PaymentError
from lnbits.wallets import get_funding_source
from loguru import logger

from .. import crud
from ..calculations import RETRY_BASE_SECONDS, format_fiat, retry_delay
from ..models import Leg
from . import books
from .faults import checkpoint

INVOICE_EXPIRY_SECONDS = 30 * 86400
PAYMENT_MARKER = "satmachineadmin"
# LNbits' `tag` (from `extra["tag"]`) of every DCA payout, on both of its payments
# (the payer's and the LP's): metrics and an LP's wallet tools filter on it.
DCA_TAG = "aio-dca"
DCA_LEG_TYPES = ("dca", "fixed", "settlement")


def payment_extra(leg: Leg) -> dict:
    """What LNbits stores in `extra` (and so `tag`) of a leg's payments. A DCA
    payout is tagged `aio-dca` and carries its machine, kind and fiat amount; every
    leg says it is ours (`source`, which the invoice listener filters on)."""
    extra: dict = {
        "tag": PAYMENT_MARKER,
        "source": PAYMENT_MARKER,
        "leg_id": leg.id,
        "leg_type": leg.leg_type,
    }
    if leg.leg_type in DCA_LEG_TYPES:
        extra.update(tag=DCA_TAG, machine_id=leg.machine_id)
        if leg.amount_fiat_minor is not None and leg.currency:
            extra.update(
                fiat_amount=format_fiat(leg.amount_fiat_minor, leg.currency),
                fiat_currency=leg.currency,
            )
    return extra


# How soon a settlement whose legs are in flight is looked at again.
# SATMACHINE_PENDING_RECHECK_SECONDS shortens it for tests.
PENDING_RECHECK_SECONDS = int(
    os.environ.get("SATMACHINE_PENDING_RECHECK_SECONDS", "30")
)
# How long the funding source may take to say it is up before an external payment.
NODE_CHECK_SECONDS = 2
IN_FLIGHT_NOTE = (
    "in flight: LNbits reports the payment pending (its Lightning node has not said "
    "whether it arrived); asked again until it succeeds or fails, never paid twice"
)


async def reconcile_leg(leg: Leg) -> Leg:
    """Bring a pending or failed leg in line with what LNbits knows of its invoice."""
    return (await _reconciled(leg))[0]


async def _outgoing(leg: Leg) -> Optional[Payment]:
    """The source wallet's payment of the leg's stored invoice, if LNbits has one."""
    if not leg.payment_hash:
        return None
    payment = await get_standalone_payment(
        leg.payment_hash, wallet_id=leg.source_wallet_id
    )
    return payment if payment is not None and payment.is_out else None


async def _ask_again(payment: Payment) -> Payment:
    """A pending external payment, as LNbits now reports it after asking its funding
    source (LNbits itself only asks at start-up)."""
    if not payment.pending or payment.is_internal:
        return payment
    try:
        return await update_pending_payment(payment)
    except Exception as exc:  # the node unreachable again: still pending
        logger.info(f"satmachineadmin: payment {payment.payment_hash} unchecked: {exc}")
        return payment


def sent_and_fee(payment: Payment) -> tuple[int, int]:
    """(sats the destination received, msat LNbits charged on top) of a payment."""
    return abs(payment.amount) // 1000, abs(payment.fee or 0)


async def _reconciled(
    leg: Leg, failure: Optional[str] = None
) -> tuple[Leg, Optional[Payment]]:
    """The leg after recording what LNbits reports of its stored invoice's payment,
    and that payment (None: LNbits never tried to pay it). `failure` is the reason
    written if LNbits reports it failed."""
    if leg.status not in ("pending", "failed") or not leg.payment_hash:
        return leg, None
    payment = await _outgoing(leg)
    if payment is None:
        return leg, None
    payment = await _ask_again(payment)
    if payment.success:
        await _complete_half_paid_transfer(leg, payment)
        sent, fee = sent_and_fee(payment)
        if await crud.settle_leg_payment(
            leg.id, leg.payment_hash, "completed", sent_sats=sent, fee_msat=fee
        ):
            logger.info(f"satmachineadmin: leg {leg.id} found paid on reconcile")
    elif payment.pending:
        if leg.status != "pending" or leg.in_flight_since is None:
            await crud.mark_leg_in_flight(leg.id, leg.payment_hash, IN_FLIGHT_NOTE)
            logger.warning(f"satmachineadmin: leg {leg.id}: payment in flight")
        else:
            return leg, payment
    elif leg.status == "pending":
        await crud.settle_leg_payment(
            leg.id,
            leg.payment_hash,
            "failed",
            error=(failure or "LNbits reports the payment failed")[:500],
        )
        logger.warning(f"satmachineadmin: leg {leg.id}: its payment failed")
    else:
        return leg, payment
    return await _reload(leg), payment


async def _complete_half_paid_transfer(leg: Leg, outgoing: Payment) -> None:
    """Finish an internal transfer LNbits left half-paid (see engine/books.py): the
    leg's own invoice on its own destination wallet, at the leg's amount."""
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
    ):
        return
    await books.restore_credit(
        incoming.checking_id,
        leg.payment_hash,
        leg.destination,
        incoming.amount,
        leg.operator_user_id,
        "leg",
        leg.id,
        str(incoming.status),
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
    extra = payment_extra(leg)
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
    payment (to keep that claim alive; it raises ClaimLost when it cannot). A leg in
    flight (its payment pending in LNbits) is only asked about, never paid.
    """
    result = list(legs)
    fresh: list[int] = []  # positions of legs that need a new invoice
    ready: list[int] = []  # positions of legs whose stored invoice is paid as is
    for i, leg in enumerate(legs):
        leg, payment = await _open_for_payment(leg)
        result[i] = leg
        if leg.status != "pending" or (payment is not None and payment.pending):
            continue
        if payment is not None and payment.failed:
            # LNbits reports the stored invoice's payment failed, and refuses to try
            # it again: only now does the leg get a fresh invoice.
            fresh.append(i)
        elif not _invoice_usable(leg.bolt11) or await _invoice_dead(leg):
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
    outcomes: dict[str, tuple[int, int]] = {}
    paid = await _pay_in_order(result, sorted(ready), claim, after_each, outcomes)
    checkpoint("before_outcome")
    completed = await crud.complete_paid_legs([result[i] for i in paid], outcomes)
    moment = crud.now()
    for i in paid:
        if result[i].id in completed:
            # What the row now says, without reading it back.
            sent, fee = outcomes[result[i].id]
            result[i] = result[i].copy(
                update={
                    "status": "completed",
                    "error": None,
                    "attempts": result[i].attempts + 1,
                    "completed_at": moment,
                    "sent_sats": sent,
                    "fee_msat": fee,
                    "in_flight_since": None,
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
    outcomes: dict[str, tuple[int, int]],
) -> list[int]:
    """Pay the legs at `ready`, each fenced; the positions LNbits paid (what each
    sent and its fee in `outcomes`). Legs that failed or are in flight are replaced
    in `result` by their rows as they now stand."""
    paid: list[int] = []
    try:
        if after_each is not None and ready:
            # Invoices for a whole batch may have taken a while: renew first.
            await after_each()
        for i in ready:
            if not await claim.fence(result[i]):
                raise ClaimLost(f"leg {result[i].id}: claim lost before its payment")
            outcome = await _pay_stored_invoice(result[i])
            if isinstance(outcome, Payment):
                outcomes[result[i].id] = sent_and_fee(outcome)
                paid.append(i)
                checkpoint("after_payment")
            else:
                result[i] = outcome
            if after_each is not None:
                await after_each()
    except ClaimLost:
        await crud.complete_paid_legs([result[i] for i in paid], outcomes)
        raise
    return paid


async def _open_for_payment(leg: Leg) -> tuple[Leg, Optional[Payment]]:
    """The leg reconciled with LNbits and, if still unpaid and not in flight,
    `pending` and payable; and its stored invoice's payment, if LNbits has one.
    A zero-sat leg (a fiat share that rounds to 0 sats) is completed here: recorded,
    nothing to send."""
    leg, payment = await _reconciled(leg)
    if leg.status not in ("pending", "failed"):
        return leg, payment
    if payment is not None and payment.pending:
        return leg, payment
    if leg.status == "failed":
        await crud.transition_leg(
            leg.id, "pending", error=leg.error, from_statuses=("failed",)
        )
        leg = leg.copy(update={"status": "pending", "in_flight_since": None})
    if leg.amount_sats <= 0:
        await crud.transition_leg(leg.id, "completed", from_statuses=("pending",))
        return await _reload(leg), payment
    return leg, payment


async def _node_refuses() -> Optional[str]:
    """Why the funding source would not take a payment now (it answered with an
    error, e.g. the node refuses connections), or None. A node that is only slow is
    not refused: LNbits reports its payment pending, and the leg waits in flight.

    LNbits records a payment its node never received as pending forever (its node
    cannot say it failed), so a node that plainly refuses is asked first: the leg
    fails with the reason, nothing sent, and is retried."""
    try:
        status = await asyncio.wait_for(
            get_funding_source().status(), NODE_CHECK_SECONDS
        )
    except asyncio.TimeoutError:
        return None
    except Exception as exc:
        return str(exc) or exc.__class__.__name__
    return status.error_message


async def _pay_stored_invoice(leg: Leg) -> Union[Payment, Leg]:
    """Pay the leg's stored invoice from its source wallet: LNbits' successful
    payment (the outcome is not recorded yet), or the leg as it now stands (failed,
    or pending in flight)."""
    assert leg.bolt11 and leg.payment_hash
    # A wallet leg's invoice is always LNbits' own (internal); an address's or an
    # LNURL's may be another node's.
    if (
        leg.destination_kind != "wallet"
        and await check_internal(leg.payment_hash) is None
    ):
        refusal = await _node_refuses()
        if refusal:
            return await _fail(
                leg,
                f"the Lightning node did not take the payment ({refusal}): "
                "nothing was sent; retried later",
            )
    try:
        payment = await pay_invoice(
            wallet_id=leg.source_wallet_id or "",
            payment_request=leg.bolt11,
            extra=payment_extra(leg),
            description=(leg.memo or "")[:600],
        )
    except PaymentError as exc:
        return await _after_payment_error(leg, _payment_error_text(exc.message))
    except Exception as exc:
        return await _after_payment_error(leg, str(exc) or exc.__class__.__name__)
    if payment.success:
        return payment
    if payment.pending:
        await crud.mark_leg_in_flight(leg.id, leg.payment_hash, IN_FLIGHT_NOTE)
        logger.warning(
            f"satmachineadmin: leg {leg.id}: LNbits reports its payment pending"
        )
        return await _reload(leg)
    return await _after_payment_error(leg, "LNbits reports the payment failed")


async def _after_payment_error(leg: Leg, reason: str) -> Leg:
    # A payment can fail after LNbits has recorded it paid (a crash in its own
    # bookkeeping), or stay pending behind an error: believe LNbits' rows, not the
    # exception.
    refreshed, payment = await _reconciled(await _reload(leg), failure=reason)
    if refreshed.status == "completed" or payment is not None:
        return refreshed
    return await _fail(leg, reason)


def _payment_error_text(message: str) -> str:
    lowered = message.lower()
    if "insufficient balance" in lowered:
        return "insufficient balance in the source wallet"
    if "reserve at least" in lowered:
        return (
            "insufficient balance in the source wallet for LNbits' routing-fee "
            f"reserve ({message.strip()})"
        )
    return message


async def _reload(leg: Leg) -> Leg:
    refreshed = await crud.get_leg(leg.id)
    assert refreshed
    return refreshed


# A forward that failed this many times stays failed: the sats stay in the LP's
# wallet (they may have spent them meanwhile).
FORWARD_MAX_ATTEMPTS = 5
# How far back the sweep looks for landed legs that have no forward yet.
FORWARD_SWEEP_SECONDS = 2 * 86400


def routing_fee_reserve_sats(sats: int) -> int:
    """What LNbits holds back for routing fees when `sats` leave it: an external
    payment needs the amount plus this in the paying wallet (by default
    max(2 sats, 1 %) and any service fee), rounded up to a whole sat."""
    return -(-fee_reserve_total(sats * 1000, internal=False) // 1000)


def float_need(leg: Leg) -> int:
    """Sats an open leg needs in its source wallet: its amount, plus the
    routing-fee reserve when it leaves LNbits (docs/money.md, "Fees of payments
    that leave LNbits")."""
    if leg.destination_kind in ("lnaddress", "lnurl"):
        return leg.amount_sats + routing_fee_reserve_sats(leg.amount_sats)
    return leg.amount_sats


def forward_of(leg: Leg, address: str) -> Leg:
    """The autoforward leg of a leg that landed in an LP's wallet: the leg less
    LNbits' routing-fee reserve, so that the payment out of the LP's wallet (which
    holds just the leg) can be made; what the node does not charge stays there. Too
    small to cover the reserve: a skipped leg saying so."""
    reserve = routing_fee_reserve_sats(leg.amount_sats)
    send = leg.amount_sats - reserve
    moment = crud.now()
    forward = Leg(
        id=crud.new_id(),
        idempotency_key=f"{leg.idempotency_key}:autoforward",
        settlement_id=leg.settlement_id,
        machine_id=leg.machine_id,
        operator_user_id=leg.operator_user_id,
        client_id=leg.client_id,
        parent_leg_id=leg.id,
        leg_type="autoforward",
        status="pending",
        amount_sats=send,
        currency=leg.currency,
        source_wallet_id=leg.destination,
        destination=address,
        destination_kind="lnaddress",
        memo=f"Autoforward of {leg.amount_sats} sats, less {reserve} sats held for "
        "routing fees",
        created_at=moment,
        updated_at=moment,
    )
    if send > 0:
        return forward
    return forward.copy(
        update={
            "status": "skipped",
            "amount_sats": leg.amount_sats,
            "error": f"{leg.amount_sats} sats do not cover LNbits' routing-fee "
            f"reserve of {reserve} sats for a payment out of LNbits: they stay in "
            "your LNbits wallet",
        }
    )


def _lands_with_lp(leg: Leg) -> bool:
    return (
        leg.leg_type in crud.FORWARDED_LEG_TYPES
        and leg.status == "completed"
        and leg.amount_sats > 0
        and bool(leg.client_id)
        and leg.destination_kind == "wallet"
        and bool(leg.destination)
    )


async def forward_landed_legs(legs: list[Leg]) -> list[Leg]:
    """Autoforward: each leg that landed in an LP's wallet (dca, fixed, settlement)
    goes on to their Lightning address, once (one autoforward leg per leg, by key),
    if the LP has autoforward on and turned it on before the leg landed. Returns the
    forwards as they now stand. A failed forward leaves the sats in the LP's wallet,
    visible as a failed leg, and is retried a few times (`forward_sweep`)."""
    landed = [leg for leg in legs if _lands_with_lp(leg)]
    if not landed:
        return []
    targets = await crud.autoforward_targets([leg.client_id or "" for leg in landed])
    forwards = []
    for leg in landed:
        target = targets.get(leg.client_id or "")
        if target is None or (leg.completed_at or 0) < target[1]:
            continue
        forwards.append(await _write_and_pay_forward(leg, target[0]))
    return forwards


async def _write_and_pay_forward(leg: Leg, address: str) -> Leg:
    forward = forward_of(leg, address)
    checkpoint("before_forward")
    async with crud.transaction() as tx:
        inserted = await crud.insert_leg(tx, forward)
    if not inserted:
        existing = await crud.get_leg_by_key(forward.idempotency_key)
        assert existing
        if existing.status == "pending":
            # Written before a crash, never paid (or in flight: only asked about).
            return await _pay_forward(existing)
        return existing
    checkpoint("after_forward_written")
    if forward.status != "pending":
        return forward
    return await _pay_forward(forward)


async def _pay_forward(forward: Leg) -> Leg:
    result = await pay_standalone_leg(forward)
    if result.status == "failed" and "stay in your LNbits wallet" not in (
        result.error or ""
    ):
        await crud.transition_leg(
            forward.id,
            "failed",
            error=f"{result.error}; the sats stay in your LNbits wallet"[:500],
            from_statuses=("failed",),
        )
        result = await _reload(forward)
    return result


async def forward_sweep() -> int:
    """Forwards a crash left behind: landed legs with no forward yet (the crash came
    between the leg and its forward), forwards written but never paid, forwards in
    flight, and failed ones with attempts left (after their backoff). Returns the
    forwards completed."""
    done = 0
    missing = await crud.list_unforwarded_legs(crud.now() - FORWARD_SWEEP_SECONDS)
    for forward in await forward_landed_legs(missing):
        done += forward.status == "completed"
    for forward in await crud.list_open_forwards(FORWARD_MAX_ATTEMPTS):
        wait = retry_delay(forward.attempts)
        if forward.status == "failed" and forward.updated_at + wait > crud.now():
            continue
        done += (await _pay_forward(forward)).status == "completed"
    return done


STANDALONE_LEASE_SECONDS = 120


async def pay_standalone_leg(leg: Leg) -> Leg:
    """Pay a leg no settlement claim covers (fixed, balance settlement): its own
    lease makes sure a scheduler, a manual run and a retry never pay it at once."""
    token = crud.new_id()
    if not await crud.claim_leg(leg.id, token, STANDALONE_LEASE_SECONDS):
        return await _reload(leg)
    claim = Claim(token, STANDALONE_LEASE_SECONDS, standalone=True)
    try:
        result = await pay_leg(await _reload(leg), claim)
    except ClaimLost:
        logger.warning(f"satmachineadmin: leg {leg.id}: its lease ran out unpaid")
        return await _reload(leg)
    finally:
        await crud.release_leg(leg.id, token)
    if _lands_with_lp(result):
        # A fixed slot or a balance settlement landed in the LP's wallet.
        await forward_quietly([result])
    return result


async def forward_quietly(legs: list[Leg]) -> None:
    """forward_landed_legs, whose failures never undo what landed: the sweep
    (`forward_sweep`) takes up whatever a failure here left behind."""
    try:
        await forward_landed_legs(legs)
    except Exception:
        logger.exception("satmachineadmin: autoforward failed; the sweep retries it")


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
