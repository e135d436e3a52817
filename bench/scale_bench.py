"""Scale-out benchmark: 1 and 2 LNbits processes on one PostgreSQL (a script that
prints a table, not a test).

Real LNbits 1.6.2 servers (uvicorn, real HTTP, as scripts/run starts them; the
`Server` and `Postgres` of tests/servers.py) with the extension's engine, listener,
sweep and scheduler running, on one embedded PostgreSQL. The world is seeded once
over HTTP: --machines machines (20) of one operator, each with --lps flow-mode LPs
(30) funded far beyond the run, a platform fee and an operator commission split (so
a cash-out is LPs + 2 legs). Each scenario (1 process, then 2) starts from a copy of
that database (CREATE DATABASE ... TEMPLATE), so both see the same world.

Workload, per scenario, the way the chaos test's ATM plays a bitSpire cash-out (an
invoice on the machine wallet with the bitSpire `extra`, paid by a customer wallet;
one customer wallet per machine), every request to a server picked at random:
1. steady: cash-outs arriving at --rate per second (Poisson) across the machines for
   --steady-seconds; then the bench waits for them to be paid;
2. burst: --burst cash-outs sent as fast as --senders concurrent ATMs can, a backlog
   the engine drains.

Figures (a settlement counts as paid when the bench sees it `processed`: the engine
marks it so right after its last leg is paid; the bench polls every 0.2 s, which
bounds the latencies' resolution):
- legs/s over the run (first ATM payment to last settlement paid) and while the
  burst drains (the engine saturated: the scale-out ratio is 2 processes / 1 process
  of this figure; the steady phase only shows the arrival rate);
- latency from the ATM payment (its HTTP request answered) to its settlement paid,
  p50 / p95 / p99, at the steady rate and in the burst;
- drain: from the burst's first payment to its last settlement paid;
- CPU seconds per server process and for PostgreSQL (postmaster, its live backends
  and the ones that exited) over the scenario, and the cores that makes.
`uptime`'s load average is printed at the start and the end, and each scenario's
1-minute load at its start and end in its row: on a shared machine the figures mean
little when the load is above its 2 cores (the CPU column then shows the servers
starved), and a ratio is only fair between scenarios run under the same load.

The last line reads `scale-out ratio R, p95 latency S s` (S: steady-rate p95 with the
most processes). Settings: SATMACHINE_ENGINE_CONCURRENCY (machines one process pays
at a time) is passed through with --concurrency.

Usage: bench/scale_bench.py [--machines 20] [--lps 30] [--rate 0.25]
       [--steady-seconds 180] [--burst 500] [--processes 1,2] [--concurrency N]
Short run (proves it works; 10-15 min on a loaded machine, half of it seeding):
  --steady-seconds 30 --burst 40
"""

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import FIRST_INSTALL, Postgres, Server  # noqa: E402

API = "/satmachineadmin/api/v1"
RATE = 150  # sats per GTQ: the servers' fixed BTC price
MAX_MINT = 9_000_000  # LNbits credits at most this much at a time
LP_DEPOSIT = "20000.00"  # GTQ per LP: never runs out during a run
MAX_CASH_OUT_SATS = 150 * RATE * 105 // 100 + 1
POLL_SECONDS = 0.2
DRAIN_TIMEOUT = 3600.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--lps", type=int, default=30, help="flow-mode LPs per machine")
    parser.add_argument(
        "--rate", type=float, default=0.25, help="steady cash-outs per second"
    )
    parser.add_argument("--steady-seconds", type=float, default=180.0)
    parser.add_argument("--burst", type=int, default=500, help="cash-outs in the burst")
    parser.add_argument("--senders", type=int, default=8, help="concurrent ATMs")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="SATMACHINE_ENGINE_CONCURRENCY for the servers (default: the engine's)",
    )
    parser.add_argument("--seed", type=int, default=18)
    return parser.parse_args()


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; nan when there is nothing to rank."""
    if not values:
        return float("nan")
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(pct / 100 * len(ranked)) - 1))]


# ------------------------------------------------------------------ seeding


class Client:
    """HTTP to the servers; the seeding must work, every call of it."""

    def __init__(self, http: httpx.AsyncClient, urls: list[str]):
        self.http = http
        self.urls = urls
        self.token = ""

    async def must(
        self,
        method: str,
        path: str,
        *,
        key: Optional[str] = None,
        token: bool = False,
        body: Any = None,
    ) -> Any:
        headers = {"X-Forwarded-For": f"10.0.{random.randrange(250)}.7"}
        if key:
            headers["X-Api-Key"] = key
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = random.choice(self.urls) + path
        for attempt in range(5):
            try:
                response = await self.http.request(
                    method, url, headers=headers, json=body
                )
            except httpx.HTTPError:
                if attempt == 4:
                    raise
                await asyncio.sleep(1)
                continue
            break
        if response.status_code >= 400:
            raise RuntimeError(
                f"{method} {path}: {response.status_code} {response.text}"
            )
        return response.json()


async def seed(client: Client, args: argparse.Namespace) -> dict:
    """One operator, its machines, their LPs and deposits, a platform fee, an
    operator commission split and a funded customer wallet per machine."""
    data = await client.must(
        "PUT",
        "/api/v1/auth/first_install",
        body=FIRST_INSTALL,
    )
    client.token = data["access_token"]
    await client.must("PUT", "/api/v1/extension/satmachineadmin/enable", token=True)
    super_id = (await client.must("GET", "/api/v1/auth", token=True))["id"]

    async def wallet(user_id: str, name: str) -> dict:
        return await client.must(
            "POST",
            f"/users/api/v1/user/{user_id}/wallet",
            token=True,
            body={"name": name},
        )

    async def mint(target: dict, sats: int) -> None:
        while sats > 0:
            await client.must(
                "PUT",
                "/users/api/v1/balance",
                token=True,
                body={"id": target["id"], "amount": min(sats, MAX_MINT)},
            )
            sats -= MAX_MINT

    fee_wallet = await wallet(super_id, "platform fees")
    await client.must(
        "PUT",
        f"{API}/super/config",
        key=fee_wallet["adminkey"],
        body={"super_fee_fraction": "0.30", "fee_wallet_id": fee_wallet["id"]},
    )
    first = await client.must("POST", "/api/v1/account", body={"name": "operator"})
    operator_id = first["user"]
    commission = await wallet(operator_id, "commission")
    await client.must(
        "PUT",
        f"{API}/commission/splits",
        key=first["adminkey"],
        body={
            "machine_id": None,
            "legs": [{"target": commission["id"], "percent": "100", "label": "op"}],
        },
    )
    # Every cash-out of a scenario fits in its customer's wallet.
    per_machine = (
        int(args.rate * args.steady_seconds * 2) + args.burst
    ) // args.machines + 20
    limit = asyncio.Semaphore(8)

    async def add_machine(index: int) -> dict:
        async with limit:
            machine_wallet = first if index == 0 else await wallet(operator_id, "atm")
            machine = await client.must(
                "POST",
                f"{API}/machines",
                key=first["adminkey"],
                body={
                    "name": f"ATM {index}",
                    "wallet_id": machine_wallet["id"],
                    "fiat_currency": "GTQ",
                },
            )
            customer = await wallet(super_id, f"customers {index}")
            await mint(customer, per_machine * MAX_CASH_OUT_SATS)
        lps = await asyncio.gather(*(add_lp(machine, i) for i in range(args.lps)))
        return {
            "id": machine["id"],
            "inkey": machine_wallet["inkey"],
            "customer": customer["adminkey"],
            "lps": len(lps),
        }

    async def add_lp(machine: dict, index: int) -> str:
        async with limit:
            lp = await client.must("POST", "/api/v1/account", body={"name": "lp"})
            await client.must(
                "PUT",
                f"{API}/lp",
                key=lp["adminkey"],
                body={"wallet_id": lp["id"], "dca_mode": "flow"},
            )
            enrolled = await client.must(
                "POST",
                f"{API}/clients",
                key=first["adminkey"],
                body={
                    "machine_id": machine["id"],
                    "user_id": lp["user"],
                    "username": f"lp{index}",
                },
            )
            deposit = await client.must(
                "POST",
                f"{API}/deposits",
                key=first["adminkey"],
                body={"client_id": enrolled["id"], "amount": LP_DEPOSIT},
            )
            await client.must(
                "POST",
                f"{API}/deposits/{deposit['id']}/confirm",
                key=first["adminkey"],
            )
            return enrolled["id"]

    machines = []
    for index in range(args.machines):  # machine 0 first: its wallet is the key
        machines.append(await add_machine(index))
    return {"machines": machines}


# ------------------------------------------------------------------ the ATMs


@dataclass
class CashOut:
    phase: str
    paid_at: float  # monotonic: the ATM's payment answered
    done_at: Optional[float] = None


@dataclass
class Scenario:
    processes: int
    cash_outs: dict[str, CashOut] = field(default_factory=dict)  # payment hash ->
    failures: int = 0


async def cash_out(
    http: httpx.AsyncClient,
    scenario: Scenario,
    urls: list[str],
    machine: dict,
    rng: random.Random,
    phase: str,
) -> None:
    """One bitSpire cash-out at 150 sats per GTQ with a 5 % commission."""
    fiat_minor = rng.randrange(2000, 15001)
    principal = fiat_minor * RATE // 100
    fee = (principal * 5 + 50) // 100
    extra = {
        "source": "bitspire",
        "type": "cash_out",
        "wire_sats": principal + fee,
        "principal_sats": principal,
        "fee_sats": fee,
        "fiat_amount": f"{fiat_minor // 100}.{fiat_minor % 100:02d}",
        "currency": "GTQ",
        "exchange_rate": str(RATE),
        "txid": f"bs-{uuid.uuid4().hex[:16]}",
    }
    url = rng.choice(urls)
    try:
        invoice = await http.post(
            url + "/api/v1/payments",
            headers={"X-Api-Key": machine["inkey"]},
            json={
                "out": False,
                "amount": principal + fee,
                "memo": "bitSpire cash-out",
                "extra": extra,
            },
        )
        invoice.raise_for_status()
        payment_hash = invoice.json()["payment_hash"]
        paid = await http.post(
            url + "/api/v1/payments",
            headers={"X-Api-Key": machine["customer"]},
            json={"out": True, "bolt11": invoice.json()["bolt11"]},
        )
        paid.raise_for_status()
    except httpx.HTTPError as exc:
        scenario.failures += 1
        print(f"  cash-out failed: {exc!r}", file=sys.stderr)
        return
    scenario.cash_outs[payment_hash] = CashOut(phase, time.monotonic())


class Watcher:
    """Polls, in a task of its own, the settlements the engine has paid, and marks
    each cash-out done the first time it is seen paid."""

    def __init__(self, conn: asyncpg.Connection, scenario: Scenario):
        self.conn = conn
        self.scenario = scenario
        self.since = int(time.time()) - 1
        self.seen: set[str] = set()
        self.task: Optional[asyncio.Task] = None

    async def poll(self) -> None:
        rows = await self.conn.fetch(
            "SELECT payment_hash FROM satmachineadmin.settlements "
            "WHERE status = 'processed' AND processed_at >= $1",
            self.since,
        )
        moment = time.monotonic()
        for row in rows:
            payment_hash = row["payment_hash"]
            if payment_hash in self.seen:
                continue
            cash = self.scenario.cash_outs.get(payment_hash)
            if cash is not None:
                cash.done_at = moment
                self.seen.add(payment_hash)

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(POLL_SECONDS)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def wait_for(self, phase: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                c.done_at is not None
                for c in self.scenario.cash_outs.values()
                if c.phase == phase
            ):
                return True
            await asyncio.sleep(POLL_SECONDS / 2)
        return False


def cpu_seconds(process: psutil.Process, with_children: bool = False) -> float:
    """User + system CPU of a process; with its live children and the reaped ones."""
    try:
        times = process.cpu_times()
        total = times.user + times.system
        if with_children:
            total += times.children_user + times.children_system
            for child in process.children(recursive=True):
                try:
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
                except psutil.NoSuchProcess:
                    pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def postmaster(pg: Postgres) -> psutil.Process:
    pid_file = Path(pg.server.pgdata) / "postmaster.pid"
    return psutil.Process(int(pid_file.read_text().splitlines()[0]))


async def legs_per_settlement(conn: asyncpg.Connection, hashes: list[str]) -> int:
    row = await conn.fetchrow(
        "SELECT COUNT(*) AS n FROM satmachineadmin.legs l "
        "JOIN satmachineadmin.settlements s ON s.id = l.settlement_id "
        "WHERE l.status = 'completed' AND s.payment_hash = ANY($1::text[])",
        hashes,
    )
    return int(row["n"])


async def run_scenario(
    args: argparse.Namespace,
    root: Path,
    pg: Postgres,
    template: str,
    world: dict,
    processes: int,
) -> dict:
    name = f"scale{processes}"
    pg.server.psql(f"CREATE DATABASE {name} TEMPLATE {template};")
    url = pg.server.get_uri(name).replace("postgresql://", "postgres://")
    env = {"LOG_LEVEL": "WARNING"}
    if args.concurrency is not None:
        env["SATMACHINE_ENGINE_CONCURRENCY"] = str(args.concurrency)
    servers = [
        Server(root / f"{name}-{i}", url, lease_seconds=120, extra_env=env)
        for i in range(processes)
    ]
    scenario = Scenario(processes)
    load_at_start = os.getloadavg()[0]
    conn = await asyncpg.connect(pg.dsn(name))
    watcher = Watcher(conn, scenario)
    try:
        for server in servers:
            server.start()
        urls = [s.url for s in servers]
        watcher.start()
        pg_process = postmaster(pg)
        assert all(s.process is not None for s in servers)
        server_processes = [psutil.Process(s.process.pid) for s in servers]  # type: ignore[union-attr]
        cpu0 = [cpu_seconds(p) for p in server_processes]
        pg_cpu0 = cpu_seconds(pg_process, with_children=True)
        wall0 = time.monotonic()
        rng = random.Random(f"{args.seed}:{processes}")
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            # 1. steady arrivals (Poisson), each cash-out a task of its own.
            started = time.monotonic()
            tasks = []
            next_at = started
            while True:
                next_at += rng.expovariate(args.rate)
                if next_at - started > args.steady_seconds:
                    break
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                machine = rng.choice(world["machines"])
                tasks.append(
                    asyncio.create_task(
                        cash_out(http, scenario, urls, machine, rng, "steady")
                    )
                )
            await asyncio.gather(*tasks)
            steady_ok = await watcher.wait_for("steady", DRAIN_TIMEOUT)

            # 2. the burst: a backlog built as fast as the ATMs can send.
            burst_start = time.monotonic()
            queue = list(range(args.burst))

            async def sender(index: int) -> None:
                sender_rng = random.Random(f"{args.seed}:{processes}:{index}")
                while queue:
                    queue.pop()
                    machine = sender_rng.choice(world["machines"])
                    await cash_out(http, scenario, urls, machine, sender_rng, "burst")

            await asyncio.gather(*(sender(i) for i in range(args.senders)))
            sent_at = time.monotonic()
            burst_ok = await watcher.wait_for("burst", DRAIN_TIMEOUT)
        await watcher.stop()
        wall = time.monotonic() - wall0
        cpu = [cpu_seconds(p) - c for p, c in zip(server_processes, cpu0, strict=True)]
        pg_cpu = cpu_seconds(pg_process, with_children=True) - pg_cpu0
        errored = await conn.fetchval(
            "SELECT COUNT(*) FROM satmachineadmin.settlements "
            "WHERE status NOT IN ('processed', 'rejected')"
        )
    finally:
        await watcher.stop()
        await conn.close()
        for server in servers:
            server.stop()

    def of(phase: str) -> list[CashOut]:
        return [c for c in scenario.cash_outs.values() if c.phase == phase]

    def latencies(phase: str) -> list[float]:
        return [c.done_at - c.paid_at for c in of(phase) if c.done_at is not None]

    conn = await asyncpg.connect(pg.dsn(name))
    try:
        hashes = {
            phase: [h for h, c in scenario.cash_outs.items() if c.phase == phase]
            for phase in ("steady", "burst")
        }
        legs = {p: await legs_per_settlement(conn, h) for p, h in hashes.items()}
    finally:
        await conn.close()
    everything = list(scenario.cash_outs.values())
    first_paid = min((c.paid_at for c in everything), default=wall0)
    last_done = max((c.done_at or 0.0 for c in everything), default=wall0)
    burst = of("burst")
    burst_first = min((c.paid_at for c in burst), default=burst_start)
    burst_last = max((c.done_at or 0.0 for c in burst), default=burst_start)
    drain = burst_last - burst_first
    return {
        "processes": processes,
        "cash_outs": len(everything),
        "failures": scenario.failures,
        "not_processed": int(errored),
        "complete": steady_ok and burst_ok,
        "legs": legs["steady"] + legs["burst"],
        "run_legs_per_s": (legs["steady"] + legs["burst"]) / (last_done - first_paid),
        "drain_legs_per_s": legs["burst"] / drain if drain > 0 else float("nan"),
        "drain_s": drain,
        "send_s": sent_at - burst_start,
        "steady": latencies("steady"),
        "burst": latencies("burst"),
        "cpu": cpu,
        "pg_cpu": pg_cpu,
        "wall": wall,
        "load": (load_at_start, os.getloadavg()[0]),
    }


def print_table(args: argparse.Namespace, rows: list[dict]) -> None:
    print(
        f"\n{args.machines} machines x {args.lps} flow LPs; steady {args.rate}/s for "
        f"{args.steady_seconds:.0f} s, burst {args.burst} cash-outs "
        f"({args.senders} senders); engine concurrency "
        f"{args.concurrency if args.concurrency is not None else 'default'}\n"
    )
    print(
        f"{'procs':>5} {'cash-outs':>9} {'legs':>6} {'run legs/s':>10} "
        f"{'drain legs/s':>12} {'drain s':>8} {'steady p50/p95/p99 s':>21} "
        f"{'burst p50/p95/p99 s':>21} {'CPU s per process':>18} {'PG CPU s':>9} "
        f"{'cores':>6} {'load 1-min':>11}"
    )
    for row in rows:
        steady = "/".join(f"{percentile(row['steady'], p):.1f}" for p in (50, 95, 99))
        burst = "/".join(f"{percentile(row['burst'], p):.1f}" for p in (50, 95, 99))
        cpu = "+".join(f"{c:.0f}" for c in row["cpu"])
        cores = (sum(row["cpu"]) + row["pg_cpu"]) / row["wall"]
        print(
            f"{row['processes']:>5} {row['cash_outs']:>9} {row['legs']:>6} "
            f"{row['run_legs_per_s']:>10.1f} {row['drain_legs_per_s']:>12.1f} "
            f"{row['drain_s']:>8.1f} {steady:>21} {burst:>21} {cpu:>18} "
            f"{row['pg_cpu']:>9.0f} {cores:>6.2f} "
            f"{row['load'][0]:>5.1f}-{row['load'][1]:<5.1f}"
        )
        if row["failures"] or row["not_processed"] or not row["complete"]:
            print(
                f"      ! {row['failures']} cash-outs failed to send, "
                f"{row['not_processed']} settlements not processed at the end"
                + ("" if row["complete"] else ", drain timed out")
            )


async def main() -> None:
    args = parse_args()
    counts = [int(x) for x in args.processes.split(",")]
    print(f"load at start: {load_average()}")
    root = Path(tempfile.mkdtemp(prefix="satmachine-scale-"))
    pg = Postgres(root / "pg")
    try:
        template = "seeded"
        url = pg.create_database(template)
        seeder = Server(
            root / "seed", url, lease_seconds=120, extra_env={"LOG_LEVEL": "WARNING"}
        )
        started = time.monotonic()
        seeder.start()
        try:
            async with httpx.AsyncClient(timeout=120) as http:
                world = await seed(Client(http, [seeder.url]), args)
        finally:
            seeder.stop()
        print(
            f"seeded {args.machines} machines x {args.lps} LPs over HTTP in "
            f"{time.monotonic() - started:.0f} s"
        )
        rows = []
        for processes in counts:
            row = await run_scenario(args, root, pg, template, world, processes)
            rows.append(row)
            print(
                f"  {processes} process(es): {row['cash_outs']} cash-outs, "
                f"{row['legs']} legs in {row['wall']:.0f} s"
            )
        print_table(args, rows)
    finally:
        pg.cleanup()
    print(f"load at end: {load_average()}")
    base = rows[0]["drain_legs_per_s"]
    ratio = rows[-1]["drain_legs_per_s"] / base if base else float("nan")
    p95 = percentile(rows[-1]["steady"], 95)
    print(f"scale-out ratio {ratio:.2f}, p95 latency {p95:.1f} s")


if __name__ == "__main__":
    # Each line as it comes, also into a file: a run takes many minutes.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    asyncio.run(main())
