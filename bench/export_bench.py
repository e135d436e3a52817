"""CSV export benchmark (a script that prints figures, not a test).

Writes N legs (default 200,000) for one operator into a real LNbits database, then
exports them through the real route `GET /legs.csv` (streamed, keyset-paged, no cap),
reading the response as a client would, chunk by chunk. Prints the rows exported, the
time, rows per second, and the peak of Python memory allocated while the server side
of the export runs (tracemalloc over the route's own stream,
services.reports.legs_csv_stream, consumed chunk by chunk as StreamingResponse
does): it must stay near one page's worth, whatever N is. (httpx's in-process
ASGITransport collects a whole response body before handing it over, so memory
measured around the HTTP request would be the client's copy of the file, not the
server's.)

Usage: bench/export_bench.py [sqlite|postgres] [--legs 200000]
"""

import argparse
import asyncio
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import inprocess


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "db", nargs="?", default="sqlite", choices=["sqlite", "postgres"]
    )
    parser.add_argument("--legs", type=int, default=200_000)
    return parser.parse_args()


ARGS = parse_args()
_, PG = inprocess.prepare(
    ARGS.db, {"SATMACHINE_ENGINE_AUTORUN": "0", "LOG_LEVEL": "ERROR"}
)


async def operator_with_legs(count: int) -> tuple[str, str, str]:
    """(invoice key, machine id, operator id) of an operator whose machine has
    `count` legs."""
    from lnbits.core.crud import create_account, create_wallet
    from lnbits.core.models import Account
    from lnbits.core.services.users import update_user_extensions
    from lnbits.db import insert_query, model_to_dict

    from satmachineadmin import crud
    from satmachineadmin.models import Leg, Machine

    account = Account(id=uuid.uuid4().hex, username=None)
    await create_account(account)
    await update_user_extensions(account.id, ["satmachineadmin"])
    wallet = await create_wallet(user_id=account.id, wallet_name="machine")
    moment = crud.now() - 86_400
    machine = Machine(
        id=crud.new_id(),
        operator_user_id=account.id,
        name="export bench",
        wallet_id=wallet.id,
        fiat_currency="GTQ",
        created_at=moment,
        updated_at=moment,
    )
    async with crud.transaction() as tx:
        await crud.insert_machine(tx, machine)
    written = 0
    while written < count:
        rows = [
            Leg(
                id=crud.new_id(),
                idempotency_key=f"bench-export:{written + i}",
                settlement_id=f"s{(written + i) // 10}",
                machine_id=machine.id,
                operator_user_id=account.id,
                client_id=f"c{(written + i) % 100}",
                leg_type="dca",
                status="completed",
                amount_sats=1_500,
                amount_fiat_minor=1_000,
                currency="GTQ",
                exchange_rate="150",
                destination=wallet.id,
                destination_kind="wallet",
                payment_hash=uuid.uuid4().hex * 2,
                created_at=moment + (written + i) // 50,
                updated_at=moment,
                completed_at=moment,
            )
            for i in range(min(20_000, count - written))
        ]
        async with crud.transaction() as tx:
            await tx.execute_many(
                insert_query("satmachineadmin.legs", rows[0]),
                [model_to_dict(r) for r in rows],
            )
        written += len(rows)
    return wallet.inkey, machine.id, account.id


async def main() -> None:
    inprocess.fix_btc_price()
    import httpx
    from lnbits.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        from satmachineadmin import crud

        await crud.db.execute("SELECT 1")
        started = time.perf_counter()
        key, machine_id, operator_id = await operator_with_legs(ARGS.legs)
        print(
            f"\nCSV export on {ARGS.db}: {ARGS.legs:,} legs written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as http:
            await http.put(
                "/api/v1/auth/first_install",
                json={
                    "username": "benchadmin",
                    "password": "secret1234",
                    "password_repeat": "secret1234",
                },
            )

            async def export() -> tuple[int, int]:
                rows = size = 0
                async with http.stream(
                    "GET",
                    "/satmachineadmin/api/v1/legs.csv",
                    headers={"X-Api-Key": key},
                    params={"machine_id": machine_id},
                ) as response:
                    assert response.status_code == 200, response.status_code
                    async for chunk in response.aiter_text():
                        rows += chunk.count("\n")
                        size += len(chunk)
                return rows, size

            started = time.perf_counter()
            rows, size = await export()
            elapsed = time.perf_counter() - started
        # Memory of the server side on a second export (tracemalloc slows Python
        # down: not timed).
        from satmachineadmin.services import reports

        streamed = 0
        tracemalloc.start()
        async for chunk in reports.legs_csv_stream(
            operator_id, {"machine_id": machine_id}
        ):
            streamed += chunk.count("\n")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert streamed == rows, (streamed, rows)
        exported = rows - 1  # the header
        assert exported == ARGS.legs, (exported, ARGS.legs)
        print(
            f"exported {exported:,} rows ({size / 1e6:.1f} MB) in {elapsed:.1f} s: "
            f"{exported / elapsed:,.0f} rows/s, peak Python memory during the export "
            f"{peak / 1e6:.1f} MB (server side, streamed)"
        )
    if PG is not None:
        PG.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
