"""Distribution engine benchmark (a script that prints tables, not a test).

1. Throughput: distribute one settlement to N = 10, 100, 1,000 LPs through real LNbits
   internal payments, next to N bare LNbits internal transfers (create_invoice +
   pay_invoice in a plain loop) in the same run. The ratio is the figure: the
   engine's overhead over LNbits' own cost per payment. Each size runs several
   rounds (5, or 3 above 200 LPs; engine and bare loop alternating); medians and
   the worst round are printed.
2. Planning: read the balances of 1,000 LPs and allocate a settlement, with 10k and
   with 1M historical legs in the table (it must not grow with history); also the
   plan written to the database.

Usage: bench/engine_bench.py [sqlite|postgres] [--history 1000000] [--sizes 10,100,1000]
"""

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import inprocess


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "db", nargs="?", default="sqlite", choices=["sqlite", "postgres"]
    )
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--history", type=int, default=1_000_000)
    return parser.parse_args()


ARGS = parse_args()
_, PG = inprocess.prepare(
    ARGS.db, {"SATMACHINE_ENGINE_AUTORUN": "0", "LOG_LEVEL": "ERROR"}
)


async def make_user(name: str):
    from lnbits.core.crud import create_account, create_wallet
    from lnbits.core.models import Account

    account = Account(id=uuid.uuid4().hex, username=None)
    await create_account(account)
    return account.id, await create_wallet(user_id=account.id, wallet_name=name)


async def machine_with_lps(n: int, deposit_minor: int):
    from lnbits.core.services import update_wallet_balance

    from satmachineadmin import crud
    from satmachineadmin.models import Client, LpPreferences, Machine

    operator_id, machine_wallet = await make_user("machine")
    moment = crud.now()
    machine = Machine(
        id=crud.new_id(),
        operator_user_id=operator_id,
        name=f"bench {n}",
        wallet_id=machine_wallet.id,
        fiat_currency="GTQ",
        created_at=moment,
        updated_at=moment,
    )
    lps = [await make_user(f"lp{i}") for i in range(n)]
    async with crud.transaction() as tx:
        await crud.insert_machine(tx, machine)
        for user_id, wallet in lps:
            await crud.upsert_lp_preferences(
                tx,
                LpPreferences(
                    user_id=user_id,
                    wallet_id=wallet.id,
                    created_at=moment,
                    updated_at=moment,
                ),
            )
            await crud.insert_client(
                tx,
                Client(
                    id=crud.new_id(),
                    machine_id=machine.id,
                    operator_user_id=operator_id,
                    user_id=user_id,
                    deposits_minor=deposit_minor,
                    created_at=moment,
                    updated_at=moment,
                ),
            )
    await update_wallet_balance(machine_wallet, 10_000_000)
    return machine, machine_wallet, lps


async def land(machine, principal: int, fiat_minor: int):
    from satmachineadmin.intake import land_settlement

    return await land_settlement(
        machine=machine,
        source="manual",
        external_id=uuid.uuid4().hex,
        tx_type="cash_out",
        fiat_amount_minor=fiat_minor,
        principal_sats=principal,
        fee_sats=0,
        wire_sats=principal,
    )


def rounds_for(n: int) -> int:
    """Single runs are noisy (small ones take well under a second, and PostgreSQL's
    own pace drifts): each size is repeated, engine and bare loop alternating, and
    medians are shown."""
    return 5 if n <= 200 else 3


async def bench_throughput(n: int) -> dict:
    rounds = [await throughput_round(n) for _ in range(rounds_for(n))]
    return {
        "n": n,
        "rounds": len(rounds),
        "engine_legs_per_s": statistics.median(r["engine_legs_per_s"] for r in rounds),
        "bare_per_s": statistics.median(r["bare_per_s"] for r in rounds),
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "worst_ratio": min(r["ratio"] for r in rounds),
        "handler_ms": statistics.median(r["handler_ms"] for r in rounds),
    }


async def throughput_round(n: int) -> dict:
    from lnbits.core.services import create_invoice, pay_invoice, update_wallet_balance

    from satmachineadmin import crud, distribution

    machine, machine_wallet, lps = await machine_with_lps(n, 100_000)
    settlement = await land(
        machine, principal=1_000 * n, fiat_minor=1_000 * n // 150 * 100
    )
    started = time.perf_counter()
    engine = asyncio.create_task(distribution.process_settlement(settlement.id))
    handler_ms = await listener_latency_while(engine, machine)
    status = await engine
    engine_seconds = time.perf_counter() - started
    assert status == "processed", status
    legs = [
        leg
        for leg in await crud.list_settlement_legs(settlement.id)
        if leg.status == "completed"
    ]
    assert len(legs) == n, len(legs)

    _, payer = await make_user("payer")
    await update_wallet_balance(payer, 10_000_000)
    started = time.perf_counter()
    for _, wallet in lps:
        invoice = await create_invoice(
            wallet_id=wallet.id, amount=1_000, memo="bare", internal=True
        )
        await pay_invoice(wallet_id=payer.id, payment_request=invoice.bolt11)
    bare_seconds = time.perf_counter() - started
    return {
        "engine_legs_per_s": n / engine_seconds,
        "bare_per_s": n / bare_seconds,
        "ratio": bare_seconds / engine_seconds,
        "handler_ms": handler_ms,
    }


async def listener_latency_while(engine: asyncio.Task, machine) -> float:
    """Median time the invoice listener's handler takes while a distribution pays."""
    from lnbits.core.models import Payment

    from satmachineadmin import tasks

    timings = []
    while not engine.done() and len(timings) < 50:
        payment = Payment(
            checking_id=uuid.uuid4().hex,
            payment_hash=uuid.uuid4().hex,
            # Not a machine wallet: the hand-off does one indexed lookup and stops,
            # so the probe does not add work to the distribution it is timing.
            wallet_id=uuid.uuid4().hex,
            amount=1_000,
            fee=0,
            bolt11="lnbc",
            status="success",
            extra={"source": "bitspire", "type": "cash_out"},
        )
        started = time.perf_counter()
        await tasks.on_invoice_paid(payment)
        timings.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return statistics.median(timings) if timings else float("nan")


async def add_history(machine, count: int, start: int) -> None:
    """Historical completed legs spread over the machine's LPs, written in bulk."""
    from satmachineadmin import crud
    from satmachineadmin.models import Leg

    clients = await crud.list_machine_clients_with_prefs(machine.id)
    batch = 20_000
    moment = crud.now() - 86_400
    written = 0
    while written < count:
        rows = []
        for i in range(min(batch, count - written)):
            client = clients[(written + i) % len(clients)]
            rows.append(
                Leg(
                    id=crud.new_id(),
                    idempotency_key=f"history:{start + written + i}",
                    settlement_id=f"hist{(written + i) // len(clients)}",
                    machine_id=machine.id,
                    operator_user_id=machine.operator_user_id,
                    client_id=client.id,
                    leg_type="dca",
                    status="completed",
                    amount_sats=10,
                    amount_fiat_minor=7,
                    currency="GTQ",
                    created_at=moment,
                    updated_at=moment,
                )
            )
        async with crud.transaction() as tx:
            from lnbits.db import insert_query, model_to_dict

            await tx.execute_many(
                insert_query("satmachineadmin.legs", rows[0]),
                [model_to_dict(r) for r in rows],
            )
        written += len(rows)


async def time_planning(machine, repeats: int = 15) -> tuple[float, float, float]:
    """Medians in ms: read the balances and allocate (the plan); build its legs; and
    write the whole plan to the database."""
    from satmachineadmin import crud
    from satmachineadmin.calculations import allocate_principal
    from satmachineadmin.engine import planning

    read_allocate, build, with_write = [], [], []
    for _ in range(repeats):
        settlement = await land(machine, principal=150_000, fiat_minor=100_000)
        started = time.perf_counter()
        clients = await crud.list_machine_clients_with_prefs(machine.id)
        recipients = planning.flow_recipients(clients)
        allocate_principal(150_000, 100_000, [c.remaining_minor for c in recipients])
        read_allocate.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        context = planning.PlanContext(
            settlement=settlement,
            machine=machine,
            rules=[],
            fee_wallet_id=None,
            moment=crud.now(),
        )
        planning.build_legs(context, clients)
        build.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await planning.ensure_plan(settlement, machine)
        with_write.append((time.perf_counter() - started) * 1000)
        # Keep balances from draining: this is a planning benchmark, not a payout one.
        await crud.db.execute(
            "UPDATE satmachineadmin.legs SET status = 'voided' WHERE settlement_id = :id",
            {"id": settlement.id},
        )
        await crud.db.execute(
            "UPDATE satmachineadmin.clients SET reserved_minor = 0 WHERE machine_id = :m",
            {"m": machine.id},
        )
    return (
        statistics.median(read_allocate),
        statistics.median(build),
        statistics.median(with_write),
    )


async def main() -> None:
    inprocess.fix_btc_price()
    from lnbits.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        print(f"\nsatmachineadmin engine benchmark on {ARGS.db}\n")
        print(
            f"{'LPs':>6} {'rounds':>7} {'engine legs/s':>14} {'bare LNbits/s':>14} "
            f"{'ratio':>7} {'worst':>7} {'listener ms':>12}"
        )
        for n in [int(x) for x in ARGS.sizes.split(",")]:
            row = await bench_throughput(n)
            print(
                f"{row['n']:>6} {row['rounds']:>7} {row['engine_legs_per_s']:>14.1f} "
                f"{row['bare_per_s']:>14.1f} {row['ratio']:>7.2f} "
                f"{row['worst_ratio']:>7.2f} {row['handler_ms']:>12.3f}"
            )

        machine, _, _ = await machine_with_lps(1_000, 10_000_000)
        print("\nplanning a settlement for 1,000 LPs (median of 15)\n")
        print(
            f"{'history legs':>13} {'balances+allocation ms':>23} "
            f"{'build legs ms':>14} {'read+build+write ms':>20}"
        )
        done = 0
        for target in (10_000, ARGS.history):
            await add_history(machine, target - done, done)
            done = target
            read_ms, build_ms, write_ms = await time_planning(machine)
            print(f"{target:>13,} {read_ms:>23.1f} {build_ms:>14.1f} {write_ms:>20.1f}")
    if PG is not None:
        PG.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
