"""Migrations run on a database that already holds data, as an upgrade meets it.

Each test makes a database of its own (a SQLite file in a temporary folder, or a new
database on the session's PostgreSQL), runs the migrations up to the one before,
writes rows the way that version wrote them, runs the migration under test and checks
every row it should have kept, changed or refused.

`test_every_migration_keeps_the_data_of_the_version_before` is the harness every
migration goes through, found by its `mNNN_` name (a new one needs no line here): at
version N-1 every table holds rows in every column, migration N runs, every value is
as it was unless CHANGES lists it. Migration-specific rewrites get a test of their own
beside it (m002 below; m004 in test_external_lightning.py; the v1 upgrade, m003 and
m005, in test_upgrade_v1.py and test_install.py).
"""

import os
import re
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import inprocess  # scripts/, on the path tests/conftest.py sets
import pytest

# Not imported from conftest: with tests/browser collected too, `conftest` may name
# the browser's.
DB_KIND = os.environ.get("SATMACHINE_TEST_DB", "sqlite")

OPERATOR = "op" + "0" * 30
UUID_REF = "0f8fad5b-d9cb-469f-a165-70867728950e"


@asynccontextmanager
async def fresh_databases(tmp_path: Any, *names: str):
    """Empty databases LNbits' way (`ext_<id>`: one SQLite file each in a temporary
    folder, or schemas of one new PostgreSQL database), apart from the suite's."""
    from lnbits.db import Database
    from lnbits.settings import settings

    if DB_KIND == "postgres":
        name = f"migration_{uuid.uuid4().hex[:10]}"
        inprocess.PG_SERVER.psql(f"CREATE DATABASE {name};")
        saved = settings.lnbits_database_url
        settings.lnbits_database_url = inprocess.PG_SERVER.get_uri(name).replace(
            "postgresql://", "postgres://"
        )
        try:
            dbs = {n: Database(n) for n in names}
        finally:
            settings.lnbits_database_url = saved
    else:
        saved = settings.lnbits_data_folder
        settings.lnbits_data_folder = str(tmp_path)
        try:
            dbs = {n: Database(n) for n in names}
        finally:
            settings.lnbits_data_folder = saved
    try:
        yield dbs
    finally:
        for db in dbs.values():
            await db.engine.dispose()


@asynccontextmanager
async def fresh_database(tmp_path: Any):
    """An empty `ext_satmachineadmin` database LNbits' way, apart from the suite's."""
    async with fresh_databases(tmp_path, "ext_satmachineadmin") as dbs:
        yield dbs["ext_satmachineadmin"]


def numbered_migrations() -> list[tuple[int, Any]]:
    """(number, function) of every `mNNN_` migration, in the order LNbits runs them
    (core/helpers.py run_migration: the module's order, each number above the
    installation's version)."""
    from satmachineadmin import migrations

    found = []
    for key, function in vars(migrations).items():
        match = re.match(r"^m(\d\d\d)_", key)
        if match:
            found.append((int(match.group(1)), function))
    return found


async def migrate(conn: Any, after: int = 0, upto: int = 999) -> None:
    """Run the migrations numbered after..upto on one connection, as LNbits does."""
    for number, function in numbered_migrations():
        if after < number <= upto:
            await function(conn)


def _settlement(
    sid: str, machine: str, source: str, external_id: str, status: str, at: int
):
    from satmachineadmin.models import Settlement

    return Settlement(
        id=sid,
        machine_id=machine,
        operator_user_id=OPERATOR,
        source=source,
        external_id=external_id,
        tx_type="cash_out",
        status=status,
        fiat_amount_minor=1_000,
        currency="GTQ",
        wire_sats=1_500,
        principal_sats=1_500,
        created_at=at,
        updated_at=at,
    )


async def test_m002_claims_every_landed_transaction_and_holds_unpaid_duplicates(
    app, tmp_path
):
    from satmachineadmin import migrations
    from satmachineadmin.models import Client, Leg, Machine

    async with fresh_database(tmp_path) as db:
        await migrations.m001_initial_schema(db)
        for mid in ("m1", "m2"):
            machine = Machine(
                id=mid,
                operator_user_id=OPERATOR,
                name=mid,
                wallet_id=f"wallet-{mid}",
                fiat_currency="GTQ",
                created_at=1,
                updated_at=1,
            )
            # As the version before m002 wrote it: without the columns m002 adds.
            values = machine.dict(exclude={"rate_band_percent"})
            await db.execute(
                f"INSERT INTO satmachineadmin.machines ({', '.join(values)}) "
                f"VALUES ({', '.join(':' + k for k in values)})",
                values,
            )
        rows = [
            # A Lamassu transaction paid at m1, landed again at m2 (device moved).
            _settlement("s-lam-1", "m1", "lamassu", "tx-1", "processed", 10),
            _settlement("s-lam-2", "m2", "lamassu", "tx-1", "pending", 20),
            # Entered by hand (a UUID: a Lamassu id), then landed by the poller.
            _settlement("s-man-uuid", "m1", "manual", UUID_REF, "processed", 30),
            _settlement("s-lam-uuid", "m1", "lamassu", UUID_REF, "errored", 40),
            # A bitSpire txid, then entered by hand at the same machine.
            _settlement("s-bit", "m1", "bitspire", "atm-7", "processed", 50),
            _settlement("s-man-bit", "m1", "manual", "atm-7", "pending", 60),
            # Receipt numbers per machine: two transactions.
            _settlement("s-man-0001-a", "m1", "manual", "0001", "pending", 70),
            _settlement("s-man-0001-b", "m2", "manual", "0001", "pending", 80),
            # A duplicate already partly paid stays history; a rejection holds no key.
            _settlement("s-lam-3", "m1", "lamassu", "tx-3", "processed", 90),
            _settlement("s-lam-3b", "m2", "lamassu", "tx-3", "processing", 100),
            _settlement("s-rej", "m1", "bitspire", "atm-9", "rejected", 110),
            _settlement("s-bit-9", "m2", "bitspire", "atm-9", "pending", 120),
        ]
        for row in rows:
            await db.insert("satmachineadmin.settlements", row)
        leg = Leg(
            id="leg-paid",
            idempotency_key="s-lam-3b:v0:dca",
            settlement_id="s-lam-3b",
            machine_id="m2",
            operator_user_id=OPERATOR,
            leg_type="dca",
            status="completed",
            amount_sats=1_500,
            created_at=100,
            updated_at=100,
        )
        # As the version before m002 wrote it: without the columns m003 adds.
        values = leg.dict(exclude={"sent_sats", "fee_msat", "in_flight_since"})
        await db.execute(
            f"INSERT INTO satmachineadmin.legs ({', '.join(values)}) "
            f"VALUES ({', '.join(':' + k for k in values)})",
            values,
        )
        for cid, deposits, reserved in (("c-over", 500, 1_000), ("c-ok", 500, 200)):
            await db.insert(
                "satmachineadmin.clients",
                Client(
                    id=cid,
                    machine_id="m1",
                    operator_user_id=OPERATOR,
                    user_id=f"user-{cid}",
                    deposits_minor=deposits,
                    reserved_minor=reserved,
                    created_at=1,
                    updated_at=1,
                ),
            )

        await migrations.m002_every_sat_held_by_the_database(db)

        statuses = {
            r["id"]: r["status"]
            for r in await db.fetchall(
                "SELECT id, status FROM satmachineadmin.settlements"
            )
        }
        assert statuses == {
            "s-lam-1": "processed",
            "s-lam-2": "held",
            "s-man-uuid": "processed",
            "s-lam-uuid": "held",
            "s-bit": "processed",
            "s-man-bit": "held",
            "s-man-0001-a": "pending",
            "s-man-0001-b": "pending",
            "s-lam-3": "processed",
            "s-lam-3b": "processing",
            "s-rej": "rejected",
            "s-bit-9": "pending",
        }
        held = await db.fetchone(
            "SELECT error FROM satmachineadmin.settlements WHERE id = 's-lam-2'"
        )
        assert "possible duplicate" in held["error"] and "s-lam-1" in held["error"]
        keys = {
            r["key"]: r["settlement_id"]
            for r in await db.fetchall(
                "SELECT key, settlement_id FROM satmachineadmin.transaction_keys"
            )
        }
        assert keys[f"lamassu:{OPERATOR}:tx-1"] == "s-lam-1"
        assert keys[f"lamassu:{OPERATOR}:{UUID_REF}"] == "s-man-uuid"
        assert keys["bitspire:m1:atm-7"] == "s-bit"
        assert keys["manual:m1:0001"] == "s-man-0001-a"
        assert keys["manual:m2:0001"] == "s-man-0001-b"
        assert f"lamassu:{OPERATOR}:0001" not in keys  # not a UUID: no Lamassu key
        assert keys["bitspire:m2:atm-9"] == "s-bit-9"  # a rejection holds nothing

        flags = {
            r["id"]: bool(r["overspent_before_m002"])
            for r in await db.fetchall(
                "SELECT id, overspent_before_m002 FROM satmachineadmin.clients"
            )
        }
        assert flags == {"c-over": True, "c-ok": False}
        # The overspent LP's row stays writable: a payment of theirs is recorded.
        await db.execute(
            "UPDATE satmachineadmin.clients SET sats_received = sats_received + 1, "
            "reserved_minor = reserved_minor - 100 WHERE id = 'c-over'"
        )
        if DB_KIND == "postgres":
            from sqlalchemy.exc import IntegrityError

            with pytest.raises(IntegrityError):
                await db.execute(
                    "UPDATE satmachineadmin.clients SET reserved_minor = 600 "
                    "WHERE id = 'c-ok'"
                )
        row = await db.fetchone(
            "SELECT reserved_minor FROM satmachineadmin.clients WHERE id = 'c-ok'"
        )
        assert row["reserved_minor"] == 200


# ------------------------------------------------------------- every migration
#
# The harness: for each migration N (found in migrations.py, so a new one is included
# without a line here), a database at version N-1 holding rows in every table and
# every column, upgraded by N: every row that was there is there, every value as it
# was, unless CHANGES says the migration rewrites it on purpose.

ROWS_PER_TABLE = 2
# Migration number -> {table: columns it may rewrite on a generic row}.
CHANGES: dict[int, dict[str, set[str]]] = {}


async def _columns(conn: Any) -> dict[str, dict[str, str]]:
    """table -> column -> kind ('text', 'int', 'bool') of the extension's schema."""
    from lnbits.db import SQLITE

    found: dict[str, dict[str, str]] = {}
    if conn.type == SQLITE:
        tables = await conn.fetchall(
            "SELECT name FROM satmachineadmin.sqlite_master WHERE type = 'table'"
        )
        for table in tables:
            name = table["name"]
            rows = await conn.fetchall(f"PRAGMA satmachineadmin.table_info({name})")
            found[name] = {r["name"]: r["type"].lower() for r in rows}
    else:
        rows = await conn.fetchall(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'satmachineadmin'"
        )
        for r in rows:
            found.setdefault(r["table_name"], {})[r["column_name"]] = r["data_type"]

    def kind(sql_type: str) -> str:
        if "bool" in sql_type:
            return "bool"
        if "int" in sql_type:
            return "int"
        return "text"

    return {
        table: {column: kind(t) for column, t in columns.items()}
        for table, columns in found.items()
    }


def _value(table: str, column: str, kind: str, index: int) -> Any:
    if kind == "bool":
        return index % 2 == 1
    if kind == "int":
        # The same in every integer column of a row: sums and bounds (reserved <=
        # deposits) hold whatever the column means.
        return 7 + index
    return f"{column}-{index}"


async def _snapshot(conn: Any, schema: dict[str, dict[str, str]]) -> dict:
    out = {}
    for table, columns in schema.items():
        first = sorted(columns)[0]
        # The columns by name, not *: PostgreSQL keeps the statement's plan, and a
        # plan of * is invalid once a migration adds a column.
        rows = await conn.fetchall(
            f"SELECT {', '.join(sorted(columns))} FROM satmachineadmin.{table} "
            f"ORDER BY {first}"
        )
        out[table] = [
            {
                c: (bool(r[c]) if kind == "bool" and r[c] is not None else r[c])
                for c, kind in columns.items()
            }
            for r in rows
        ]
    return out


def _migration_numbers() -> list[int]:
    # Read from the source: at collection the extension is not importable yet (LNbits
    # has not started).
    source = (Path(__file__).resolve().parent.parent / "migrations.py").read_text()
    return [int(n) for n in re.findall(r"^async def m(\d\d\d)_", source, re.M)]


@pytest.mark.parametrize("number", _migration_numbers())
async def test_every_migration_keeps_the_data_of_the_version_before(
    app, tmp_path, number
):
    async with fresh_database(tmp_path) as db:
        async with db.connect() as conn:
            await migrate(conn, upto=number - 1)
            schema = await _columns(conn)
            for table, columns in schema.items():
                for index in range(ROWS_PER_TABLE):
                    values = {
                        c: _value(table, c, kind, index) for c, kind in columns.items()
                    }
                    await conn.execute(
                        f"INSERT INTO satmachineadmin.{table} ({', '.join(values)}) "
                        f"VALUES ({', '.join(':' + c for c in values)})",
                        values,
                    )
            before = await _snapshot(conn, schema)
            assert all(len(rows) == ROWS_PER_TABLE for rows in before.values())

            await migrate(conn, after=number - 1, upto=number)

        async with db.connect() as conn:
            after = await _snapshot(conn, schema)
        allowed = CHANGES.get(number, {})
        for table, rows in before.items():
            kept = set(schema[table]) - allowed.get(table, set())
            assert [{c: r[c] for c in kept} for r in after[table]] == [
                {c: r[c] for c in kept} for r in rows
            ], f"m{number:03d} changed {table}"
