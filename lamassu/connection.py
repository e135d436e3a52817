"""The connection to a Lamassu server's PostgreSQL: where, how, and what is there.

Safety rules (docs/sources.md, "Lamassu"):
- read-only: every statement runs in a READ ONLY transaction with a statement_timeout;
- the password is stored encrypted with LNbits' own secret (`encrypt_internal_message`),
  decrypted only to connect, and never returned, logged or put in a message: host,
  port, user, password and database are passed to asyncpg separately (no DSN string is
  ever built) and every error text is scrubbed of the password before it is kept;
- a missing password is sent as "" so asyncpg never falls back to PGPASSWORD or a
  .pgpass file of the LNbits host.

Lamassu's schema as the poller relies on it (tables, columns, what "successful"
means) is written down here once; the catalog check tells an operator what is missing.
"""

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from lnbits.helpers import decrypt_internal_message, encrypt_internal_message

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
CONNECT_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT_MS = 30_000

# Lamassu's tables and what "successful" means (docs/sources.md, "Lamassu").
CASH_OUT_SUCCESS = (
    "dispense_confirmed IS TRUE AND error IS NULL "
    "AND status IN ('authorized', 'instant', 'confirmed')"
)
CASH_IN_SUCCESS = "send_confirmed IS TRUE AND error IS NULL"
CRYPTO_FILTER = "crypto_code IN ('BTC', 'LN')"

_BASE_COLUMNS = (
    "id",
    "device_id",
    "crypto_atoms",
    "crypto_code",
    "fiat",
    "fiat_code",
    "error",
    "created",
)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "cash_out_txs": (*_BASE_COLUMNS, "status", "dispense_confirmed"),
    "cash_in_txs": (*_BASE_COLUMNS, "send_confirmed"),
}
# Read when present: a column an older (or newer) Lamassu lacks must not stop a poll.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "cash_out_txs": (
        "commission_percentage",
        "raw_ticker_price",
        "discount",
        "fixed_fee",
        "dispense",
        "error_code",
        "confirmed_at",
    ),
    "cash_in_txs": (
        "commission_percentage",
        "raw_ticker_price",
        "discount",
        "cash_in_fee",
        "operator_completed",
        "error_code",
        "send_time",
    ),
}
TX_TABLES = {"cash_out": "cash_out_txs", "cash_in": "cash_in_txs"}
SUCCESS = {"cash_out": CASH_OUT_SUCCESS, "cash_in": CASH_IN_SUCCESS}


# ---------------------------------------------------------------- where to connect


@dataclass
class Target:
    """Where to connect. The password is kept out of repr()."""

    host: str
    port: int
    database: str
    username: str
    sslmode: str
    password: str = field(default="", repr=False)

    @classmethod
    def of(cls, settings: Any, password: str = "") -> "Target":
        """From a stored configuration (or validated settings) and a password."""
        values = settings if isinstance(settings, dict) else settings.dict()
        return cls(
            host=values["host"],
            port=values["port"],
            database=values["database_name"],
            username=values["username"],
            sslmode=values["sslmode"],
            password=password,
        )


# ---------------------------------------------------------------- secrets


class DecryptError(Exception):
    pass


def encrypt_password(password: str) -> str | None:
    return encrypt_internal_message(password) if password else None


def decrypt_password(encrypted: str | None) -> str:
    if not encrypted:
        return ""
    try:
        return decrypt_internal_message(encrypted) or ""
    except Exception:
        raise DecryptError(
            "the stored password can no longer be decrypted (was the LNbits secret "
            "key changed?): enter the password again"
        ) from None


_URL_CREDENTIALS = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")


def scrub(text: str, *secrets: str | None) -> str:
    """The text with every secret replaced; also any user:password@ of a URL."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _URL_CREDENTIALS.sub(r"\1***@", text)


# ---------------------------------------------------------------- failures


class SchemaMismatch(Exception):
    """The database does not look like a Lamassu server's."""


class NoPermission(Exception):
    """The role may connect but not read a table the poller needs."""


def describe_failure(exc: BaseException, target: Target) -> tuple[str, str]:
    """(check name, sentence an operator can act on), scrubbed of the password."""
    where = f"{target.host}:{target.port}"
    user = target.username
    detail = str(exc).strip()
    name = "error"
    if isinstance(exc, DecryptError):
        name, message = "config", detail
    elif isinstance(exc, asyncpg.InvalidPasswordError):
        name = "login"
        message = (
            f"wrong password for user '{user}': the Lamassu database refused it; "
            "enter the read-only role's password again"
        )
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        name = "login"
        message = (
            f"user '{user}' may not log in to database '{target.database}' ({detail}): "
            "check that the role exists and that pg_hba.conf admits it from this "
            "LNbits host"
        )
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        name = "login"
        message = f"database '{target.database}' does not exist on {where}"
    elif isinstance(exc, (asyncpg.InsufficientPrivilegeError, NoPermission)):
        name = "permissions"
        message = (
            f"user '{user}' may not read Lamassu's transactions ({detail}): run "
            f"GRANT SELECT ON cash_out_txs, cash_in_txs, devices, unpaired_devices "
            f"TO {user}"
        )
    elif isinstance(
        exc, (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError, SchemaMismatch)
    ):
        name = "schema"
        message = (
            f"the schema does not look like a Lamassu server's ({detail}): is "
            f"'{target.database}' the Lamassu database, and is Lamassu up to date?"
        )
    elif isinstance(exc, asyncpg.QueryCanceledError):
        name = "query"
        message = (
            f"a query took longer than {STATEMENT_TIMEOUT_MS // 1000} s and was "
            "cancelled: the Lamassu database is overloaded or the lookback window "
            "is too long"
        )
    elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        name = "connect"
        message = (
            f"cannot connect to {where}: no answer within {CONNECT_TIMEOUT_SECONDS} s; "
            "check host, port, firewall or SSH tunnel"
        )
    elif isinstance(exc, (OSError, ConnectionError)):
        name = "connect"
        reason = getattr(exc, "strerror", None) or detail or type(exc).__name__
        if "ssl" in detail.lower() or "tls" in detail.lower():
            reason = f"TLS negotiation failed with sslmode={target.sslmode}: {detail}"
        message = (
            f"cannot connect to {where} ({reason}): check host and port, that "
            "PostgreSQL listens there, and any firewall or SSH tunnel"
        )
    elif isinstance(exc, asyncpg.PostgresError):
        name = "query"
        message = f"the Lamassu database answered with an error: {detail}"
    elif isinstance(exc, asyncpg.InterfaceError):
        name = "connect"
        message = f"connection to {where} failed: {detail}"
    else:
        message = f"unexpected error: {type(exc).__name__}: {detail}"
    return name, scrub(message, target.password)


# ---------------------------------------------------------------- reading


async def connect(target: Target) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=target.host,
        port=target.port,
        user=target.username,
        # Never None: asyncpg would then read PGPASSWORD / .pgpass of this host.
        password=target.password or "",
        database=target.database,
        ssl=target.sslmode,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=STATEMENT_TIMEOUT_MS / 1000 + 5,
        statement_cache_size=0,
        server_settings={"application_name": "satmachineadmin"},
    )


async def read(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One statement in its own short READ ONLY transaction, under a timeout."""
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
        return await conn.fetch(sql, *args)


@dataclass
class Catalog:
    columns: dict[str, set[str] | None]  # None: the table does not exist
    readable: dict[str, bool]


async def inspect_catalog(conn: asyncpg.Connection) -> Catalog:
    """Which tables and columns exist, from pg_catalog (no table privilege needed)."""
    tables = [*TX_TABLES.values(), "devices", "unpaired_devices"]
    rows = await read(
        conn,
        """
        SELECT t.name,
               to_regclass(t.name) IS NOT NULL AS present,
               CASE WHEN to_regclass(t.name) IS NULL THEN FALSE
                    ELSE has_table_privilege(to_regclass(t.name), 'SELECT') END
                   AS readable,
               ARRAY(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = to_regclass(t.name)
                       AND a.attnum > 0 AND NOT a.attisdropped) AS columns
        FROM unnest($1::text[]) AS t(name)
        """,
        tables,
    )
    return Catalog(
        columns={r["name"]: set(r["columns"]) if r["present"] else None for r in rows},
        readable={r["name"]: bool(r["readable"]) for r in rows},
    )


def check_catalog(catalog: Catalog, target: Target) -> None:
    for table, required in REQUIRED_COLUMNS.items():
        columns = catalog.columns.get(table)
        if columns is None:
            raise SchemaMismatch(f"table {table} not found")
        missing = [c for c in required if c not in columns]
        if missing:
            raise SchemaMismatch(f"table {table} has no column {', '.join(missing)}")
        if not catalog.readable.get(table):
            raise NoPermission(f"permission denied for table {table}")


def select_list(tx_type: str, catalog: Catalog) -> str:
    table = TX_TABLES[tx_type]
    available = catalog.columns.get(table) or set()
    columns = list(REQUIRED_COLUMNS[table]) + [
        c for c in OPTIONAL_COLUMNS[table] if c in available
    ]
    return ", ".join(columns)


async def read_unpaired(conn: asyncpg.Connection, catalog: Catalog) -> set[str]:
    """Devices Lamassu has unpaired and not paired again."""
    if not catalog.readable.get("unpaired_devices"):
        return set()
    paired_clause = ""
    if catalog.readable.get("devices"):
        paired_clause = "WHERE device_id NOT IN (SELECT device_id FROM devices)"
    rows = await read(
        conn, f"SELECT DISTINCT device_id FROM unpaired_devices {paired_clause}"
    )
    return {str(r["device_id"]).lower() for r in rows}


# A poller's connection is kept between polls of short intervals (a SCRAM login costs
# tens of ms and a backend process on the Lamassu server); it is dropped on any error,
# when the settings change, and for intervals above KEEP_CONNECTION_MAX_INTERVAL.
KEEP_CONNECTION_MAX_INTERVAL = 300
_connections: dict[str, tuple[str, asyncpg.Connection]] = {}


def _fingerprint(target: Target) -> str:
    text = "\0".join(
        (
            target.host,
            str(target.port),
            target.database,
            target.username,
            target.sslmode,
            target.password,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


async def close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        conn.terminate()


async def forget_connection(operator_user_id: str) -> None:
    """Close the operator's kept connection, if any (its settings changed)."""
    kept = _connections.pop(operator_user_id, None)
    if kept is not None:
        await close_quietly(kept[1])


async def close_connections() -> None:
    """Close every kept Lamassu connection (call when the extension stops)."""
    while _connections:
        _, (_, conn) = _connections.popitem()
        await close_quietly(conn)


async def poll_connection(
    operator_user_id: str, target: Target
) -> tuple[asyncpg.Connection, bool]:
    """(connection, reused), taken out of the keep: the kept one if it fits."""
    entry = _connections.pop(operator_user_id, None)
    if entry is not None:
        fingerprint, conn = entry
        if fingerprint == _fingerprint(target) and not conn.is_closed():
            return conn, True
        await close_quietly(conn)
    return await connect(target), False


async def keep_connection(
    operator_user_id: str, target: Target, conn: asyncpg.Connection, interval: int
) -> None:
    """Keep the poller's connection for its next poll, if polls are frequent."""
    if interval <= KEEP_CONNECTION_MAX_INTERVAL:
        _connections[operator_user_id] = (_fingerprint(target), conn)
    else:
        await close_quietly(conn)


# ---------------------------------------------------------------- connection test


async def test_connection(target: Target) -> dict:
    """What an operator needs to know to fix the connection, check by check."""
    checks: list[dict] = []
    outcome: dict[str, Any] = {
        "ok": False,
        "checks": checks,
        "server_time": None,
        "transactions_visible": None,
        "fixed_fee_column": None,
    }

    def add(name: str, ok: bool, message: str) -> None:
        checks.append(
            {"name": name, "ok": ok, "message": scrub(message, target.password)}
        )

    try:
        conn = await connect(target)
    except Exception as exc:
        name, message = describe_failure(exc, target)
        add(name, False, message)
        return outcome
    try:
        add(
            "connect",
            True,
            f"connected to {target.host}:{target.port} as {target.username}",
        )
        try:
            rows = await read(conn, "SELECT now() AS now, version() AS version")
            outcome["server_time"] = rows[0]["now"].isoformat()
            add("server", True, f"server time {outcome['server_time']}")
        except Exception as exc:
            name, message = describe_failure(exc, target)
            add(name, False, message)
            return outcome

        total = 0
        tables_ok = True
        for table in TX_TABLES.values():
            try:
                rows = await read(conn, f"SELECT count(*) AS n FROM {table}")
                total += int(rows[0]["n"])
                add(table, True, f"{table}: {rows[0]['n']} transactions visible")
            except Exception as exc:
                tables_ok = False
                name, message = describe_failure(exc, target)
                add(table, False, f"{table}: {message}")
        try:
            catalog = await inspect_catalog(conn)
            try:
                check_catalog(catalog, target)
                add("columns", True, "the transaction tables have every column needed")
            except Exception as exc:
                tables_ok = False
                add("columns", False, describe_failure(exc, target)[1])
            has_fee = "fixed_fee" in (catalog.columns.get("cash_out_txs") or set())
            outcome["fixed_fee_column"] = has_fee
            for table in ("devices", "unpaired_devices"):
                if catalog.columns.get(table) is None:
                    add(
                        table,
                        True,
                        f"{table}: not found; unpaired machines cannot be told apart",
                    )
                elif not catalog.readable.get(table):
                    add(
                        table,
                        True,
                        f"{table}: no permission to read it (GRANT SELECT ON "
                        f"{table} TO {target.username}); unpaired machines cannot "
                        "be told apart",
                    )
        except Exception as exc:
            tables_ok = False
            name, message = describe_failure(exc, target)
            add(name, False, message)
        if tables_ok:
            outcome["transactions_visible"] = total
            outcome["ok"] = True
    finally:
        await conn.close()
    return outcome
