"""What an LP sees of their own DCA, across every machine and operator that enrolled
them: preferences, one position per enrolment (balance, cycle, sats stacked, average
cost), deposits, payouts, a history for the chart and a statement.

The LP-facing companion extension `satmachineclient` (companion/, docs/companion.md)
calls these in process with the user id LNbits authenticated: every function is
scoped to that user here, against the database, so no caller can widen it. Figures
are integers (sats, fiat minor units) until they are worded; the average cost is
calculations.cost_basis_fiat_per_btc, the same as the operator's LP summary.
"""

from collections.abc import AsyncIterator
from typing import Any, Optional

from lnbits.core.crud import get_account

from .. import crud
from ..calculations import cost_basis_fiat_per_btc, format_fiat
from ..models import (
    Client,
    Deposit,
    Leg,
    LpPreferences,
    LpPreferencesOut,
    Machine,
    SetLpPreferences,
    deposit_out,
    iso,
    leg_out,
    lp_preferences_out,
)
from . import accounts
from .reports import _csv_text

# Legs that pay the LP their principal (their cost basis); an autoforward only moves
# sats the LP already received on to their Lightning address.
PRINCIPAL_LEG_TYPES = ("dca", "fixed", "settlement")
PAGE = 5000


async def preferences(user_id: str) -> Optional[LpPreferencesOut]:
    prefs = await crud.get_lp_preferences(user_id)
    return lp_preferences_out(prefs) if prefs else None


async def save_preferences(user_id: str, data: SetLpPreferences) -> LpPreferencesOut:
    """The same rules and audit row as PUT /lp of this extension (accounts)."""
    prefs: LpPreferences = await accounts.set_lp_preferences(user_id, data)
    return lp_preferences_out(prefs)


async def _enrolments(user_id: str) -> list[tuple[Client, Machine]]:
    pairs = []
    for client in await crud.list_user_clients(user_id):
        machine = await crud.get_machine(client.machine_id)
        if machine:
            pairs.append((client, machine))
    return pairs


async def _all_legs(user_id: str) -> list[Leg]:
    """Every leg paid to the LP, newest first (paged: an LP of years has thousands)."""
    legs: list[Leg] = []
    while True:
        page = await crud.list_legs(user_id=user_id, limit=PAGE, offset=len(legs))
        legs += page
        if len(page) < PAGE:
            return legs


async def _operator_name(user_id: str, names: dict[str, Optional[str]]) -> Any:
    if user_id not in names:
        account = await get_account(user_id)
        names[user_id] = account.username if account else None
    return names[user_id]


async def positions(user_id: str) -> list[dict]:
    """One per enrolment: balance, cycle state, sats stacked, average cost."""
    rows = []
    names: dict[str, Optional[str]] = {}
    prefs = await crud.get_lp_preferences(user_id)
    for client, machine in await _enrolments(user_id):
        currency = machine.fiat_currency
        paid_fiat, paid_sats = await crud.completed_principal_totals(client.id)
        basis = cost_basis_fiat_per_btc(paid_sats, paid_fiat, currency)
        pending = [
            d
            for d in await crud.list_client_deposits(client.id)
            if d.status == "pending"
        ]
        rows.append(
            {
                "client_id": client.id,
                "machine_id": machine.id,
                "machine_name": machine.name,
                "operator_name": await _operator_name(machine.operator_user_id, names),
                "currency": currency,
                "status": client.status,
                "dca_mode": prefs.dca_mode if prefs else None,
                "total_deposits": format_fiat(client.deposits_minor, currency),
                "pending_deposits": format_fiat(
                    sum(d.amount_minor for d in pending), currency
                ),
                "total_distributed": format_fiat(
                    min(client.reserved_minor, client.deposits_minor), currency
                ),
                "remaining_balance": format_fiat(client.remaining_minor, currency),
                "total_converted": format_fiat(paid_fiat, currency),
                "sats_stacked": paid_sats,
                "average_cost_fiat_per_btc": (
                    format(basis, "f") if basis is not None else None
                ),
                "cycle_complete": client.cycle_complete,
            }
        )
    return rows


async def totals(user_id: str) -> dict:
    """Sats across every machine; fiat per currency (currencies are not added)."""
    per_currency: dict[str, dict[str, int]] = {}
    sats = 0
    for client, machine in await _enrolments(user_id):
        fiat, paid = await crud.completed_principal_totals(client.id)
        sums = per_currency.setdefault(
            machine.fiat_currency, {"deposits": 0, "remaining": 0, "fiat": 0, "sats": 0}
        )
        sums["deposits"] += client.deposits_minor
        sums["remaining"] += client.remaining_minor
        sums["fiat"] += fiat
        sums["sats"] += paid
        sats += paid
    currencies = []
    for currency, sums in sorted(per_currency.items()):
        basis = cost_basis_fiat_per_btc(sums["sats"], sums["fiat"], currency)
        currencies.append(
            {
                "currency": currency,
                "total_deposits": format_fiat(sums["deposits"], currency),
                "remaining_balance": format_fiat(sums["remaining"], currency),
                "total_converted": format_fiat(sums["fiat"], currency),
                "sats_stacked": sums["sats"],
                "average_cost_fiat_per_btc": (
                    format(basis, "f") if basis is not None else None
                ),
            }
        )
    return {"sats_stacked": sats, "currencies": currencies}


async def deposits(user_id: str) -> list[dict]:
    """The LP's deposits at every machine, newest first, with the machine's name."""
    rows = []
    for client, machine in await _enrolments(user_id):
        for deposit in await crud.list_client_deposits(client.id):
            rows.append({**deposit_out(deposit).dict(), "machine_name": machine.name})
    rows.sort(key=lambda r: (r["created_at"] or "", r["id"]), reverse=True)
    return rows


def _fiat_per_btc(leg: Leg) -> Optional[str]:
    if not (leg.amount_fiat_minor and leg.currency and leg.amount_sats):
        return None
    basis = cost_basis_fiat_per_btc(
        leg.amount_sats, leg.amount_fiat_minor, leg.currency
    )
    return format(basis, "f") if basis is not None else None


async def payouts(user_id: str, limit: int, offset: int) -> list[dict]:
    """The LP's legs (principal and autoforward), newest first: kind, status, sats,
    fiat, the rate in sats per fiat unit and as fiat per BTC."""
    names = {m.id: m.name for _, m in await _enrolments(user_id)}
    legs = await crud.list_legs(user_id=user_id, limit=limit, offset=offset)
    return [
        {
            **leg_out(leg).dict(),
            "machine_name": names.get(leg.machine_id),
            "fiat_per_btc": _fiat_per_btc(leg),
        }
        for leg in legs
    ]


def _history_points(
    currency: str, deposits: list[Deposit], legs: list[Leg]
) -> list[dict]:
    """Balance and sats stacked after each confirmed deposit and principal payout."""
    events: list[tuple[int, str, int, int]] = []
    for deposit in deposits:
        if deposit.status == "confirmed":
            at = deposit.confirmed_at or deposit.created_at
            events.append((at, deposit.id, deposit.amount_minor, 0))
    for leg in legs:
        if leg.status == "completed" and leg.leg_type in PRINCIPAL_LEG_TYPES:
            at = leg.completed_at or leg.created_at
            events.append((at, leg.id, -(leg.amount_fiat_minor or 0), leg.amount_sats))
    balance = sats = 0
    points = []
    for at, _, fiat_change, sats_change in sorted(events):
        balance += fiat_change
        sats += sats_change
        points.append(
            {
                "at": iso(at),
                "balance": format_fiat(max(0, balance), currency),
                "sats_stacked": sats,
            }
        )
    return points


async def history(user_id: str) -> list[dict]:
    """For the chart: per enrolment, its balance and sats stacked over time."""
    legs = await _all_legs(user_id)
    series = []
    for client, machine in await _enrolments(user_id):
        own = [leg for leg in legs if leg.client_id == client.id]
        series.append(
            {
                "client_id": client.id,
                "machine_id": machine.id,
                "machine_name": machine.name,
                "currency": machine.fiat_currency,
                "points": _history_points(
                    machine.fiat_currency,
                    await crud.list_client_deposits(client.id),
                    own,
                ),
            }
        )
    return series


STATEMENT_COLUMNS = [
    "date",
    "machine",
    "currency",
    "kind",
    "status",
    "fiat",
    "sats",
    "rate_sats_per_unit",
    "fiat_per_btc",
    "reference",
]


async def statement_csv(user_id: str) -> AsyncIterator[str]:
    """The LP's statement: every deposit and payout, oldest first, then per machine
    three total rows: deposited; converted with the sats stacked and the average
    cost (fiat per BTC); the remaining balance."""
    yield _csv_text([STATEMENT_COLUMNS])
    legs = await _all_legs(user_id)
    rows: list[tuple[int, str, list]] = []
    enrolments = await _enrolments(user_id)
    for client, machine in enrolments:
        currency = machine.fiat_currency
        for deposit in await crud.list_client_deposits(client.id):
            at = deposit.confirmed_at or deposit.created_at
            row: list[Any] = [iso(at), machine.name, currency, "deposit"]
            row += [deposit.status, format_fiat(deposit.amount_minor, currency)]
            rows.append((at, deposit.id, [*row, "", "", "", deposit.id]))
        for leg in legs:
            if leg.client_id != client.id:
                continue
            at = leg.completed_at or leg.created_at
            fiat = (
                format_fiat(leg.amount_fiat_minor, currency)
                if leg.amount_fiat_minor is not None
                else ""
            )
            row = [iso(at), machine.name, currency, leg.leg_type, leg.status, fiat]
            row += [leg.amount_sats, leg.exchange_rate or "", _fiat_per_btc(leg) or ""]
            rows.append((at, leg.id, [*row, leg.payment_hash or leg.id]))
    rows.sort(key=lambda r: (r[0], r[1]))
    yield _csv_text(row for _, _, row in rows)
    total_rows: list[list[Any]] = []
    for p in await positions(user_id):
        where = ["", p["machine_name"], p["currency"]]
        ref = p["client_id"]
        cost = p["average_cost_fiat_per_btc"] or ""
        total_rows += [
            [*where, "total_deposited", "", p["total_deposits"], "", "", "", ref],
            [
                *where,
                "total_converted",
                "",
                p["total_converted"],
                p["sats_stacked"],
                "",
                cost,
                ref,
            ],
            [*where, "remaining_balance", "", p["remaining_balance"], "", "", "", ref],
        ]
    yield _csv_text(total_rows)
