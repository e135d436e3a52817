"""Lamassu source (sources.md part 2): read Lamassu's PostgreSQL, land settlements.

The Lamassu server writes every transaction to its own PostgreSQL; there is no NOTIFY
for them, so each operator's configuration is polled. A poll reads, within a lookback
window of `created`, the *successful* cash-outs and cash-ins, maps each device to one
of the operator's active machines and hands every new transaction to
`distribution.land_settlement` (or `land_rejected` when its numbers cannot be used).
The settlement's unique key (machine, "lamassu", Lamassu tx id) makes polling the same
window again harmless; no cursor is needed and none could be trusted, because a
redeem-later cash-out becomes successful up to a day after `created`.

Safety rules for the connection:
- read-only: every statement runs in a READ ONLY transaction with a statement_timeout;
- the password is stored encrypted with LNbits' own secret (`encrypt_internal_message`),
  decrypted only to connect, and never returned, logged or put in a message: host,
  port, user, password and database are passed to asyncpg separately (no DSN string is
  ever built) and every error text is scrubbed of the password before it is kept;
- a missing password is sent as "" so asyncpg never falls back to PGPASSWORD or a
  .pgpass file of the LNbits host.

Efficiency: a poll first reads only (id, device_id, created) of the successful rows in
the window, drops those already landed with one query on our side, and fetches full
rows only for the rest, in batches.
"""

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
from lnbits.helpers import decrypt_internal_message, encrypt_internal_message
from loguru import logger
from pydantic import BaseModel

from . import crud
from .calculations import (
    FiatError,
    LamassuAmounts,
    lamassu_cash_in_amounts,
    lamassu_cash_out_amounts,
    parse_fiat,
)
from .distribution import (
    current_super_fee_fraction,
    land_batch,
    rejected_draft,
    settlement_draft,
)
from .errors import BadInput, NotFound
from .models import Machine, Settlement, iso

SOURCE = "lamassu"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
CRYPTO_CODES = ("BTC", "LN")
CONNECT_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT_MS = 30_000
MAX_BACKOFF_SECONDS = 3600
# While a poll runs its row is leased this long: another LNbits process on the same
# database skips it, and a poller that died is retried after the lease.
POLL_LEASE_SECONDS = 600
MAX_SATS = 2_100_000_000_000_000  # 21 million BTC
MAX_FIAT_MINOR = 10**13  # as services.MAX_FIAT_MINOR: the largest cash deposit
FETCH_BATCH = 1000
MAX_UNKNOWN_DEVICES_SHOWN = 100
# Our clock and Lamassu's may differ; settlements landed this long before the window
# are still consulted when skipping known transactions.
CLOCK_MARGIN_SECONDS = 86_400
POLL_CONCURRENCY = 4

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


# ---------------------------------------------------------------- models


class LamassuConfig(BaseModel):
    """One row of satmachineadmin.lamassu_config: settings plus poll status."""

    operator_user_id: str
    host: str
    port: int = 5432
    database_name: str
    username: str
    password_encrypted: str | None = None
    sslmode: str = "prefer"
    poll_interval_seconds: int = 60
    lookback_hours: int = 72
    enabled: bool = True
    last_poll_at: int | None = None
    last_success_at: int | None = None
    last_error: str | None = None
    last_found: int = 0
    last_new: int = 0
    unknown_devices: str = "{}"
    newest_created_seen: int | None = None
    consecutive_failures: int = 0
    next_poll_at: int = 0
    created_at: int
    updated_at: int


class LamassuConfigIn(BaseModel):
    """PUT /lamassu/config and the optional body of POST /lamassu/test.

    Types are loose on purpose: `validate_settings` checks every field and answers
    with a sentence per problem. `password` is write-only; left out (or null) it keeps
    the stored one, "" removes it.
    """

    host: Any = None
    port: Any = 5432
    database: Any = None
    username: Any = None
    password: Any = None
    sslmode: Any = "prefer"
    poll_interval_seconds: Any = 60
    lookback_hours: Any = 72
    enabled: Any = True

    class Config:
        extra = "forbid"


@dataclass
class Settings:
    host: str
    port: int
    database: str
    username: str
    sslmode: str
    poll_interval_seconds: int
    lookback_hours: int
    enabled: bool


@dataclass
class Target:
    """Where to connect. The password is kept out of repr()."""

    host: str
    port: int
    database: str
    username: str
    sslmode: str
    password: str = field(default="", repr=False)


@dataclass
class PollResult:
    ok: bool
    found: int = 0
    new: int = 0
    rejected: int = 0
    already_known: int = 0
    not_paid: int = 0
    error: str | None = None
    duration_ms: int = 0
    unknown_devices: dict[str, dict] = field(default_factory=dict)
    newest_created: int | None = None


# ---------------------------------------------------------------- validation


def _text(value: Any, name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{name}: required, a non-empty text")
    value = value.strip()
    if len(value) > max_length:
        raise BadInput(f"{name}: at most {max_length} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise BadInput(f"{name}: may not contain spaces or control characters")
    return value


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise BadInput(f"{name}: must be a whole number")
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise BadInput(f"{name}: must be a whole number")
    if not low <= value <= high:
        raise BadInput(f"{name}: must be between {low} and {high}, got {value}")
    return value


def validate_settings(data: LamassuConfigIn) -> Settings:
    sslmode = data.sslmode
    if sslmode not in SSL_MODES:
        raise BadInput(f"sslmode: must be one of {', '.join(SSL_MODES)}")
    if not isinstance(data.enabled, bool):
        raise BadInput("enabled: must be true or false")
    if data.password is not None and (
        not isinstance(data.password, str) or len(data.password) > 1024
    ):
        raise BadInput("password: must be a text of at most 1024 characters")
    return Settings(
        host=_text(data.host, "host", 255),
        port=_integer(data.port, "port", 1, 65535),
        database=_text(data.database, "database", 63),
        username=_text(data.username, "username", 63),
        sslmode=sslmode,
        poll_interval_seconds=_integer(
            data.poll_interval_seconds, "poll_interval_seconds", 10, 86400
        ),
        lookback_hours=_integer(data.lookback_hours, "lookback_hours", 1, 720),
        enabled=data.enabled,
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


# ---------------------------------------------------------------- errors


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


# ---------------------------------------------------------------- reading Lamassu


async def _connect(target: Target) -> asyncpg.Connection:
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


async def _read(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
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
    rows = await _read(
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


def _select_list(tx_type: str, catalog: Catalog) -> str:
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
    rows = await _read(
        conn, f"SELECT DISTINCT device_id FROM unpaired_devices {paired_clause}"
    )
    return {str(r["device_id"]).lower() for r in rows}


# ---------------------------------------------------------------- row mapping


def _row_payload(tx_type: str, row: asyncpg.Record) -> dict[str, str | None]:
    payload: dict[str, str | None] = {"table": TX_TABLES[tx_type]}
    for key, value in row.items():
        payload[key] = None if value is None else str(value)
    return payload


def _optional_decimal(row: asyncpg.Record, key: str) -> Decimal | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    # Lamassu's columns are numeric(30) and numeric(14,5): an exponent far outside them
    # (1E+999999999) would make int()/Fraction() build a billion-digit number and stall
    # the event loop; such a row is rejected instead.
    if value.is_finite() and value and not -40 <= value.adjusted() <= 40:
        raise ValueError(f"{key} {value:.3E} is out of any range Lamassu stores")
    return value


@dataclass
class Mapped:
    fiat_minor: int
    crypto_atoms: int
    amounts: LamassuAmounts


def map_amounts(tx_type: str, row: asyncpg.Record, machine: Machine) -> Mapped:
    """The settlement's numbers, or ValueError with the reason to reject the row."""
    fiat_code = str(row["fiat_code"] or "").upper()
    if fiat_code != machine.fiat_currency:
        raise ValueError(
            f"fiat_code {fiat_code or '(empty)'} differs from the machine's currency "
            f"{machine.fiat_currency}"
        )
    atoms = _optional_decimal(row, "crypto_atoms")
    if atoms is None or not atoms.is_finite() or atoms != atoms.to_integral_value():
        raise ValueError(f"crypto_atoms {row['crypto_atoms']} is not a whole number")
    crypto_atoms = int(atoms)
    if crypto_atoms <= 0:
        raise ValueError(f"crypto_atoms {crypto_atoms} must be positive")
    if crypto_atoms > MAX_SATS:
        # numeric(30) holds more than our BIGINT columns: such a row would fail the
        # insert and stall every later poll of this operator.
        raise ValueError(f"crypto_atoms {crypto_atoms} is more than 21 million BTC")
    fiat = _optional_decimal(row, "fiat")
    if fiat is None or not fiat.is_finite() or fiat <= 0:
        raise ValueError(f"fiat {row['fiat']} must be a positive amount")
    try:
        fiat_minor = parse_fiat(fiat, machine.fiat_currency)
    except FiatError as exc:
        raise ValueError(str(exc)) from None
    if fiat_minor > MAX_FIAT_MINOR:
        raise ValueError(f"fiat {fiat} is more cash than any ATM dispenses")
    discount = row.get("discount")
    if discount is not None:
        discount = int(discount)
    compute = (
        lamassu_cash_out_amounts if tx_type == "cash_out" else (lamassu_cash_in_amounts)
    )
    amounts = compute(
        crypto_atoms,
        fiat,
        _optional_decimal(row, "raw_ticker_price"),
        _optional_decimal(row, "commission_percentage"),
        discount,
    )
    if max(amounts.principal_sats, amounts.fee_sats) > MAX_SATS:
        raise ValueError(
            f"principal {amounts.principal_sats} / fee {amounts.fee_sats} sats is more "
            "than 21 million BTC: the row's fiat, ticker price or commission is wrong"
        )
    return Mapped(fiat_minor=fiat_minor, crypto_atoms=crypto_atoms, amounts=amounts)


# ---------------------------------------------------------------- one poll


@dataclass
class _Keys:
    """Successful transactions in the window, grouped by device: ids only."""

    by_device: dict[str, list[tuple[str, str]]]  # device -> [(tx_type, tx id)]
    found: int = 0
    newest: int | None = None


def _epoch(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


async def _successful_keys(conn: asyncpg.Connection, lookback_hours: int) -> _Keys:
    keys = _Keys(by_device={})
    for tx_type, table in TX_TABLES.items():
        rows = await _read(
            conn,
            f"SELECT device_id, array_agg(id::text) AS ids, max(created) AS newest "
            f"FROM {table} "
            "WHERE created >= now() - make_interval(hours => $1) "
            f"AND {SUCCESS[tx_type]} AND {CRYPTO_FILTER} GROUP BY device_id",
            lookback_hours,
        )
        for row in rows:
            device = str(row["device_id"] or "").lower()
            ids = row["ids"]
            keys.by_device.setdefault(device, []).extend((tx_type, i) for i in ids)
            keys.found += len(ids)
            newest = _epoch(row["newest"])
            if newest is not None and (keys.newest is None or newest > keys.newest):
                keys.newest = newest
    return keys


def _operator_machines(
    operator_user_id: str, machines: Sequence[Machine]
) -> dict[str, list[Machine]]:
    by_device: dict[str, list[Machine]] = {}
    for machine in machines:
        if (
            machine.operator_user_id != operator_user_id
            or not machine.lamassu_device_id
        ):
            continue
        by_device.setdefault(machine.lamassu_device_id.lower(), []).append(machine)
    return by_device


def _not_paid_reason(
    device: str, machines: list[Machine], unpaired: set[str]
) -> str | None:
    if device in unpaired:
        return "unpaired in Lamassu: its transactions are not paid"
    if not machines:
        return "not linked to any of your machines (set lamassu_device_id on one)"
    active = [m for m in machines if m.status == "active"]
    if not active:
        return f"machine {machines[0].id} is inactive"
    if len(active) > 1:
        return "linked to more than one of your active machines: unlink all but one"
    return None


# Per operator: (machine id, Lamassu tx id) this process has seen as a settlement.
# Settlements are never deleted, so an entry can only save a lookup, never hide a
# transaction; each successful poll keeps only what is still in the window.
_known_cache: dict[str, set[tuple[str, str]]] = {}
# Above this many unchecked ids one window query beats per-id lookups.
WINDOW_QUERY_THRESHOLD = 2000


async def _known_keys(
    config: LamassuConfig, unchecked: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of `unchecked` (machine id, tx id) already are settlements."""
    if not unchecked:
        return set()
    machine_ids = sorted({m for m, _ in unchecked})
    if len(unchecked) > WINDOW_QUERY_THRESHOLD:
        since = int(time.time()) - config.lookback_hours * 3600 - CLOCK_MARGIN_SECONDS
        return await crud.known_lamassu_external_ids(machine_ids, since)
    found: set[tuple[str, str]] = set()
    for start in range(0, len(unchecked), 500):
        chunk = unchecked[start : start + 500]
        found |= await crud.known_lamassu_settlements(
            sorted({m for m, _ in chunk}), [e for _, e in chunk]
        )
    return found


def _draft_row(
    tx_type: str, row: asyncpg.Record, machine: Machine, fraction: Decimal
) -> Settlement:
    """The settlement (or rejection) one Lamassu row becomes."""
    external_id = str(row["id"])
    payload = _row_payload(tx_type, row)
    try:
        mapped = map_amounts(tx_type, row, machine)
    except (ValueError, TypeError, ArithmeticError) as exc:
        return rejected_draft(
            machine=machine,
            source=SOURCE,
            external_id=external_id,
            reason=f"Lamassu {tx_type} {external_id}: {exc}",
            raw_payload=payload,
            tx_type=tx_type,
        )
    return settlement_draft(
        machine=machine,
        super_fee_fraction=fraction,
        source=SOURCE,
        external_id=external_id,
        tx_type=tx_type,
        fiat_amount_minor=mapped.fiat_minor,
        principal_sats=mapped.amounts.principal_sats,
        fee_sats=mapped.amounts.fee_sats,
        wire_sats=mapped.crypto_atoms,
        estimated=mapped.amounts.estimated,
        raw_payload=payload,
        external_created_at=_epoch(row["created"]),
    )


async def _land_drafts(drafts: list[Settlement], result: PollResult) -> None:
    try:
        landed = await land_batch(drafts)
    except Exception:
        # Another poller (manual poll, second process) inserted one of them first and
        # the unique key refused the whole batch: land them one by one instead.
        landed = []
        for draft in drafts:
            try:
                landed += await land_batch([draft])
            except Exception:
                if not await crud.find_settlement(
                    draft.machine_id, SOURCE, draft.external_id
                ):
                    raise
    result.new += len(landed)
    result.rejected += sum(1 for s in landed if s.status == "rejected")
    result.already_known += len(drafts) - len(landed)


def _classify_devices(
    keys: _Keys, by_device: dict[str, list[Machine]], unpaired: set[str]
) -> tuple[dict[str, Machine], dict[str, dict]]:
    payable: dict[str, Machine] = {}
    unknown: dict[str, dict] = {}
    for device, ids in keys.by_device.items():
        reason = _not_paid_reason(device, by_device.get(device, []), unpaired)
        if reason is None:
            payable[device] = next(m for m in by_device[device] if m.status == "active")
        else:
            unknown[device] = {"transactions": len(ids), "reason": reason}
    shown = sorted(unknown.items(), key=lambda kv: (-kv[1]["transactions"], kv[0]))
    return payable, dict(shown[:MAX_UNKNOWN_DEVICES_SHOWN])


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


async def _close_quietly(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        conn.terminate()


async def close_connections() -> None:
    """Close every kept Lamassu connection (call when the extension stops)."""
    while _connections:
        _, (_, conn) = _connections.popitem()
        await _close_quietly(conn)


async def _poll_connection(
    operator_user_id: str, target: Target
) -> tuple[asyncpg.Connection, bool]:
    """(connection, reused), taken out of the keep: the kept one if it fits."""
    entry = _connections.pop(operator_user_id, None)
    if entry is not None:
        fingerprint, conn = entry
        if fingerprint == _fingerprint(target) and not conn.is_closed():
            return conn, True
        await _close_quietly(conn)
    return await _connect(target), False


async def run_poll(config: LamassuConfig, target: Target) -> PollResult:
    """Read the window and land what is new. Raises on any connection/query failure.

    A kept connection that fails (the server restarted, an idle timeout closed it) is
    replaced by a fresh one once, so only a real problem counts as a failed poll.
    """
    conn, reused = await _poll_connection(config.operator_user_id, target)
    try:
        try:
            result = await _poll_on(conn, config, target)
        except Exception:
            if not reused:
                raise
            await _close_quietly(conn)
            conn = await _connect(target)
            result = await _poll_on(conn, config, target)
    except BaseException:
        conn.terminate()
        raise
    if config.poll_interval_seconds <= KEEP_CONNECTION_MAX_INTERVAL:
        _connections[config.operator_user_id] = (_fingerprint(target), conn)
    else:
        await _close_quietly(conn)
    return result


async def _poll_on(
    conn: asyncpg.Connection, config: LamassuConfig, target: Target
) -> PollResult:
    result = PollResult(ok=True)
    catalog = await inspect_catalog(conn)
    check_catalog(catalog, target)
    keys = await _successful_keys(conn, config.lookback_hours)
    unpaired = await read_unpaired(conn, catalog)
    result.found = keys.found
    result.newest_created = keys.newest

    machines = await crud.get_machines_by_device(sorted(keys.by_device))
    by_device = _operator_machines(config.operator_user_id, machines)
    payable, result.unknown_devices = _classify_devices(keys, by_device, unpaired)
    result.not_paid = sum(
        len(ids) for d, ids in keys.by_device.items() if d not in payable
    )

    cache = _known_cache.get(config.operator_user_id, set())
    candidates = [
        (tx_type, machine.id, tx_id)
        for device, machine in payable.items()
        for tx_type, tx_id in keys.by_device[device]
    ]
    unchecked = [(m, t) for _, m, t in candidates if (m, t) not in cache]
    known = cache | await _known_keys(config, unchecked)
    todo: dict[str, list[str]] = {"cash_out": [], "cash_in": []}
    for tx_type, machine_id, tx_id in candidates:
        if (machine_id, tx_id) in known:
            result.already_known += 1
        else:
            todo[tx_type].append(tx_id)

    for tx_type, pending in todo.items():
        columns = _select_list(tx_type, catalog)
        table = TX_TABLES[tx_type]
        for start in range(0, len(pending), FETCH_BATCH):
            rows = await _read(
                conn,
                f"SELECT {columns} FROM {table} "
                f"WHERE id = ANY($1::uuid[]) AND {SUCCESS[tx_type]} "
                f"AND {CRYPTO_FILTER} ORDER BY created, id",
                pending[start : start + FETCH_BATCH],
            )
            fraction = await current_super_fee_fraction()
            drafts = []
            for row in rows:
                machine = payable.get(str(row["device_id"] or "").lower())
                if machine is None:  # the row moved to another device meanwhile
                    continue
                drafts.append(_draft_row(tx_type, row, machine, fraction))
            if drafts:
                await _land_drafts(drafts, result)
            known.update((d.machine_id, d.external_id) for d in drafts)
    window = {(m, t) for _, m, t in candidates}
    _known_cache[config.operator_user_id] = known & window
    return result


# ---------------------------------------------------------------- test connection


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
        conn = await _connect(target)
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
            rows = await _read(conn, "SELECT now() AS now, version() AS version")
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
                rows = await _read(conn, f"SELECT count(*) AS n FROM {table}")
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


# ---------------------------------------------------------------- service layer


_locks: dict[str, asyncio.Lock] = {}


def _lock(operator_user_id: str) -> asyncio.Lock:
    lock = _locks.get(operator_user_id)
    if lock is None:
        lock = _locks[operator_user_id] = asyncio.Lock()
    return lock


def _target(config: LamassuConfig, password: str) -> Target:
    return Target(
        host=config.host,
        port=config.port,
        database=config.database_name,
        username=config.username,
        sslmode=config.sslmode,
        password=password,
    )


async def get_config(operator_user_id: str) -> LamassuConfig | None:
    row = await crud.get_lamassu_config_row(operator_user_id)
    return LamassuConfig.parse_obj(dict(row)) if row else None


async def require_config(operator_user_id: str) -> LamassuConfig:
    config = await get_config(operator_user_id)
    if config is None:
        raise NotFound("Lamassu is not configured: PUT /lamassu/config first")
    return config


async def save_config(operator_user_id: str, data: LamassuConfigIn) -> LamassuConfig:
    settings = validate_settings(data)
    existing = await get_config(operator_user_id)
    moment = crud.now()
    if data.password is None:
        encrypted = existing.password_encrypted if existing else None
    else:
        encrypted = encrypt_password(data.password)
    base = existing.dict() if existing else {}
    config = LamassuConfig(
        **{
            **base,
            "operator_user_id": operator_user_id,
            "host": settings.host,
            "port": settings.port,
            "database_name": settings.database,
            "username": settings.username,
            "password_encrypted": encrypted,
            "sslmode": settings.sslmode,
            "poll_interval_seconds": settings.poll_interval_seconds,
            "lookback_hours": settings.lookback_hours,
            "enabled": settings.enabled,
            # New settings are tried at once, without the old backoff.
            "consecutive_failures": 0,
            "next_poll_at": 0,
            "created_at": existing.created_at if existing else moment,
            "updated_at": moment,
        }
    )
    audit = {
        "host": settings.host,
        "port": settings.port,
        "database": settings.database,
        "username": settings.username,
        "sslmode": settings.sslmode,
        "poll_interval_seconds": settings.poll_interval_seconds,
        "lookback_hours": settings.lookback_hours,
        "enabled": settings.enabled,
        "password_changed": data.password is not None,
    }
    kept = _connections.pop(operator_user_id, None)
    if kept is not None:
        await _close_quietly(kept[1])
    async with crud.transaction() as tx:
        await crud.upsert_lamassu_config(tx, config.dict(), insert=existing is None)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "lamassu.config",
            "lamassu_config",
            operator_user_id,
            audit,
        )
    return config


async def target_for_test(
    operator_user_id: str, data: LamassuConfigIn | None
) -> Target:
    """The stored settings, or those in the request (its password, else the stored)."""
    existing = await get_config(operator_user_id)
    if data is None:
        if existing is None:
            raise NotFound("Lamassu is not configured: PUT /lamassu/config first")
        return _target(existing, "")
    settings = validate_settings(data)
    return Target(
        host=settings.host,
        port=settings.port,
        database=settings.database,
        username=settings.username,
        sslmode=settings.sslmode,
        password=data.password if isinstance(data.password, str) else "",
    )


async def run_test(operator_user_id: str, data: LamassuConfigIn | None) -> dict:
    target = await target_for_test(operator_user_id, data)
    if not (data is not None and isinstance(data.password, str)):
        existing = await get_config(operator_user_id)
        try:
            target.password = decrypt_password(
                existing.password_encrypted if existing else None
            )
        except DecryptError as exc:
            return {
                "ok": False,
                "checks": [{"name": "config", "ok": False, "message": str(exc)}],
                "server_time": None,
                "transactions_visible": None,
                "fixed_fee_column": None,
            }
    try:
        return await test_connection(target)
    except Exception as exc:  # never let a password-bearing traceback escape
        name, message = describe_failure(exc, target)
        return {
            "ok": False,
            "checks": [{"name": name, "ok": False, "message": message}],
            "server_time": None,
            "transactions_visible": None,
            "fixed_fee_column": None,
        }


def backoff_seconds(interval: int, failures: int) -> int:
    """min(interval * 2^failures, 1 h); never shorter than the interval itself."""
    cap = max(MAX_BACKOFF_SECONDS, interval)
    return min(interval * 2 ** min(failures, 20), cap)


async def poll_operator(operator_user_id: str) -> PollResult:
    """Poll one operator's Lamassu now; the outcome is kept in the status row.

    Never raises for a Lamassu problem: the error is stored (scrubbed) and the next
    poll is pushed back exponentially.
    """
    async with _lock(operator_user_id):
        config = await require_config(operator_user_id)
        started = time.monotonic()
        moment = crud.now()
        target = _target(config, "")
        try:
            target.password = decrypt_password(config.password_encrypted)
            result = await run_poll(config, target)
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            _, message = describe_failure(exc, target)
            failures = config.consecutive_failures + 1
            delay = backoff_seconds(config.poll_interval_seconds, failures)
            await crud.save_lamassu_poll_status(
                operator_user_id,
                {
                    "last_poll_at": moment,
                    "last_error": message[:2000],
                    "consecutive_failures": failures,
                    "next_poll_at": crud.now() + delay,
                },
            )
            logger.warning(
                f"satmachineadmin: Lamassu poll for operator {operator_user_id} failed "
                f"({failures} in a row, next try in {delay} s): {message}"
            )
            return PollResult(
                ok=False,
                error=message,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        result.duration_ms = int((time.monotonic() - started) * 1000)
        await crud.save_lamassu_poll_status(
            operator_user_id,
            {
                "last_poll_at": moment,
                "last_success_at": crud.now(),
                "last_error": None,
                "last_found": result.found,
                "last_new": result.new,
                "unknown_devices": json.dumps(result.unknown_devices, sort_keys=True),
                "newest_created_seen": result.newest_created
                if result.newest_created is not None
                else config.newest_created_seen,
                "consecutive_failures": 0,
                "next_poll_at": crud.now() + config.poll_interval_seconds,
            },
        )
        if result.new:
            logger.info(
                f"satmachineadmin: Lamassu poll for operator {operator_user_id}: "
                f"{result.new} new ({result.rejected} rejected) of {result.found} "
                f"in the window, {result.duration_ms} ms"
            )
        return result


async def poll_all_due() -> None:
    """Poll every enabled configuration whose next_poll_at has come (tasks.py loop).

    Each due row is claimed with a conditional UPDATE first, so two LNbits processes
    on one database never poll the same operator at once. Never raises.
    """
    try:
        moment = crud.now()
        due = [
            LamassuConfig.parse_obj(dict(r))
            for r in await crud.list_due_lamassu_configs(moment)
        ]
        semaphore = asyncio.Semaphore(POLL_CONCURRENCY)

        async def one(config: LamassuConfig) -> None:
            async with semaphore:
                try:
                    if not await crud.claim_lamassu_poll(
                        config.operator_user_id,
                        config.next_poll_at,
                        moment + POLL_LEASE_SECONDS,
                    ):
                        return
                    await poll_operator(config.operator_user_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Our own database failed; Lamassu errors never get here.
                    logger.warning(
                        "satmachineadmin: Lamassu poll for operator "
                        f"{config.operator_user_id} could not run: "
                        f"{type(exc).__name__}"
                    )

        await asyncio.gather(*(one(c) for c in due))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning(
            f"satmachineadmin: Lamassu poller tick failed: {type(exc).__name__}"
        )


# ---------------------------------------------------------------- API shapes


def config_out(config: LamassuConfig) -> dict:
    return {
        "host": config.host,
        "port": config.port,
        "database": config.database_name,
        "username": config.username,
        "password_set": bool(config.password_encrypted),
        "sslmode": config.sslmode,
        "poll_interval_seconds": config.poll_interval_seconds,
        "lookback_hours": config.lookback_hours,
        "enabled": config.enabled,
        "created_at": iso(config.created_at),
        "updated_at": iso(config.updated_at),
    }


def status_out(config: LamassuConfig | None) -> dict:
    if config is None:
        return {"configured": False}
    try:
        unknown = json.loads(config.unknown_devices or "{}")
    except ValueError:
        unknown = {}
    return {
        "configured": True,
        "enabled": config.enabled,
        "host": config.host,
        "port": config.port,
        "database": config.database_name,
        "poll_interval_seconds": config.poll_interval_seconds,
        "lookback_hours": config.lookback_hours,
        "last_poll_at": iso(config.last_poll_at),
        "last_success_at": iso(config.last_success_at),
        "last_error": config.last_error,
        "last_found": config.last_found,
        "last_new": config.last_new,
        "unknown_devices": [
            {"device_id": device, **info} for device, info in unknown.items()
        ],
        "newest_created_seen": iso(config.newest_created_seen),
        "consecutive_failures": config.consecutive_failures,
        "next_poll_at": iso(config.next_poll_at) if config.next_poll_at else None,
        "healthy": config.last_error is None and config.last_success_at is not None,
    }


def poll_out(result: PollResult, config: LamassuConfig | None) -> dict:
    return {
        "ok": result.ok,
        "found": result.found,
        "new": result.new,
        "rejected": result.rejected,
        "already_known": result.already_known,
        "not_paid": result.not_paid,
        "error": result.error,
        "duration_ms": result.duration_ms,
        "status": status_out(config),
    }
