"""Reports: what the operator and the LP read about money that already moved.

Read-only views over the books: the operator's health (engine, sources, each machine's
float against what its pending legs need), the legs as CSV, and the LP's summary per
machine (docs/money.md, "Units": cost basis in fiat per BTC).
"""

import csv
import io
from collections.abc import Iterable

from lnbits.core.crud import get_wallet
from lnbits.task_manager import task_manager

from .. import bitspire, crud
from ..calculations import cost_basis_fiat_per_btc, format_fiat
from ..lamassu import config as lamassu_config
from ..models import Leg, iso, leg_out

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
        "stuck": stuck,
        "legs_in_flight": len(in_flight),
        "in_flight_sats": sum(leg.amount_sats for leg in in_flight),
        "oldest_in_flight_since": (
            iso(in_flight[0].in_flight_since) if in_flight else None
        ),
        "machines": machine_rows,
    }


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


def legs_csv(legs: Iterable[Leg]) -> str:
    """The legs as CSV, one row each, columns as CSV_COLUMNS."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for leg in legs:
        shown = leg_out(leg)
        fiat_per_btc = None
        if leg.amount_fiat_minor and leg.currency and leg.amount_sats:
            fiat_per_btc = cost_basis_fiat_per_btc(
                leg.amount_sats, leg.amount_fiat_minor, leg.currency
            )
        writer.writerow(
            [
                shown.created_at,
                shown.completed_at,
                leg.id,
                leg.settlement_id or "",
                leg.machine_id,
                leg.client_id or "",
                leg.leg_type,
                leg.status,
                leg.amount_sats,
                shown.amount_fiat or "",
                leg.currency or "",
                leg.exchange_rate or "",
                fiat_per_btc if fiat_per_btc is not None else "",
                leg.destination or "",
                leg.payment_hash or "",
                leg.error or "",
                "" if leg.sent_sats is None else leg.sent_sats,
                "" if leg.fee_msat is None else leg.fee_msat,
                "true" if leg.in_flight_since is not None else "false",
            ]
        )
    return buffer.getvalue()
