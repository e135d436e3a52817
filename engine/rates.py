"""The current rate (docs/money.md, "Current rate"): sats per fiat unit, a Decimal.

Order of sources: a rate the operator states; LNbits' exchange-rate service for the
machine's currency; the latest settlement rate at that machine if under 24 h old.
None available: the caller skips with the reason, never guesses.
"""

from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Optional

from lnbits.utils.exchange_rates import get_fiat_rate_satoshis
from loguru import logger

from .. import crud
from ..models import Machine

LATEST_SETTLEMENT_MAX_AGE = 24 * 3600
# LNbits' service answers in binary floating point; four decimals of a sat per fiat
# unit is far below what a whole-sat payment can express.
SERVICE_RATE_PLACES = Decimal("0.0001")

# LNbits' service reaches the internet: tests put their own lookup here.
service_rate: Callable[[str], Awaitable[float]] = get_fiat_rate_satoshis


async def current_rate(
    machine: Machine, stated: Optional[Decimal] = None
) -> Optional[tuple[Decimal, str]]:
    """(sats per fiat unit, where it came from), or None when nothing is known."""
    if stated is not None:
        return stated, "stated"
    try:
        service = await service_rate(machine.fiat_currency)
        rate = Decimal(str(service)).quantize(SERVICE_RATE_PLACES)
        if rate > 0:
            return rate, "exchange-rate service"
    except (ValueError, InvalidOperation, ArithmeticError) as exc:
        logger.info(
            f"satmachineadmin: no service rate for {machine.fiat_currency}: {exc}"
        )
    except Exception as exc:  # the service reaches the internet; anything may fail
        logger.info(f"satmachineadmin: rate service failed: {exc}")
    latest = await crud.latest_settlement_rate(
        machine.id, crud.now() - LATEST_SETTLEMENT_MAX_AGE
    )
    if latest:
        return Decimal(latest), "latest settlement at this machine"
    return None
