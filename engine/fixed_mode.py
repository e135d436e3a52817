"""Fixed mode (docs/money.md, "Fixed mode").

At each scheduled local time of a machine, every fixed-mode LP there receives
min(remaining, daily limit - paid today, limit / slots) at the current rate (the last
slot of the local day may pay up to the rest of the limit), as a `fixed` leg keyed
(LP, local date, slot): the scheduler, a manual run, a restart in the middle or two
processes at once can only ever find the one row.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, time, timezone
from decimal import Decimal
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loguru import logger

from .. import crud
from ..calculations import (
    FiatError,
    fixed_slot_fiat,
    parse_fiat,
)
from ..errors import BadInput
from ..models import ClientWithPrefs, Leg, Machine
from .legs import lp_leg
from .payouts import pay_standalone_leg
from .rates import current_rate
from .small_balances import auto_settle_after_slot

HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
MAX_SLOTS = 48


@dataclass(frozen=True)
class Slot:
    local_date: str
    index: int
    count: int

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1


def validate_schedule(times: list[str], timezone_name: str) -> tuple[list[str], str]:
    if len(times) > MAX_SLOTS:
        raise BadInput(f"times: at most {MAX_SLOTS} slots a day")
    for value in times:
        if not isinstance(value, str) or not HHMM.match(value):
            raise BadInput(f"times: {value!r:.20} is not a time of day as HH:MM")
    if len(set(times)) != len(times):
        raise BadInput("times: each time may appear once")
    try:
        ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"timezone: {timezone_name!r:.60} is not a known time zone"
        ) from None
    return sorted(times), timezone_name


def current_slot(machine: Machine, now: datetime) -> Optional[Slot]:
    """The latest slot whose local time has come today, in the machine's zone."""
    times = sorted(json.loads(machine.fixed_times or "[]"))
    if not times:
        return None
    local = now.astimezone(ZoneInfo(machine.fixed_timezone))
    wall = local.time().replace(tzinfo=None)
    due = [i for i, t in enumerate(times) if time.fromisoformat(t) <= wall]
    if not due:
        return None
    return Slot(local.date().isoformat(), due[-1], len(times))


async def run_slot(
    machine: Machine, now: Optional[datetime] = None, rate: Optional[Decimal] = None
) -> list[Leg]:
    """Pay the machine's current slot to every fixed-mode LP not yet paid for it."""
    slot = current_slot(machine, now or datetime.now(timezone.utc))
    if slot is None:
        return []
    quote = await current_rate(machine, rate)
    legs = []
    for client in await crud.list_machine_clients_with_prefs(machine.id):
        if (
            client.status != "active"
            or not client.wallet_id
            or client.dca_mode != "fixed"
            or not client.fixed_mode_daily_limit
        ):
            continue
        key = f"fixed:{client.id}:{slot.local_date}:{slot.index}"
        existing = await crud.get_leg_by_key(key)
        if existing:
            if existing.status in ("pending", "failed"):
                existing = await pay_standalone_leg(existing)
            legs.append(existing)
            continue
        leg = await _plan_leg(machine, client, slot, key, quote)
        if leg is None:
            continue
        try:
            async with crud.transaction() as tx:
                inserted = await crud.insert_leg(tx, leg)
                # The day's total is read again after the leg's reservation, which
                # holds the LP's row (PostgreSQL) until commit: another slot of the
                # same day planned at the same moment (another process, a manual run)
                # has committed by then and is counted.
                if (
                    inserted
                    and leg.status == "pending"
                    and await crud.fixed_paid_on(client.id, slot.local_date, tx)
                    > _daily_limit(client, machine.fiat_currency)
                ):
                    raise DailyLimitReached
        except (crud.BalanceShort, DailyLimitReached):
            # Another writer spent the balance, or the day's limit, since it was
            # read: the slot stays unpaid and the next tick plans it again from
            # what remains.
            logger.info(f"satmachineadmin: fixed slot of {client.id} waits: {key}")
            continue
        if not inserted:
            continue
        if leg.status == "pending":
            leg = await pay_standalone_leg(leg)
        legs.append(leg)
    if quote is not None:
        # An LP the slot left under the machine's threshold is settled now, as after
        # a distribution (docs/money.md, "Small-balance settlement"); the balance is
        # reserved by crud.insert_leg's conditional UPDATE, as any leg's.
        paid = {leg.client_id for leg in legs if leg.status == "completed"}
        slot_key = f"fixed:{machine.id}:{slot.local_date}:{slot.index}"
        try:
            legs += await auto_settle_after_slot(
                machine, slot_key, quote[0], {c for c in paid if c}
            )
        except Exception:
            logger.exception(
                f"satmachineadmin: auto-settlement after slot {slot_key} failed"
            )
    return legs


class DailyLimitReached(Exception):
    """A fixed leg would take the LP past their daily limit: nothing is written."""


def _daily_limit(client: ClientWithPrefs, currency: str) -> int:
    """The LP's daily limit in minor units; 0 (pay nothing) when unusable."""
    try:
        return parse_fiat(client.fixed_mode_daily_limit or "0", currency)
    except FiatError:
        return 0


async def _plan_leg(
    machine: Machine,
    client: ClientWithPrefs,
    slot: Slot,
    key: str,
    quote: Optional[tuple[Decimal, str]],
) -> Optional[Leg]:
    currency = machine.fiat_currency
    try:
        limit = parse_fiat(client.fixed_mode_daily_limit or "0", currency)
    except FiatError:
        logger.warning(
            f"satmachineadmin: LP {client.user_id} has an unusable daily limit"
        )
        return None
    paid_today = await crud.fixed_paid_on(client.id, slot.local_date)
    fiat = fixed_slot_fiat(
        client.remaining_minor, limit, paid_today, slot.count, slot.is_last
    )
    if fiat <= 0:
        return None
    leg = lp_leg(
        machine,
        client,
        key=key,
        leg_type="fixed",
        label="Fixed DCA",
        fiat=fiat,
        quote=quote,
        source_wallet_id=machine.wallet_id,
        slot_date=slot.local_date,
        slot_index=slot.index,
    )
    if quote is None:
        # Consumes the slot visibly; nothing is paid at a guessed rate.
        return leg.copy(
            update={
                "status": "skipped",
                "error": "no exchange rate available for this slot: nothing was paid",
            }
        )
    return leg


async def run_due_slots(now: Optional[datetime] = None) -> int:
    """Scheduler tick: every machine with a schedule pays its current slot."""
    paid = 0
    for machine in await crud.list_scheduled_machines():
        try:
            paid += len(await run_slot(machine, now))
        except Exception:
            logger.exception(
                f"satmachineadmin: fixed slot of machine {machine.id} failed"
            )
    return paid
