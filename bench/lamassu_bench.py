"""Lamassu poller benchmark (a script that prints a table, not a test).

Both sides are real PostgreSQL: a Lamassu-shaped database (tests/lamassu_fixture.py)
holding N successful cash-outs (plus unsuccessful noise) in the lookback window, and
LNbits itself on embedded PostgreSQL (or SQLite with `sqlite`).

1. First-time catch-up: one poll lands all N transactions as settlements (rows/s).
2. Steady state: a poll that finds nothing new (ms, median of 5).

The distribution engine is off (SATMACHINE_ENGINE_AUTORUN=0) so the figures are the
poller's own; pass --engine to let it run alongside, as in production.

Usage: bench/lamassu_bench.py [postgres|sqlite] [--rows 50000] [--devices 10] [--engine]
"""

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
import inprocess  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "db", nargs="?", default="postgres", choices=["sqlite", "postgres"]
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument(
        "--noise", type=float, default=0.2, help="unsuccessful rows per successful one"
    )
    parser.add_argument("--engine", action="store_true")
    return parser.parse_args()


ARGS = parse_args()
_, PG = inprocess.prepare(
    ARGS.db,
    {"SATMACHINE_ENGINE_AUTORUN": "1" if ARGS.engine else "0", "LOG_LEVEL": "ERROR"},
)

import lamassu_fixture  # noqa: E402


def cash_out_records(devices: list[str], count: int, noise: int) -> list[tuple]:
    now = datetime.now(timezone.utc)
    ticker = Decimal("826091.28")
    records = []
    for i in range(count + noise):
        ok = i < count
        fiat = Decimal(100 + (i % 40) * 50)
        principal = int(fiat * 100_000_000 / ticker)
        records.append(
            (
                uuid.uuid4(),
                devices[i % len(devices)],
                Decimal(principal + principal * 55 // 1000),
                "BTC",
                fiat,
                "GTQ",
                "confirmed" if ok else "authorized",
                True,
                ok,  # dispense_confirmed
                now - timedelta(seconds=(i * 47) % (48 * 3600)),
                Decimal("0.055"),
                ticker,
                None,
            )
        )
    return records


async def make_operator(devices: list[str]) -> str:
    from lnbits.core.crud import create_account, create_wallet
    from lnbits.core.models import Account

    from satmachineadmin import crud
    from satmachineadmin.models import Machine

    account = Account(id=uuid.uuid4().hex, username=None)
    await create_account(account)
    moment = crud.now()
    async with crud.transaction() as tx:
        for i, device in enumerate(devices):
            wallet = await create_wallet(user_id=account.id, wallet_name=f"atm{i}")
            await crud.insert_machine(
                tx,
                Machine(
                    id=crud.new_id(),
                    operator_user_id=account.id,
                    name=f"ATM {i}",
                    wallet_id=wallet.id,
                    fiat_currency="GTQ",
                    lamassu_device_id=device,
                    created_at=moment,
                    updated_at=moment,
                ),
            )
    return account.id


async def count_settlements(operator_id: str) -> int:
    from satmachineadmin import crud

    _, total = await crud.list_settlements(operator_id, limit=1)
    return total


async def main() -> None:
    inprocess.fix_btc_price()
    server = lamassu_fixture.start_lamassu_server()
    await server.prepare()
    lamassu_db = await server.new_database()
    devices = [lamassu_fixture.device_id() for _ in range(ARGS.devices)]
    for device in devices:
        await lamassu_db.add_device(device)
    noise = int(ARGS.rows * ARGS.noise)
    started = time.perf_counter()
    await lamassu_db.copy_cash_outs(cash_out_records(devices, ARGS.rows, noise))
    await lamassu_db.execute("ANALYZE")
    load_seconds = time.perf_counter() - started

    from lnbits.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        from satmachineadmin.lamassu import config as lamassu_config
        from satmachineadmin.lamassu import poller as lamassu_poller

        operator_id = await make_operator(devices)
        await lamassu_config.save_config(
            operator_id,
            lamassu_config.LamassuConfigIn(**lamassu_db.config(enabled=False)),
        )

        started = time.perf_counter()
        first = await lamassu_poller.poll_operator(operator_id)
        catch_up = time.perf_counter() - started
        assert first.ok, first.error
        landed = await count_settlements(operator_id)
        assert first.new == ARGS.rows == landed, (first.new, landed)

        steady = []
        for _ in range(5):
            started = time.perf_counter()
            again = await lamassu_poller.poll_operator(operator_id)
            steady.append((time.perf_counter() - started) * 1000)
            assert again.ok and again.new == 0 and again.found == ARGS.rows, again
        assert await count_settlements(operator_id) == ARGS.rows

        # After a restart the process has no memory of what landed: one window query.
        cold = []
        for _ in range(3):
            lamassu_poller._known_cache.clear()
            started = time.perf_counter()
            again = await lamassu_poller.poll_operator(operator_id)
            cold.append((time.perf_counter() - started) * 1000)
            assert again.ok and again.new == 0, again

        print(
            f"\nLamassu poller benchmark: LNbits on {ARGS.db}, Lamassu on PostgreSQL, "
            f"engine {'on' if ARGS.engine else 'off'}"
        )
        print(
            f"{ARGS.rows:,} successful cash-outs + {noise:,} unsuccessful in the window, "
            f"{ARGS.devices} machines (Lamassu rows loaded in {load_seconds:.1f} s)\n"
        )
        print(f"{'measure':<44} {'value':>14}")
        print(f"{'first-time catch-up, total':<44} {catch_up:>12.1f} s")
        print(
            f"{'first-time catch-up, settlements landed/s':<44} {ARGS.rows / catch_up:>14,.0f}"
        )
        print(
            f"{'steady-state poll, nothing new (median of 5)':<44} {statistics.median(steady):>11.0f} ms"
        )
        print(
            f"{'steady-state poll, min / max':<44} {min(steady):>6.0f} / {max(steady):<5.0f}ms"
        )
        print(
            f"{'same, first poll after a restart (median of 3)':<44} {statistics.median(cold):>11.0f} ms"
        )
    await server.close()
    server.cleanup()
    if PG is not None:
        PG.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
