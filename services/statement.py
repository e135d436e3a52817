"""The LP's statement: what they deposited and what they were paid, per period.

Only ever the caller's own rows (crud reads them through `clients.user_id`): an LP
at two operators' machines sees both, and nobody else's. Per machine (one currency
each) and period (day, ISO week, month, by UTC date):

- deposits: confirmed deposits, counted when confirmed;
- payouts: completed dca, fixed and settlement legs, in sats and in fiat (the fiat
  of the LP's balance they used up), counted when completed;
- average cost: the period's payout fiat per BTC (docs/money.md, "Units");
- fees: what the LP paid out of their own wallet, the routing fees of their
  completed autoforwards (msat, as LNbits charged them). The ATM's commission is
  the customer's, never the LP's: it is not an LP fee.

Served as JSON and CSV (GET /lp/statement, /lp/statement.csv) and as a printable
page (GET /satmachineadmin/statement).
"""

import csv
import io
from typing import Any, Optional

from .. import crud
from ..calculations import cost_basis_fiat_per_btc, format_fiat
from ..models import Deposit, Machine, iso
from .reports import period_start

STATEMENT_COLUMNS = [
    "period",
    "machine_id",
    "machine_name",
    "currency",
    "deposits_count",
    "deposits",
    "payouts_count",
    "payout_sats",
    "payout_fiat",
    "average_cost_fiat_per_btc",
    "fees_msat",
]

PAYOUT_LEG_TYPES = ("dca", "fixed", "settlement")


def _blank(period: str, machine_id: str, name: str, currency: str) -> dict:
    return {
        "period": period,
        "machine_id": machine_id,
        "machine_name": name,
        "currency": currency,
        "deposits_count": 0,
        "deposits_minor": 0,
        "payouts_count": 0,
        "payout_sats": 0,
        "payout_fiat_minor": 0,
        "fees_msat": 0,
    }


def _shown(figures: dict) -> dict:
    currency = figures["currency"]
    basis = cost_basis_fiat_per_btc(
        figures["payout_sats"], figures["payout_fiat_minor"], currency
    )
    out = {k: v for k, v in figures.items() if not k.endswith("_minor")}
    out["deposits"] = format_fiat(figures["deposits_minor"], currency)
    out["payout_fiat"] = format_fiat(figures["payout_fiat_minor"], currency)
    out["average_cost_fiat_per_btc"] = format(basis, "f") if basis is not None else None
    return out


class _Book:
    """The statement's figures, per (period start, machine) and per machine."""

    def __init__(self, period: str, machines: dict[str, Machine]):
        self.period = period
        self.machines = machines
        self.rows: dict[tuple[str, str], dict] = {}
        self.totals: dict[str, dict] = {}

    def targets(self, moment: int, machine_id: str) -> list[dict]:
        machine = self.machines[machine_id]
        start = period_start(moment, self.period).isoformat()
        key = (start, machine_id)
        if key not in self.rows:
            self.rows[key] = _blank(
                start, machine_id, machine.name, machine.fiat_currency
            )
        if machine_id not in self.totals:
            self.totals[machine_id] = _blank(
                "total", machine_id, machine.name, machine.fiat_currency
            )
        return [self.rows[key], self.totals[machine_id]]

    def add(self, moment: int, machine_id: Optional[str], **figures: int) -> None:
        if machine_id is None or machine_id not in self.machines:
            return
        for target in self.targets(moment, machine_id):
            for field, value in figures.items():
                target[field] += value


async def statement(user_id: str, period: str) -> dict:
    """{"period", "rows": [per period and machine, oldest first], "totals": [one
    per machine], "deposits": [the LP's deposits with their status, newest
    first]}."""
    machines: dict[str, Machine] = {}
    client_machine: dict[str, str] = {}
    for client in await crud.list_user_clients(user_id):
        machine = await crud.get_machine(client.machine_id)
        if machine:
            machines[machine.id] = machine
            client_machine[client.id] = machine.id
    book = _Book(period, machines)
    deposits = await crud.list_user_deposits(user_id)
    for deposit in deposits:
        if deposit.status == "confirmed":
            book.add(
                deposit.confirmed_at or deposit.created_at,
                deposit.machine_id,
                deposits_count=1,
                deposits_minor=deposit.amount_minor,
            )
    async for page in crud.iter_user_completed_legs(user_id, PAYOUT_LEG_TYPES):
        for leg in page:
            book.add(
                leg.completed_at or leg.created_at,
                client_machine.get(leg.client_id or ""),
                payouts_count=1,
                payout_sats=leg.amount_sats,
                payout_fiat_minor=leg.amount_fiat_minor or 0,
            )
    async for page in crud.iter_user_completed_legs(user_id, ("autoforward",)):
        for leg in page:
            if leg.fee_msat:
                book.add(
                    leg.completed_at or leg.created_at,
                    client_machine.get(leg.client_id or ""),
                    fees_msat=leg.fee_msat,
                )
    ordered = sorted(book.rows, key=lambda k: (k[0], machines[k[1]].name, k[1]))
    return {
        "period": period,
        "rows": [_shown(book.rows[key]) for key in ordered],
        "totals": [_shown(book.totals[m]) for m in machines if m in book.totals],
        "deposits": [_deposit(d, machines.get(d.machine_id)) for d in deposits],
    }


def _deposit(deposit: Deposit, machine: Optional[Machine]) -> dict:
    return {
        "id": deposit.id,
        "machine_id": deposit.machine_id,
        "machine_name": machine.name if machine else None,
        "amount": format_fiat(deposit.amount_minor, deposit.currency),
        "currency": deposit.currency,
        "status": deposit.status,
        "created_at": iso(deposit.created_at),
        "confirmed_at": iso(deposit.confirmed_at),
        "cancelled_at": iso(deposit.cancelled_at),
    }


def statement_csv(answer: dict) -> str:
    """The statement's rows, then one total per machine, as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(STATEMENT_COLUMNS)
    for row in [*answer["rows"], *answer["totals"]]:
        writer.writerow([_cell(row.get(column)) for column in STATEMENT_COLUMNS])
    return buffer.getvalue()


def _cell(value: Optional[Any]) -> Any:
    # A machine's name is text the operator chose: never a spreadsheet formula.
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
