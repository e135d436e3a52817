"""Reports: what the operator and the LP read about money that already moved.

Read-only views over the books: the operator's health (engine, sources, each machine's
float against what its pending legs need), legs and settlements as CSV (streamed, no
cap), and the LP's summary per machine (docs/money.md, "Units": cost basis in fiat per
BTC).
"""

import csv
import io
from collections.abc import AsyncIterator, Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

from lnbits.core.crud import get_account, get_wallet
from lnbits.task_manager import task_manager

from .. import bitspire, crud
from ..calculations import cost_basis_fiat_per_btc, format_fiat
from ..lamassu import config as lamassu_config
from ..models import Settlement, iso

# A settlement still processing after this long is reported as stuck.
STUCK_AFTER_SECONDS = 600


async def health(operator_user_id: str) -> dict:
    machines = await crud.list_machines(operator_user_id)
    needs = await crud.pending_needs_by_wallet()
    machine_rows = []
    for machine in machines:
        wallet = await get_wallet(machine.wallet_id)
        balance = wallet.balance_msat // 1000 if wallet else 0
        need = needs.get(machine.wallet_id, 0)
        machine_rows.append(
            {
                "machine_id": machine.id,
                "name": machine.name,
                "status": machine.status,
                "float_sats": balance,
                "pending_legs_need_sats": need,
                "float_short_by_sats": max(0, need - balance),
            }
        )
    counts = await crud.settlement_status_counts(operator_user_id)
    stuck = await crud.count_stuck_settlements(
        operator_user_id, crud.now() - STUCK_AFTER_SECONDS
    )
    lamassu_status = lamassu_config.status_out(
        await lamassu_config.get_config(operator_user_id)
    )
    # Payments LNbits reports pending (their node has not answered): never paid
    # again while they are, asked about again until they succeed or fail.
    in_flight = await crud.in_flight_legs(operator_user_id)

    def alive(name: str) -> bool:
        return task_manager.get_task(name) is not None

    return {
        "lamassu": lamassu_status,
        "scheduler_alive": alive("satmachineadmin_scheduler"),
        "listener_alive": alive("ext_satmachineadmin_invoice_listener"),
        "engine_alive": alive("satmachineadmin_engine"),
        "sweep_alive": alive("satmachineadmin_sweep"),
        "last_sweep_at": iso(bitspire.last_sweep_at)
        if bitspire.last_sweep_at
        else None,
        "settlements": counts,
        "errored": counts.get("errored", 0),
        # Held settlements are paid only once the operator decides: never forgotten.
        "held": counts.get("held", 0),
        "stuck": stuck,
        "legs_in_flight": len(in_flight),
        "in_flight_sats": sum(leg.amount_sats for leg in in_flight),
        "oldest_in_flight_since": (
            iso(in_flight[0].in_flight_since) if in_flight else None
        ),
        "machines": machine_rows,
        # An upgrade in place from v1: what was imported, shown on the page.
        "v1_import": _v1_import_out(await crud.v1_import_summary(operator_user_id)),
    }


def _v1_import_out(summary: Optional[dict]) -> Optional[dict]:
    if summary is None:
        return None
    return {**summary, "imported_at": iso(summary["imported_at"])}


async def lp_summary(user_id: str) -> list[dict]:
    """Per machine that enrolled the LP: balance, sats received, average cost."""
    rows = []
    for client in await crud.list_user_clients(user_id):
        machine = await crud.get_machine(client.machine_id)
        if not machine:
            continue
        currency = machine.fiat_currency
        paid_fiat, paid_sats = await crud.completed_principal_totals(client.id)
        basis = cost_basis_fiat_per_btc(paid_sats, paid_fiat, currency)
        rows.append(
            {
                "client_id": client.id,
                "machine_id": machine.id,
                "machine_name": machine.name,
                "currency": currency,
                "status": client.status,
                "total_deposits": format_fiat(client.deposits_minor, currency),
                "remaining_balance": format_fiat(client.remaining_minor, currency),
                "total_converted": format_fiat(paid_fiat, currency),
                "sats_received": paid_sats,
                "average_cost_basis_fiat_per_btc": (
                    format(basis, "f") if basis is not None else None
                ),
                "cycle_complete": client.cycle_complete,
            }
        )
    return rows


CSV_COLUMNS = [
    "created_at",
    "completed_at",
    "leg_id",
    "settlement_id",
    "machine_id",
    "client_id",
    "leg_type",
    "status",
    "amount_sats",
    "amount_fiat",
    "currency",
    "exchange_rate_sats_per_unit",
    "fiat_per_btc",
    "destination",
    "payment_hash",
    "error",
    "sent_sats",
    "fee_msat",
    "in_flight",
]


def _csv_text(rows: Iterable[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """A text that a spreadsheet would run as a formula (an ATM's txid, an error
    message: text someone else chose) gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _leg_row(leg: Any) -> list:
    """One exported leg (a row of crud.iter_leg_rows) as CSV_COLUMNS."""
    fiat, currency, sats = leg["amount_fiat_minor"], leg["currency"], leg["amount_sats"]
    fiat_per_btc = None
    if fiat and currency and sats:
        fiat_per_btc = cost_basis_fiat_per_btc(sats, fiat, currency)
    return [
        iso(leg["created_at"]),
        iso(leg["completed_at"]),
        leg["id"],
        leg["settlement_id"] or "",
        leg["machine_id"],
        leg["client_id"] or "",
        leg["leg_type"],
        leg["status"],
        sats,
        format_fiat(fiat, currency) if fiat is not None and currency else "",
        currency or "",
        leg["exchange_rate"] or "",
        fiat_per_btc if fiat_per_btc is not None else "",
        leg["destination"] or "",
        leg["payment_hash"] or "",
        leg["error"] or "",
        "" if leg["sent_sats"] is None else leg["sent_sats"],
        "" if leg["fee_msat"] is None else leg["fee_msat"],
        "true" if leg["in_flight_since"] is not None else "false",
    ]


async def legs_csv_stream(
    operator_user_id: str, filters: dict[str, Any]
) -> AsyncIterator[str]:
    """Every leg the filters match, oldest first, as CSV text a page at a time: no
    cap on the number of rows, and memory for one page whatever the export's size."""
    yield _csv_text([CSV_COLUMNS])
    async for page in crud.iter_leg_rows(operator_user_id=operator_user_id, **filters):
        yield _csv_text(_leg_row(leg) for leg in page)


SETTLEMENT_CSV_COLUMNS = [
    "created_at",
    "processed_at",
    "settlement_id",
    "machine_id",
    "source",
    "external_id",
    "tx_type",
    "status",
    "fiat_amount",
    "currency",
    "wire_sats",
    "principal_sats",
    "fee_sats",
    "platform_fee_sats",
    "operator_fee_sats",
    "exchange_rate_sats_per_unit",
    "orphan_sats",
    "orphan_fiat",
    "estimated",
    "error",
]


def _settlement_row(settlement: Settlement) -> list:
    currency = settlement.currency
    return [
        iso(settlement.created_at),
        iso(settlement.processed_at),
        settlement.id,
        settlement.machine_id,
        settlement.source,
        settlement.external_id,
        settlement.tx_type,
        settlement.status,
        format_fiat(settlement.fiat_amount_minor, currency),
        currency,
        settlement.wire_sats,
        settlement.principal_sats,
        settlement.fee_sats,
        settlement.platform_fee_sats,
        settlement.operator_fee_sats,
        settlement.exchange_rate or "",
        settlement.orphan_sats,
        format_fiat(settlement.orphan_fiat_minor, currency),
        "yes" if settlement.estimated else "no",
        settlement.error or "",
    ]


async def settlements_csv_stream(
    operator_user_id: str, filters: dict[str, Any]
) -> AsyncIterator[str]:
    """Every settlement the filters match, oldest first, streamed as legs are."""
    yield _csv_text([SETTLEMENT_CSV_COLUMNS])
    async for page in crud.iter_settlements(operator_user_id, **filters):
        yield _csv_text(_settlement_row(s) for s in page)


PERIODS = ("day", "week", "month")


def period_start(epoch: int, period: str) -> date:
    """The first day (UTC) of the day, ISO week (Monday) or month holding `epoch`."""
    day = datetime.fromtimestamp(epoch, timezone.utc).date()
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def _blank(period: date, machine_id: Optional[str], currency: str) -> dict:
    return {
        "period": period.isoformat(),
        "machine_id": machine_id,
        "currency": currency,
        "cash_outs": 0,
        "cash_ins": 0,
        "cash_out_fiat_minor": 0,
        "cash_in_fiat_minor": 0,
        "principal_sats": 0,
        "commission_sats": 0,
        "platform_fee_sats": 0,
        "operator_fee_sats": 0,
        "orphan_sats": 0,
        "lp_payout_sats": 0,
        "lp_payout_fiat_minor": 0,
    }


async def periods(
    operator_user_id: str,
    period: str,
    machine_id: Optional[str],
    since: Optional[int],
    until: Optional[int],
) -> list[dict]:
    """Volumes by period, per machine and in total (one total per currency): cash
    in and out (fiat and sats), commission and its two shares, orphan sats, and
    what reached LPs (completed dca, fixed and settlement legs). Settlements count
    once landed and payable (not rejected, held or voided); LP payouts when they
    completed."""
    rows: dict[tuple[str, Optional[str], str], dict] = {}

    def row(epoch: int, machine: Optional[str], currency: str) -> dict:
        key = (period_start(epoch, period).isoformat(), machine, currency)
        if key not in rows:
            rows[key] = _blank(period_start(epoch, period), machine, currency)
        return rows[key]

    async for page in crud.iter_settlements(
        operator_user_id, machine_id=machine_id, since=since, until=until
    ):
        for s in page:
            if s.status in ("rejected", "held", "voided"):
                continue
            for target in (
                row(s.created_at, s.machine_id, s.currency),
                row(s.created_at, None, s.currency),
            ):
                kind = "cash_outs" if s.tx_type == "cash_out" else "cash_ins"
                target[kind] += 1
                target[f"{kind[:-1]}_fiat_minor"] += s.fiat_amount_minor
                target["principal_sats"] += s.principal_sats
                target["commission_sats"] += s.fee_sats
                target["platform_fee_sats"] += s.platform_fee_sats
                target["operator_fee_sats"] += s.operator_fee_sats
                target["orphan_sats"] += s.orphan_sats
    async for legs in crud.iter_leg_rows(
        operator_user_id=operator_user_id,
        status="completed",
        machine_id=machine_id,
        since=since,
        until=until,
    ):
        for leg in legs:
            if leg["leg_type"] not in crud.BALANCE_LEG_TYPES or not leg["currency"]:
                continue
            moment = leg["completed_at"] or leg["created_at"]
            for target in (
                row(moment, leg["machine_id"], leg["currency"]),
                row(moment, None, leg["currency"]),
            ):
                target["lp_payout_sats"] += leg["amount_sats"]
                target["lp_payout_fiat_minor"] += leg["amount_fiat_minor"] or 0
    shown = []
    for key in sorted(rows, key=lambda k: (k[0], k[1] is None, k[1] or "", k[2])):
        figures = rows[key]
        currency = figures["currency"]
        for field in ("cash_out_fiat", "cash_in_fiat", "lp_payout_fiat"):
            figures[field] = format_fiat(figures.pop(f"{field}_minor"), currency)
        shown.append(figures)
    return shown


async def platform_overview(
    period: str, since: Optional[int], until: Optional[int]
) -> dict:
    """The super user's read-only view of the whole platform: every operator's
    machines, and per period, operator and machine the volumes (payable
    settlements, as in `periods`) with the platform fee they accrued and the fee
    the platform was actually paid (completed super_fee legs)."""
    machines = await crud.list_all_machines()
    names: dict[str, Optional[str]] = {}
    for machine in machines:
        if machine.operator_user_id not in names:
            account = await get_account(machine.operator_user_id)
            names[machine.operator_user_id] = account.username if account else None
    by_id = {m.id: m for m in machines}
    rows: dict[tuple[str, str], dict] = {}

    def row(epoch: int, machine_id: str, operator: str, currency: str) -> dict:
        day = period_start(epoch, period).isoformat()
        key = (day, machine_id)
        if key not in rows:
            rows[key] = {
                "period": day,
                "operator_user_id": operator,
                "operator_name": names.get(operator),
                "machine_id": machine_id,
                "machine_name": by_id[machine_id].name if machine_id in by_id else None,
                "currency": currency,
                "cash_outs": 0,
                "cash_ins": 0,
                "cash_out_fiat_minor": 0,
                "cash_in_fiat_minor": 0,
                "commission_sats": 0,
                "platform_fee_sats": 0,
                "platform_fee_paid_sats": 0,
            }
        return rows[key]

    async for page in crud.iter_all_settlements(since=since, until=until):
        for s in page:
            if s.status in ("rejected", "held", "voided"):
                continue
            target = row(s.created_at, s.machine_id, s.operator_user_id, s.currency)
            kind = "cash_outs" if s.tx_type == "cash_out" else "cash_ins"
            target[kind] += 1
            target[f"{kind[:-1]}_fiat_minor"] += s.fiat_amount_minor
            target["commission_sats"] += s.fee_sats
            target["platform_fee_sats"] += s.platform_fee_sats
    async for legs in crud.platform_fees_paid(since=since, until=until):
        for leg in legs:
            paid_at = by_id.get(leg["machine_id"])
            currency = paid_at.fiat_currency if paid_at else ""
            target = row(
                leg["created_at"], leg["machine_id"], leg["operator_user_id"], currency
            )
            target["platform_fee_paid_sats"] += leg["amount_sats"]
    shown = []
    fees: dict[str, dict] = {}
    for key in sorted(rows, key=lambda k: (k[0], rows[k]["operator_name"] or "", k[1])):
        figures = rows[key]
        currency = figures["currency"]
        for field in ("cash_out_fiat", "cash_in_fiat"):
            minor = figures.pop(f"{field}_minor")
            figures[field] = format_fiat(minor, currency) if currency else None
        shown.append(figures)
        total = fees.setdefault(
            figures["period"],
            {
                "period": figures["period"],
                "platform_fee_sats": 0,
                "platform_fee_paid_sats": 0,
                "commission_sats": 0,
            },
        )
        for field in ("platform_fee_sats", "platform_fee_paid_sats", "commission_sats"):
            total[field] += figures[field]
    return {
        "period": period,
        "machines": [
            {
                "machine_id": m.id,
                "name": m.name,
                "operator_user_id": m.operator_user_id,
                "operator_name": names.get(m.operator_user_id),
                "currency": m.fiat_currency,
                "status": m.status,
                "created_at": iso(m.created_at),
            }
            for m in machines
        ],
        "rows": shown,
        "fees_by_period": [fees[p] for p in sorted(fees)],
    }
