"""Installed the way an LNbits admin installs it: scripts/release builds the archives and
the manifest, a local HTTP server publishes them, and a real LNbits 1.6.2 started
without the extension adds the manifest as an extension source (admin API) and installs
through its own install endpoint (download, sha256 check, unzip, migrations).

- a fresh install, enabled for its users, pays one cash-out end to end;
- the previous release, in use, upgraded in place to this one through the same
  installer: its data kept, and the next cash-out paid;
- v1 (Atitlanio/satmachineadmin, dbversion 2, its tables holding LPs) upgraded by
  installing this release: the LPs and their balances are on the API.

Which run where (SATMACHINE_INSTALL_TESTS): unset, the SQLite pass runs the first and
the PostgreSQL pass the second; `side` runs the first two (a full scripts/test sets it
for its postgres job, and `none` for the sqlite one: each runs once per suite);
`all` runs all three; `none` none. The previous release is
SATMACHINE_PREVIOUS_RELEASE (a git ref), by default the newest
`v*` tag, else the last commit before m003 existed (what a release with m001/m002 is).
"""

import http.server
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
from servers import REPO, Server
from test_process_faults import API, Api, first_install, play, seed_world
from two_nodes import database_url

MANIFEST = "extensions.json"
DB_KIND = os.environ.get("SATMACHINE_TEST_DB", "sqlite")
# Each test starts a real LNbits server (about 30 s on a busy 2-core machine), so each
# runs once per suite, not once per database (installing does not depend on the
# database; the migrations it runs are tested on both in test_upgrade_v1.py and
# test_migrations.py).
MODE = os.environ.get("SATMACHINE_INSTALL_TESTS", "")


def in_pass(kind: Optional[str]) -> Any:
    runs = (
        MODE == "all"
        or (MODE == "side" and kind is not None)
        or (MODE == "" and DB_KIND == kind)
    )
    return pytest.mark.skipif(
        not runs,
        reason=f"runs in the {kind or 'SATMACHINE_INSTALL_TESTS=all'} pass "
        f"(SATMACHINE_INSTALL_TESTS={MODE or 'unset'}; =side: the first two, "
        "=all: all three)",
    )


def previous_release() -> str:
    chosen = os.environ.get("SATMACHINE_PREVIOUS_RELEASE")
    if chosen:
        return chosen
    tags = subprocess.run(
        ["git", "tag", "--list", "v*", "--sort=-v:refname"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if tags:
        return tags[0]
    first_m003 = subprocess.run(
        [
            "git",
            "log",
            "--reverse",
            "--format=%H",
            "-S",
            "async def m003_",
            "--",
            "migrations.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    return f"{first_m003}^"


@contextmanager
def published() -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1: (folder, its base URL)."""
    folder = Path(tempfile.mkdtemp(prefix="satmachine-release-"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def release(folder: Path, base_url: str, ref: Optional[str] = None) -> dict:
    """scripts/release into the folder; the manifest entry it added."""
    command = [str(REPO / "scripts" / "release"), "--base-url", base_url]
    command += ["--out", str(folder)] + (["--ref", ref] if ref else [])
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return ours(json.loads((folder / MANIFEST).read_text()))[-1]


def ours(manifest: dict) -> list[dict]:
    """The manifest's satmachineadmin releases (it also lists the companion's)."""
    return [e for e in manifest["extensions"] if e["id"] == "satmachineadmin"]


@contextmanager
def lnbits_without_extension() -> Iterator[tuple[Server, Api]]:
    root = Path(tempfile.mkdtemp(prefix="satmachine-install-"))
    url, own_pg = database_url(root)
    server = Server(root, url, with_extension=False)
    try:
        server.start()
        api = Api(server)
        first_install(api)
        yield server, api
    except BaseException:
        print(server.tail(80))
        raise
    finally:
        server.stop()
        if own_pg is not None:
            own_pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def add_source(api: Api, manifest_url: str) -> None:
    """Settings > Extensions > extension sources: this manifest only (the default
    GitHub ones cannot be reached offline)."""
    api.call(
        "PATCH",
        "/admin/api/v1/settings",
        token=True,
        body={"lnbits_extensions_manifests": [manifest_url]},
    )


def install(api: Api, manifest_url: str, entry: dict) -> dict:
    """What the Extensions page does: list the releases of the id from the sources,
    then install the chosen one through LNbits' install endpoint."""
    releases = api.call("GET", "/api/v1/extension/satmachineadmin/releases", token=True)
    chosen = [
        r
        for r in releases
        if r["version"] == entry["version"] and r["archive"] == entry["archive"]
    ]
    assert chosen, releases
    assert chosen[0]["hash"] == entry["hash"]
    assert chosen[0]["source_repo"] == manifest_url
    return api.call(
        "POST",
        "/api/v1/extension",
        token=True,
        body={
            "ext_id": "satmachineadmin",
            "archive": entry["archive"],
            "source_repo": manifest_url,
            "version": entry["version"],
        },
    )


def cash_out(api: Api, world: dict, seed: int) -> dict:
    """One ATM cash-out over LNbits' payments API, waited for until it is processed:
    its settlement."""
    key = world["machine_wallet"]["inkey"]
    before = {s["id"] for s in api.call("GET", f"{API}/settlements", key=key)}
    play(api, world, random.Random(seed), "cash_out")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = api.call("GET", f"{API}/settlements", key=key)
        new = [s for s in rows if s["id"] not in before]
        if new and new[0]["status"] == "processed":
            return new[0]
        time.sleep(0.5)
    raise AssertionError(f"the cash-out was not processed: {rows}")


def lp_balances(api: Api, world: dict) -> dict[str, Any]:
    key = world["machine_wallet"]["adminkey"]
    return {
        lp["client"]: api.call("GET", f"{API}/clients/{lp['client']}/balance", key=key)
        for lp in world["lps"]
    }


@in_pass("sqlite")
def test_fresh_install_from_the_manifest_pays_a_cash_out():
    with published() as (folder, base_url), lnbits_without_extension() as (_, api):
        entry = release(folder, base_url)
        manifest_url = f"{base_url}/{MANIFEST}"
        add_source(api, manifest_url)
        # Not there before it is installed.
        assert httpx.get(api.server.url + f"{API}/machines").status_code == 404

        installed = install(api, manifest_url, entry)
        assert installed["code"] == "satmachineadmin"
        assert installed["name"] == "Sat Machine Admin"

        world = seed_world(api, lps=2)
        settlement = cash_out(api, world, seed=1)
        assert settlement["status"] == "processed"
        paid = sum(api.balance(lp["wallet"]) for lp in world["lps"])
        assert paid > 0
        assert paid == sum(b["total_sats"] for b in lp_balances(api, world).values())


@in_pass("postgres")
def test_previous_release_upgraded_in_place_through_the_installer_keeps_its_data():
    previous = previous_release()
    with published() as (folder, base_url), lnbits_without_extension() as (_, api):
        manifest_url = f"{base_url}/{MANIFEST}"
        old = release(folder, base_url, ref=previous)
        add_source(api, manifest_url)
        install(api, manifest_url, old)
        world = seed_world(api, lps=2)
        first = cash_out(api, world, seed=2)
        key = world["machine_wallet"]["adminkey"]
        balances = lp_balances(api, world)
        lp_sats = [api.balance(lp["wallet"]) for lp in world["lps"]]
        detail = api.call("GET", f"{API}/settlements/{first['id']}", key=key)

        new = release(folder, base_url)
        listed = ours(json.loads((folder / MANIFEST).read_text()))
        assert [e["version"] for e in listed] == [old["version"], new["version"]]
        assert new["version"] != old["version"]
        installed = install(api, manifest_url, new)
        assert installed["code"] == "satmachineadmin"
        # Everything the previous release held, as it was.
        assert lp_balances(api, world) == balances
        assert [api.balance(lp["wallet"]) for lp in world["lps"]] == lp_sats
        again = api.call("GET", f"{API}/settlements/{first['id']}", key=key)
        assert again["status"] == "processed"
        assert [leg["id"] for leg in again["legs"]] == [
            leg["id"] for leg in detail["legs"]
        ]
        # And this release runs on it: an LP tops up, the next cash-out pays them,
        # with what m004 adds.
        deposit = api.call(
            "POST",
            f"{API}/deposits",
            key=key,
            body={"client_id": world["lps"][0]["client"], "amount": "500.00"},
        )
        api.call("POST", f"{API}/deposits/{deposit['id']}/confirm", key=key)
        second = cash_out(api, world, seed=3)
        legs = api.call("GET", f"{API}/settlements/{second['id']}", key=key)["legs"]
        assert any(leg.get("sent_sats") for leg in legs), legs
        after = lp_balances(api, world)
        assert sum(b["total_sats"] for b in after.values()) > sum(
            b["total_sats"] for b in balances.values()
        )


@asynccontextmanager
async def server_databases(server: Server, *names: str) -> AsyncIterator[dict]:
    """LNbits databases of a server process, opened from this one."""
    from lnbits.db import Database
    from lnbits.settings import settings

    saved = settings.lnbits_data_folder, settings.lnbits_database_url
    settings.lnbits_data_folder = server.env["LNBITS_DATA_FOLDER"]
    settings.lnbits_database_url = server.env.get("LNBITS_DATABASE_URL")
    try:
        dbs = {name: Database(name) for name in names}
    finally:
        settings.lnbits_data_folder, settings.lnbits_database_url = saved
    try:
        yield dbs
    finally:
        for db in dbs.values():
            await db.engine.dispose()


@in_pass(None)
async def test_v1_install_upgraded_by_installing_this_release_pays_its_lps():
    """An LNbits running v1 (dbversion 2, v1's tables with LPs, deposits, payments and
    its Lamassu configuration) installs this release from the manifest: the LPs are
    listed with the balances v1 showed, the import is on the page, and the next
    cash-out at the machine made of v1's configuration pays them."""
    import v1_install as v1

    with (
        published() as (folder, base_url),
        lnbits_without_extension() as (
            server,
            api,
        ),
    ):
        operator_id, source = api.user()
        commission = api.wallet(operator_id, "commission")
        lps = [api.user() for _ in range(2)]
        async with server_databases(server, "database", "ext_satmachineadmin") as dbs:
            async with dbs["database"].connect() as core:
                await core.execute(
                    "INSERT INTO dbversions (db, version) VALUES ('satmachineadmin', 2)"
                )
            async with dbs["ext_satmachineadmin"].connect() as conn:
                await v1.create_schema(conn, "satmachineadmin")
                for index, (user_id, wallet) in enumerate(lps):
                    cid = f"cl-{index}"
                    await v1.write(
                        conn,
                        "satmachineadmin",
                        "dca_clients",
                        {
                            "id": cid,
                            "user_id": user_id,
                            "wallet_id": wallet["id"],
                            "username": f"lp{index}",
                            "dca_mode": "flow",
                            "fixed_mode_daily_limit": None,
                            "status": "active",
                            "created_at": v1.at(1),
                            "updated_at": v1.at(1),
                        },
                    )
                    await v1.write(
                        conn,
                        "satmachineadmin",
                        "dca_deposits",
                        {
                            "id": f"dep-{index}",
                            "client_id": cid,
                            "amount": 300 + 100 * index,
                            "currency": "GTQ",
                            "status": "confirmed",
                            "notes": None,
                            "created_at": v1.at(2),
                            "confirmed_at": v1.at(2),
                        },
                    )
                    await v1.write(
                        conn,
                        "satmachineadmin",
                        "dca_payments",
                        {
                            "id": f"pay-{index}",
                            "client_id": cid,
                            "amount_sats": 15_000,
                            "amount_fiat": 100,
                            "exchange_rate": 150.0,
                            "transaction_type": "flow",
                            "lamassu_transaction_id": None,
                            "payment_hash": None,
                            "status": "confirmed",
                            "created_at": v1.at(3),
                            "transaction_time": v1.at(3),
                        },
                    )
                await v1.write(
                    conn,
                    "satmachineadmin",
                    "lamassu_config",
                    {
                        "id": "cfg",
                        "host": "lamassu.example.com",
                        "port": 5432,
                        "database_name": "lamassu",
                        "username": "readonly",
                        "password": "v1-plaintext",
                        "source_wallet_id": source["id"],
                        "commission_wallet_id": commission["id"],
                        "is_active": True,
                        "use_ssh_tunnel": False,
                        "ssh_port": 22,
                        "created_at": v1.at(1),
                        "updated_at": v1.at(1),
                    },
                )

        manifest_url = f"{base_url}/{MANIFEST}"
        add_source(api, manifest_url)
        install(api, manifest_url, release(folder, base_url))

        key = source["adminkey"]
        machines = api.call("GET", f"{API}/machines", key=key)
        assert [(m["id"], m["wallet_id"]) for m in machines] == [
            ("v1-cfg", source["id"])
        ]
        clients = api.call(
            "GET", f"{API}/clients", key=key, params={"machine_id": "v1-cfg"}
        )
        assert sorted(c["id"] for c in clients) == ["cl-0", "cl-1"]
        for index in range(2):
            balance = api.call("GET", f"{API}/clients/cl-{index}/balance", key=key)
            # v1 showed 300 - 100 and 400 - 100 GTQ.
            assert balance["remaining_balance"] == f"{200 + 100 * index}.00", balance
        health = api.call("GET", f"{API}/health", key=source["inkey"])
        assert health["v1_import"]["lps"] == 2, health
        lamassu = api.call("GET", f"{API}/lamassu/config", key=key)
        assert lamassu["host"] == "lamassu.example.com" and lamassu["password_set"]

        # The machine made of v1's configuration pays v1's LPs.
        super_id = api.call("GET", "/api/v1/auth", token=True)["id"]
        customer = api.wallet(super_id, "ATM customers")
        api.mint(customer, 1_000_000)
        api.mint(source, 100_000)
        world = {"machine_wallet": source, "customer": customer}
        before = [api.balance(wallet) for _, wallet in lps]
        cash_out(api, world, seed=4)
        after = [api.balance(wallet) for _, wallet in lps]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
