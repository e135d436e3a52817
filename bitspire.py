"""bitSpire payments → settlements (docs/sources.md, "bitSpire").

`is_candidate` is the listener's cheap filter (no database). `ingest_payment` checks
every rule of docs/sources.md; a payload that breaks one becomes a `rejected` settlement
keeping the raw payload and the reason. Nothing here raises to its caller: a
malformed payment must never stall the listener or the sweep.
"""

from collections.abc import AsyncIterator
from decimal import Decimal, InvalidOperation
from typing import Any, Optional

from lnbits.core.db import db as core_db
from lnbits.core.models import Payment
from loguru import logger

from . import crud
from .calculations import MAX_SATS, FiatError, currency_decimals, parse_fiat
from .intake import land_rejected, land_settlement
from .models import Machine

# The sweep re-reads a little before its cursor: payments are stamped before they
# settle, and the unique keys make reading one twice harmless.
SWEEP_OVERLAP_SECONDS = 300

SWEEP_PAGE = 1000

last_sweep_at: Optional[int] = None


class Rejection(ValueError):
    pass


def is_candidate(payment: Payment) -> bool:
    extra = payment.extra or {}
    return isinstance(extra, dict) and extra.get("source") == "bitspire"


def _int_field(extra: dict, name: str) -> int:
    value = extra.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejection(f"{name} must be an integer number of sats, got {value!r:.60}")
    if value < 0 or value > MAX_SATS:
        raise Rejection(f"{name} is out of range: {value}")
    return value


def _decimal_field(extra: dict, name: str) -> Decimal:
    value = extra.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejection(f"{name} must be a decimal string, got {value!r:.60}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise Rejection(f"{name} is not a decimal: {value!r:.60}") from None
    if not number.is_finite() or number < 0:
        raise Rejection(f"{name} must be a finite, non-negative decimal")
    return number


def validate(machine: Machine, payment: Payment) -> dict[str, Any]:  # noqa: C901
    # One flat rule after another, as docs/sources.md lists them: splitting would hide
    # the order in which a payload is judged.
    """The settlement fields of a bitSpire payment, or a Rejection naming the rule."""
    extra = payment.extra or {}
    tx_type = extra.get("type")
    if tx_type not in ("cash_out", "cash_in"):
        raise Rejection(f"type must be cash_out or cash_in, got {tx_type!r:.60}")
    txid = extra.get("txid")
    if not isinstance(txid, str) or not txid.strip() or len(txid) > 200:
        raise Rejection("txid must be a non-empty string of at most 200 characters")
    wire = _int_field(extra, "wire_sats")
    principal = _int_field(extra, "principal_sats")
    fee = _int_field(extra, "fee_sats")
    currency = extra.get("currency")
    if not isinstance(currency, str) or currency.upper() != machine.fiat_currency:
        raise Rejection(
            f"currency {currency!r:.20} does not match the machine's "
            f"{machine.fiat_currency}"
        )
    fiat_value = extra.get("fiat_amount")
    if isinstance(fiat_value, bool) or not isinstance(fiat_value, (str, int)):
        raise Rejection("fiat_amount must be a decimal string")
    try:
        fiat_minor = parse_fiat(fiat_value, machine.fiat_currency)
    except FiatError as exc:
        raise Rejection(f"fiat_amount: {exc}") from None
    if fiat_minor <= 0 or principal <= 0:
        raise Rejection("fiat_amount and principal_sats must be greater than zero")

    amount_msat = payment.amount
    if tx_type == "cash_out":
        if wire != principal + fee:
            raise Rejection(
                f"cash_out: wire_sats {wire} != principal_sats {principal} "
                f"+ fee_sats {fee}"
            )
        if amount_msat <= 0:
            raise Rejection(
                "cash_out stamped on an outbound payment: direction and type disagree"
            )
    else:
        if fee > principal:
            raise Rejection(
                f"cash_in: fee_sats {fee} exceeds principal_sats {principal}"
            )
        if wire != principal - fee:
            raise Rejection(
                f"cash_in: wire_sats {wire} != principal_sats {principal} "
                f"- fee_sats {fee}"
            )
        if amount_msat >= 0:
            raise Rejection(
                "cash_in stamped on an inbound payment: direction and type disagree"
            )
    if abs(amount_msat) != wire * 1000:
        raise Rejection(
            f"the payment carried {Decimal(abs(amount_msat)) / 1000} sats but the "
            "payload claims "
            f"wire_sats {wire}"
        )

    rate_value = extra.get("exchange_rate")
    if rate_value is not None:
        rate = _decimal_field(extra, "exchange_rate")
        fiat_units = Decimal(fiat_minor) / Decimal(10) ** currency_decimals(
            machine.fiat_currency
        )
        try:
            disagrees = abs(fiat_units * rate - principal) > 1
        except ArithmeticError:  # an exponent Decimal cannot multiply: 1E+999999
            disagrees = True
        if disagrees:
            raise Rejection(
                f"exchange_rate {rate} disagrees with principal_sats / fiat_amount "
                f"by more than 1 sat"
            )
    fee_fraction = extra.get("fee_fraction")
    if fee_fraction is not None:
        fraction = _decimal_field(extra, "fee_fraction")
        if fraction > 1:
            raise Rejection("fee_fraction must be between 0 and 1")
        fee_fraction = str(fraction)
    npub = extra.get("machine_npub")
    if machine.machine_npub and npub != machine.machine_npub:
        raise Rejection("machine_npub does not match the machine's npub on record")
    return {
        "tx_type": tx_type,
        "external_id": txid.strip(),
        "wire_sats": wire,
        "principal_sats": principal,
        "fee_sats": fee,
        "fiat_amount_minor": fiat_minor,
        "fee_fraction": fee_fraction,
    }


async def ingest_payment(machine: Machine, payment: Payment) -> Optional[str]:
    """Turn one bitSpire payment of a machine wallet into a settlement (or rejection).

    Returns the new settlement's status, or None when the payment was already known.
    """
    if not payment.success:
        return None
    if await crud.settlement_exists_for_payment(payment.payment_hash):
        return None
    extra = payment.extra if isinstance(payment.extra, dict) else {}
    try:
        fields = validate(machine, payment)
    except Rejection as exc:
        txid = extra.get("txid")
        reason = str(exc)
        landed = await land_rejected(
            machine=machine,
            source="bitspire",
            external_id=f"payment:{payment.payment_hash}",
            reason=reason
            if not isinstance(txid, str)
            else f"{reason} (txid {txid[:80]})",
            raw_payload=extra,
            payment_hash=payment.payment_hash,
            tx_type=str(extra.get("type")),
        )
        return landed.status if landed else None
    landed = await land_settlement(
        machine=machine,
        source="bitspire",
        raw_payload=extra,
        payment_hash=payment.payment_hash,
        external_created_at=int(payment.time.timestamp()),
        **fields,
    )
    if landed:
        return landed.status
    existing = await crud.find_settlement(machine.id, "bitspire", fields["external_id"])
    if existing and existing.payment_hash != payment.payment_hash:
        # The same txid arriving in a second payment: those sats are real, so the
        # payment is kept visible, but the transaction is never paid twice.
        duplicate = await land_rejected(
            machine=machine,
            source="bitspire",
            external_id=f"payment:{payment.payment_hash}",
            reason=f"duplicate txid {fields['external_id'][:80]}: already settled by "
            f"payment {existing.payment_hash}",
            raw_payload=extra,
            payment_hash=payment.payment_hash,
            tx_type=fields["tx_type"],
        )
        return duplicate.status if duplicate else None
    return None


async def handle_listener_payment(payment: Payment) -> Optional[str]:
    """The listener's path: only ATM payments into an active machine wallet."""
    if not is_candidate(payment):
        return None
    machine = await crud.get_machine_by_wallet(payment.wallet_id)
    if not machine or machine.status != "active":
        return None
    try:
        return await ingest_payment(machine, payment)
    except Exception:
        logger.exception(
            f"satmachineadmin: could not ingest payment {payment.payment_hash}"
        )
        return None


async def sweep_machine(machine: Machine) -> int:
    """The safety net: every bitSpire payment of the wallet that settled since the
    cursor, both directions (LNbits never dispatches outgoing payments to
    listeners). The cursor is the time payments were last *updated* (settled), not
    created: an invoice paid late, or a cash-in pending for a long time, is found
    when it settles, however old it is."""
    since = max(0, machine.sweep_cursor - SWEEP_OVERLAP_SECONDS)
    landed = 0
    newest = machine.sweep_cursor
    first_failure: Optional[int] = None
    async for payments in _payments_settled_since(machine.wallet_id, since):
        for payment in payments:
            updated = int(payment.updated_at.timestamp())
            newest = max(newest, updated)
            if not is_candidate(payment):
                continue
            try:
                if await ingest_payment(machine, payment):
                    landed += 1
            except Exception:
                logger.exception(
                    f"satmachineadmin: sweep could not ingest {payment.payment_hash}"
                )
                if first_failure is None or updated < first_failure:
                    first_failure = updated
    if first_failure is not None:
        # Never move past a payment that could not be landed: the next sweep (its
        # overlap reads a little before the cursor) tries it again.
        newest = min(newest, first_failure)
    if newest > machine.sweep_cursor:
        await crud.advance_sweep_cursor(machine.id, newest)
    return landed


async def _payments_settled_since(
    wallet_id: str, since: int
) -> AsyncIterator[list[Payment]]:
    """The wallet's successful payments (and outgoing ones still pending) updated
    after `since`, oldest update first, a page at a time. Keyset paging on
    updated_at (inclusive, each payment yielded once): a payment that settles while
    the sweep reads cannot shift a page and hide another, as OFFSET paging could."""
    seen: set[str] = set()
    start = since
    while True:
        page = await core_db.fetchall(
            "SELECT * FROM apipayments WHERE wallet_id = :wallet "
            f"AND updated_at >= {core_db.timestamp_placeholder('start')} "
            "AND (status = 'success' OR (amount < 0 AND status = 'pending')) "
            "ORDER BY updated_at, checking_id LIMIT :limit",
            {"wallet": wallet_id, "start": start, "limit": SWEEP_PAGE},
            Payment,
        )
        fresh = [p for p in page if p.checking_id not in seen]
        if fresh:
            seen.update(p.checking_id for p in fresh)
            yield fresh
        if len(page) < SWEEP_PAGE:
            return
        if not fresh:
            # A whole page of payments updated within one second: beyond what one
            # ATM wallet sees; the next second is read on the next sweep.
            logger.warning(f"satmachineadmin: sweep of {wallet_id} stopped at {start}")
            return
        start = int(page[-1].updated_at.timestamp())


async def sweep_all() -> int:
    global last_sweep_at
    last_sweep_at = crud.now()
    landed = 0
    for machine in await crud.list_active_machines():
        landed += await sweep_machine(machine)
    return landed
