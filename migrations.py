"""Database schema of satmachineadmin.

Conventions that hold for every table (SQLite and PostgreSQL alike):
- timestamps are integer epoch seconds (BIGINT), never database-specific types, so
  the same SQL and the same models work on both engines;
- sats and fiat minor units are BIGINT integers; fractions, percents and rates are
  decimal strings (TEXT) so no float ever touches money;
- every table an operator owns rows in carries `operator_user_id`, so every query can
  be scoped to the caller without a join.
Released migrations are never edited: add the next one.
"""

import json
import os
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Optional

from lnbits.db import SQLITE, Connection, Database
from sqlalchemy import text


async def _index(
    db: Database, name: str, table: str, columns: str, unique: bool = False
) -> None:
    # SQLite qualifies the index name with the schema, PostgreSQL only the table.
    kind = "UNIQUE INDEX" if unique else "INDEX"
    if db.type == SQLITE:
        await db.execute(f"CREATE {kind} satmachineadmin.{name} ON {table} ({columns})")
    else:
        await db.execute(f"CREATE {kind} {name} ON satmachineadmin.{table} ({columns})")


async def m001_initial_schema(db: Database) -> None:
    big = db.big_int

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.machines (
            id TEXT PRIMARY KEY,
            operator_user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            wallet_id TEXT NOT NULL,
            fiat_currency TEXT NOT NULL,
            machine_npub TEXT,
            lamassu_device_id TEXT,
            status TEXT NOT NULL DEFAULT 'active',
            fixed_times TEXT NOT NULL DEFAULT '[]',
            fixed_timezone TEXT NOT NULL DEFAULT 'UTC',
            auto_settle_enabled BOOLEAN NOT NULL DEFAULT FALSE,
            auto_settle_threshold_type TEXT,
            auto_settle_threshold_value TEXT,
            auto_settle_funding_wallet_id TEXT,
            sweep_cursor {big} NOT NULL DEFAULT 0,
            created_at {big} NOT NULL,
            updated_at {big} NOT NULL
        );
        """
    )
    # One machine per wallet: the engine pays legs out of this wallet, so two machines
    # (or two operators) claiming it would let one drain the other.
    await _index(db, "machines_wallet_uq", "machines", "wallet_id", unique=True)
    await _index(db, "machines_operator_ix", "machines", "operator_user_id")
    await _index(db, "machines_lamassu_ix", "machines", "lamassu_device_id")

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.lp_preferences (
            user_id TEXT PRIMARY KEY,
            wallet_id TEXT NOT NULL,
            dca_mode TEXT NOT NULL DEFAULT 'flow',
            fixed_mode_daily_limit TEXT,
            autoforward_enabled BOOLEAN NOT NULL DEFAULT FALSE,
            autoforward_ln_address TEXT,
            created_at {big} NOT NULL,
            updated_at {big} NOT NULL
        );
        """
    )

    # Running totals (deposits_minor, reserved_minor, sats_received) are maintained in
    # the same transaction as the rows they summarise, so a balance is one row read
    # whatever the length of the LP's history.
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.clients (
            id TEXT PRIMARY KEY,
            machine_id TEXT NOT NULL,
            operator_user_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            username TEXT,
            status TEXT NOT NULL DEFAULT 'active',
            deposits_minor {big} NOT NULL DEFAULT 0,
            reserved_minor {big} NOT NULL DEFAULT 0,
            sats_received {big} NOT NULL DEFAULT 0,
            cycle_complete BOOLEAN NOT NULL DEFAULT FALSE,
            created_at {big} NOT NULL,
            updated_at {big} NOT NULL
        );
        """
    )
    await _index(
        db, "clients_machine_user_uq", "clients", "machine_id, user_id", unique=True
    )
    await _index(db, "clients_operator_ix", "clients", "operator_user_id")
    await _index(db, "clients_user_ix", "clients", "user_id")

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.deposits (
            id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            machine_id TEXT NOT NULL,
            operator_user_id TEXT NOT NULL,
            amount_minor {big} NOT NULL,
            currency TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            notes TEXT,
            created_at {big} NOT NULL,
            confirmed_at {big},
            cancelled_at {big}
        );
        """
    )
    await _index(db, "deposits_client_ix", "deposits", "client_id, created_at")
    await _index(db, "deposits_operator_ix", "deposits", "operator_user_id, created_at")

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.settlements (
            id TEXT PRIMARY KEY,
            machine_id TEXT NOT NULL,
            operator_user_id TEXT NOT NULL,
            source TEXT NOT NULL,
            external_id TEXT NOT NULL,
            payment_hash TEXT,
            tx_type TEXT NOT NULL,
            status TEXT NOT NULL,
            fiat_amount_minor {big} NOT NULL DEFAULT 0,
            currency TEXT NOT NULL,
            wire_sats {big} NOT NULL DEFAULT 0,
            principal_sats {big} NOT NULL DEFAULT 0,
            fee_sats {big} NOT NULL DEFAULT 0,
            fee_fraction TEXT,
            super_fee_fraction TEXT NOT NULL DEFAULT '0',
            platform_fee_sats {big} NOT NULL DEFAULT 0,
            operator_fee_sats {big} NOT NULL DEFAULT 0,
            exchange_rate TEXT,
            orphan_sats {big} NOT NULL DEFAULT 0,
            orphan_fiat_minor {big} NOT NULL DEFAULT 0,
            estimated BOOLEAN NOT NULL DEFAULT FALSE,
            raw_payload TEXT,
            error TEXT,
            attempts INT NOT NULL DEFAULT 0,
            plan_version INT NOT NULL DEFAULT 0,
            next_attempt_at {big} NOT NULL DEFAULT 0,
            claim_token TEXT,
            claimed_until {big},
            external_created_at {big},
            created_at {big} NOT NULL,
            updated_at {big} NOT NULL,
            processed_at {big}
        );
        """
    )
    # The exactly-once key: whichever path sees an ATM transaction first, and however
    # often it is seen again, it becomes one settlement.
    await _index(
        db,
        "settlements_source_uq",
        "settlements",
        "machine_id, source, external_id",
        unique=True,
    )
    await _index(
        db, "settlements_payment_uq", "settlements", "payment_hash", unique=True
    )
    await _index(db, "settlements_queue_ix", "settlements", "status, next_attempt_at")
    await _index(db, "settlements_machine_ix", "settlements", "machine_id, created_at")
    await _index(
        db, "settlements_operator_ix", "settlements", "operator_user_id, created_at"
    )

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.legs (
            id TEXT PRIMARY KEY,
            idempotency_key TEXT NOT NULL,
            settlement_id TEXT,
            machine_id TEXT NOT NULL,
            operator_user_id TEXT NOT NULL,
            client_id TEXT,
            parent_leg_id TEXT,
            leg_type TEXT NOT NULL,
            status TEXT NOT NULL,
            amount_sats {big} NOT NULL,
            amount_fiat_minor {big},
            currency TEXT,
            exchange_rate TEXT,
            source_wallet_id TEXT,
            destination TEXT,
            destination_kind TEXT,
            label TEXT,
            memo TEXT,
            payment_hash TEXT,
            bolt11 TEXT,
            error TEXT,
            attempts INT NOT NULL DEFAULT 0,
            slot_date TEXT,
            slot_index INT,
            claimed_until {big},
            created_at {big} NOT NULL,
            updated_at {big} NOT NULL,
            completed_at {big}
        );
        """
    )
    # A leg is written with this key before it is paid: a replay of the same plan, a
    # restart or a second worker can only ever find the existing row.
    await _index(db, "legs_idempotency_uq", "legs", "idempotency_key", unique=True)
    await _index(db, "legs_settlement_ix", "legs", "settlement_id")
    await _index(db, "legs_client_ix", "legs", "client_id, leg_type, created_at")
    await _index(db, "legs_operator_ix", "legs", "operator_user_id, created_at")
    await _index(db, "legs_status_ix", "legs", "status, updated_at")
    await _index(db, "legs_payment_ix", "legs", "payment_hash")

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.commission_rules (
            id TEXT PRIMARY KEY,
            operator_user_id TEXT NOT NULL,
            machine_id TEXT,
            position INT NOT NULL,
            target TEXT NOT NULL,
            target_kind TEXT NOT NULL,
            percent TEXT NOT NULL,
            label TEXT,
            created_at {big} NOT NULL
        );
        """
    )
    await _index(
        db,
        "commission_rules_scope_ix",
        "commission_rules",
        "operator_user_id, machine_id, position",
    )

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.platform_config (
            id INT PRIMARY KEY,
            super_fee_fraction TEXT NOT NULL DEFAULT '0',
            fee_wallet_id TEXT,
            updated_at {big} NOT NULL
        );
        """
    )

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.lamassu_config (
            operator_user_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            port INT NOT NULL DEFAULT 5432,
            database_name TEXT NOT NULL,
            username TEXT NOT NULL,
            password_encrypted TEXT,
            sslmode TEXT NOT NULL DEFAULT 'prefer',
            poll_interval_seconds INT NOT NULL DEFAULT 60,
            lookback_hours INT NOT NULL DEFAULT 72,
            enabled BOOLEAN NOT NULL DEFAULT TRUE,
            last_poll_at {big},
            last_success_at {big},
            last_error TEXT,
            last_found INT NOT NULL DEFAULT 0,
            last_new INT NOT NULL DEFAULT 0,
            unknown_devices TEXT NOT NULL DEFAULT '{{}}',
            newest_created_seen {big},
            consecutive_failures INT NOT NULL DEFAULT 0,
            next_poll_at {big} NOT NULL DEFAULT 0,
            created_at {big} NOT NULL,
            updated_at {big} NOT NULL
        );
        """
    )

    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.settlement_notes (
            id TEXT PRIMARY KEY,
            settlement_id TEXT NOT NULL,
            author_user_id TEXT NOT NULL,
            note TEXT NOT NULL,
            created_at {big} NOT NULL
        );
        """
    )
    await _index(
        db, "settlement_notes_ix", "settlement_notes", "settlement_id, created_at"
    )

    # Append-only: who changed what. Rows are inserted, never updated or deleted.
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.audit_log (
            id TEXT PRIMARY KEY,
            actor_user_id TEXT NOT NULL,
            operator_user_id TEXT,
            action TEXT NOT NULL,
            entity_type TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            detail TEXT,
            created_at {big} NOT NULL
        );
        """
    )
    await _index(
        db, "audit_log_entity_ix", "audit_log", "entity_type, entity_id, created_at"
    )
    await _index(
        db, "audit_log_operator_ix", "audit_log", "operator_user_id, created_at"
    )


async def m002_every_sat_held_by_the_database(db: Database) -> None:
    """Invariants the database holds, not Python (docs/operations.md, "Upgrade").

    - transaction_keys: one row per real-world transaction, claimed in the same
      transaction as the settlement that pays it (models.Settlement.transaction_keys):
      a Lamassu id once per operator, a bitSpire id once per machine, a manual
      reference under its own key, the machine's bitSpire key and, when it is a
      UUID, the operator's Lamassu key. Backfilled from the settlements already
      landed, oldest first; a later settlement of an already-claimed transaction
      that nothing has paid yet is `held` with the reason (the operator rejects it,
      or approves it if it is in fact another transaction), never paid silently.
    - clients.overspent_before_m002: an LP whose reservations an earlier version let
      exceed their deposits (the race this migration's invariants close). On
      PostgreSQL a CHECK keeps reserved_minor <= deposits_minor for every other LP;
      such a row stays writable (its payments are recorded) and is shown as it is.
    - machines.rate_band_percent: how far (in percent) a bitSpire or manual
      settlement's rate may stray from the reference rate before it is held.
    - lamassu_config.cursor_at / start_at: the poller resumes from where it stopped
      (after any outage), and the operator says where the very first poll starts.
    - legs.claim_token: a standalone leg's lease has an owner, so only the worker
      that holds it may pay or release it.
    """
    big = db.big_int
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.transaction_keys (
            key TEXT PRIMARY KEY,
            operator_user_id TEXT NOT NULL,
            settlement_id TEXT NOT NULL,
            created_at {big} NOT NULL
        );
        """
    )
    # (source, which of its rows, the key) as models.Settlement.transaction_keys.
    uuid_like = "external_id LIKE '________-____-____-____-____________'"
    keys = [
        ("lamassu", "TRUE", "'lamassu:' || operator_user_id || ':' || external_id"),
        ("bitspire", "TRUE", "'bitspire:' || machine_id || ':' || external_id"),
        ("manual", "TRUE", "'manual:' || machine_id || ':' || external_id"),
        ("manual", "TRUE", "'bitspire:' || machine_id || ':' || external_id"),
        ("manual", uuid_like, "'lamassu:' || operator_user_id || ':' || external_id"),
    ]
    claims = " UNION ALL ".join(
        f"SELECT {key} AS key, operator_user_id, id, created_at "
        f"FROM satmachineadmin.settlements WHERE source = '{source}' AND {rows} "
        "AND status <> 'rejected'"
        for source, rows, key in keys
    )
    # The oldest settlement of a transaction claims it; ties by id.
    await db.execute(
        f"""
        INSERT INTO satmachineadmin.transaction_keys
            (key, operator_user_id, settlement_id, created_at)
        SELECT key, operator_user_id, id, created_at FROM ({claims}) AS claims
        WHERE key IS NOT NULL
        ORDER BY created_at, id
        ON CONFLICT (key) DO NOTHING
        """
    )
    # A later settlement of a claimed transaction: held unless something of it was
    # already paid (then it is history, and its transaction is claimed by another).
    for source, rows, key in keys:
        await db.execute(
            f"""
            UPDATE satmachineadmin.settlements
            SET status = 'held',
                error = 'possible duplicate (found on upgrade): transaction '
                    || external_id || ' is already settled by settlement '
                    || (SELECT k.settlement_id FROM satmachineadmin.transaction_keys k
                        WHERE k.key = {key})
                    || '; reject it, or approve it if it is another transaction'
            WHERE source = '{source}' AND {rows}
              AND status IN ('pending', 'errored', 'held', 'processing')
              AND EXISTS (
                  SELECT 1 FROM satmachineadmin.transaction_keys k
                  WHERE k.key = {key}
                    AND k.settlement_id <> satmachineadmin.settlements.id)
              AND NOT EXISTS (
                  SELECT 1 FROM satmachineadmin.legs l
                  WHERE l.settlement_id = satmachineadmin.settlements.id
                    AND l.status = 'completed')
            """
        )
    await db.execute(
        "ALTER TABLE satmachineadmin.clients "
        "ADD COLUMN overspent_before_m002 BOOLEAN NOT NULL DEFAULT FALSE"
    )
    await db.execute(
        "UPDATE satmachineadmin.clients SET overspent_before_m002 = TRUE "
        "WHERE reserved_minor > deposits_minor"
    )
    if db.type != SQLITE:
        await db.execute(
            "ALTER TABLE satmachineadmin.clients "
            "ADD CONSTRAINT clients_reserved_within_deposits "
            "CHECK (reserved_minor <= deposits_minor OR overspent_before_m002)"
        )
    await db.execute(
        "ALTER TABLE satmachineadmin.machines ADD COLUMN rate_band_percent TEXT"
    )
    await db.execute(
        f"ALTER TABLE satmachineadmin.lamassu_config ADD COLUMN cursor_at {big}"
    )
    await db.execute(
        f"ALTER TABLE satmachineadmin.lamassu_config ADD COLUMN start_at {big}"
    )
    await db.execute("ALTER TABLE satmachineadmin.legs ADD COLUMN claim_token TEXT")


# ---------------------------------------------------------------- v1 installs
#
# v1 (github.com/Atitlanio/satmachineadmin) has this extension's id. LNbits keeps
# `dbversions('satmachineadmin') = 2` for it (v1's m001_initial_dca_schema and
# m002_add_transaction_time_to_dca_payments), so on an upgrade in place it runs m003
# onwards and never this version's m001/m002. v1's first release keeps its tables in
# the schema `satmachineadmin`; its last commit moved them to `satoshimachine`.

V1_TABLES = (
    "dca_clients",
    "dca_deposits",
    "dca_payments",
    "lamassu_config",
    "lamassu_transactions",
)
V1_PREFIX = "v1_"


class _Uncommitted(Connection):
    """LNbits' connection with its per-statement commit left out: every statement
    belongs to the one transaction `_one_transaction` commits or rolls back."""

    async def execute(self, query: str, values: Optional[dict] = None) -> Any:
        params = self.rewrite_values(values) if values else {}
        return await self.conn.execute(text(self.rewrite_query(query)), params)


@asynccontextmanager
async def _one_transaction(db: Any) -> AsyncIterator[_Uncommitted]:
    if isinstance(db, Database):
        async with db.connect() as conn, _one_transaction(conn) as tx:
            yield tx
        return
    tx = _Uncommitted(db.conn, db.type, db.name, db.schema)
    if db.type == SQLITE:
        # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE and
        # runs DDL (ALTER, CREATE) outside any: a savepoint opens one that holds both.
        await db.conn.exec_driver_sql("SAVEPOINT satmachineadmin_migration")
    try:
        yield tx
    except BaseException:
        await db.conn.rollback()
        raise
    await db.conn.commit()


async def _tables(db: Any, schema: str) -> set[str]:
    if db.type == SQLITE:
        rows = await db.fetchall(
            f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'"
        )
        return {r["name"] for r in rows}
    rows = await db.fetchall(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = :schema",
        {"schema": schema},
    )
    return {r["table_name"] for r in rows}


async def m003_v1_install_gets_this_schema(db: Database) -> None:
    """An upgrade in place from v1: v1's tables in `satmachineadmin` are renamed
    `v1_<table>` (kept, never dropped: m005 imports them), then this version's schema
    is created as m001 and m002 create it. On any other install `machines` exists
    and nothing happens. One transaction: a failure leaves v1's tables as they were."""
    async with _one_transaction(db) as tx:
        tables = await _tables(tx, "satmachineadmin")
        if "machines" in tables:
            return
        for table in V1_TABLES:
            if table in tables and V1_PREFIX + table not in tables:
                await tx.execute(
                    f"ALTER TABLE satmachineadmin.{table} RENAME TO {V1_PREFIX}{table}"
                )
        if tx.type != SQLITE:
            # PostgreSQL names indexes per schema: v1's `lamassu_config_pkey` would
            # take the name of this version's.
            rows: list = await tx.fetchall(
                "SELECT indexname FROM pg_indexes "
                "WHERE schemaname = 'satmachineadmin' "
                "AND substr(tablename, 1, 3) = 'v1_' "
                "AND substr(indexname, 1, 3) <> 'v1_'"
            )
            for row in rows:
                name = row["indexname"]
                await tx.execute(
                    f'ALTER INDEX satmachineadmin."{name}" RENAME TO "v1_{name}"'
                )
        await m001_initial_schema(tx)  # type: ignore[arg-type]
        await m002_every_sat_held_by_the_database(tx)  # type: ignore[arg-type]


async def m004_payments_that_leave_lnbits(db: Database) -> None:
    """What an external payment needs on its leg (docs/money.md, "Payments that
    leave LNbits").

    - legs.sent_sats: what the destination was paid, once LNbits reports success
      (backfilled for completed legs: every payment so far sent its amount);
    - legs.fee_msat: the routing fee LNbits charged the source wallet for it (exact,
      in msat as LNbits counts it; 0 for an internal payment);
    - legs.in_flight_since: when LNbits first reported the leg's payment pending
      (the node has not answered yet); NULL once it succeeded or failed.
    """
    big = db.big_int
    for column in ("sent_sats", "fee_msat", "in_flight_since"):
        await db.execute(f"ALTER TABLE satmachineadmin.legs ADD COLUMN {column} {big}")
    await db.execute(
        "UPDATE satmachineadmin.legs SET sent_sats = amount_sats, fee_msat = 0 "
        "WHERE status = 'completed'"
    )


def _epoch(value: Any) -> Optional[int]:
    """A v1 timestamp as epoch seconds: v1 wrote datetimes, which LNbits stores as
    epoch integers on SQLite and as TIMESTAMP (naive, taken as UTC) on PostgreSQL."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp())
    if isinstance(value, (int, float, Decimal)):
        return int(value)
    text_value = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text_value):
        return int(Decimal(text_value))
    return _epoch(datetime.fromisoformat(text_value.replace("Z", "+00:00")))


def _whole_to_minor(value: Any) -> int:
    """v1 amounts are whole GTQ (`1000` is Q1000.00): 2 decimals, in minor units."""
    return int((Decimal(str(value or 0)) * 100).to_integral_value())


def _decimal_text(value: Any) -> Optional[str]:
    """A v1 REAL (rates, percents) as the shortest decimal that reads back as the
    same number, so no float reaches this version's arithmetic. PostgreSQL's REAL
    is single precision (0.055 comes back as 0.054999999701976776): a value that is
    exactly a single-precision float is matched at that precision."""
    if value is None:
        return None
    number = float(value)
    single = struct.pack("f", number)
    is_single = struct.unpack("f", single)[0] == number
    for digits in range(1, 18):
        candidate = f"{number:.{digits}g}"
        back = float(candidate)
        if back == number or (is_single and struct.pack("f", back) == single):
            return format(Decimal(candidate).normalize(), "f")
    return format(Decimal(repr(number)).normalize(), "f")


async def _insert_row(db: Any, table: str, values: dict) -> None:
    columns = ", ".join(values)
    marks = ", ".join(f":{key}" for key in values)
    await db.execute(
        f"INSERT INTO satmachineadmin.{table} ({columns}) VALUES ({marks})", values
    )


async def _wallet_owner(wallet_id: Optional[str]) -> Optional[str]:
    if not wallet_id:
        return None
    from lnbits.core.crud import get_wallet

    wallet = await get_wallet(wallet_id)
    return wallet.user if wallet else None


def _new_id() -> str:
    return uuid.uuid4().hex


async def m005_v1_data_imported(db: Database) -> None:
    """v1's records imported into this version's tables (docs/upgrade.md): its LPs
    with their preferences, deposits (whole GTQ to minor units), payments as
    completed legs counted in the LPs' balances, one machine per v1 configuration
    (source wallet, GTQ, commission wallet as its split), the Lamassu configuration
    (password encrypted, v1's plaintext blanked) and v1's processed Lamassu
    transactions as processed settlements whose keys are claimed, so they are never
    paid again. One transaction; done once (an audit row `v1.import` marks it); v1's
    tables are kept as they were apart from the blanked secrets."""
    attached = False
    if db.type == SQLITE:
        from lnbits.settings import settings

        path = os.path.join(settings.lnbits_data_folder, "ext_satoshimachine.sqlite3")
        if os.path.isfile(path):
            await db.execute(f"ATTACH '{path}' AS satoshimachine")
            attached = True
    try:
        # Where v1 kept each table: "schema.prefix" and the v1 tables found there.
        sources: list[tuple[str, set[str]]] = []
        places = [("satmachineadmin", V1_PREFIX)]
        if attached or db.type != SQLITE:
            places.append(("satoshimachine", ""))
        for schema, prefix in places:
            found = await _tables(db, schema)
            have = {t for t in V1_TABLES if prefix + t in found}
            if "dca_clients" in have:
                sources.append((f"{schema}.{prefix}", have))
        if sources:
            async with _one_transaction(db) as tx:
                await _import_v1(tx, sources)
    finally:
        if attached:
            await db.execute("DETACH DATABASE satoshimachine")


async def _import_v1(tx: Any, sources: list[tuple[str, set[str]]]) -> None:  # noqa: C901
    done = await tx.fetchone(
        "SELECT id FROM satmachineadmin.audit_log WHERE action = 'v1.import'"
    )
    if done:
        return

    async def rows(table: str) -> list[dict]:
        """The table's rows from every place v1 kept it, each id once."""
        found: dict[str, dict] = {}
        for place, have in sources:
            if table in have:
                for row in await tx.fetchall(f"SELECT * FROM {place}{table}"):
                    found.setdefault(str(row["id"]), dict(row))
        return list(found.values())

    clients = sorted(
        await rows("dca_clients"),
        key=lambda r: (_epoch(r["created_at"]) or 0, r["id"]),
    )
    deposits = await rows("dca_deposits")
    payments = await rows("dca_payments")
    configs = sorted(
        await rows("lamassu_config"),
        # The active configuration first, then the newest.
        key=lambda r: (not r["is_active"], -(_epoch(r["updated_at"]) or 0), r["id"]),
    )
    transactions = await rows("lamassu_transactions")
    moment = int(datetime.now(timezone.utc).timestamp())

    from lnbits.settings import settings

    operator = None
    for config in configs:
        operator = await _wallet_owner(config["source_wallet_id"])
        if operator:
            break
    # v1 was run by LNbits' super user; an install without a usable configuration
    # has its records attributed to them.
    operator = operator or settings.super_user or "v1-operator"
    actor = "migration:m005"

    notes: list[str] = []
    machines: dict[str, dict] = {}  # by wallet id
    for config in configs:
        wallet = config["source_wallet_id"]
        if not wallet or wallet in machines:
            continue
        if await _wallet_owner(wallet) not in (None, operator):
            notes.append(
                f"v1 configuration {config['id']}: its source wallet belongs to "
                "another user; no machine was made of it"
            )
            continue
        existing = await tx.fetchone(
            "SELECT id FROM satmachineadmin.machines WHERE wallet_id = :wallet",
            {"wallet": wallet},
        )
        machine = {
            "id": existing["id"] if existing else f"v1-{config['id']}",
            "wallet_id": wallet,
            "config": config,
        }
        machines[wallet] = machine
        if existing:
            notes.append(
                f"v1 configuration {config['id']}: machine {existing['id']} already "
                "pays from its wallet; its records were added to it"
            )
            continue
        created = _epoch(config["created_at"]) or moment
        await _insert_row(
            tx,
            "machines",
            {
                "id": machine["id"],
                "operator_user_id": operator,
                "name": f"Sat Machine (v1, {config['host']})"[:100],
                "wallet_id": wallet,
                "fiat_currency": "GTQ",
                "status": "active" if config["is_active"] else "inactive",
                "created_at": created,
                "updated_at": moment,
            },
        )
        if config["commission_wallet_id"]:
            await _insert_row(
                tx,
                "commission_rules",
                {
                    "id": _new_id(),
                    "operator_user_id": operator,
                    "machine_id": machine["id"],
                    "position": 0,
                    "target": config["commission_wallet_id"],
                    "target_kind": "wallet",
                    "percent": "100",
                    "label": "commission wallet (v1)",
                    "created_at": moment,
                },
            )

    if machines:
        home = next(iter(machines.values()))
    else:
        # LPs with no configuration to pay from: kept on an inactive machine the
        # operator gives a wallet to.
        home = {"id": "v1-machine", "wallet_id": "v1-no-wallet", "config": None}
        await _insert_row(
            tx,
            "machines",
            {
                "id": home["id"],
                "operator_user_id": operator,
                "name": "Sat Machine (v1, no wallet: set one)",
                "wallet_id": home["wallet_id"],
                "fiat_currency": "GTQ",
                "status": "inactive",
                "created_at": moment,
                "updated_at": moment,
            },
        )
        notes.append("v1 had no configuration with a source wallet: set the wallet")
    home_id = home["id"]

    # Lamassu: the active (else newest) configuration, password encrypted.
    first = configs[0] if configs else None
    if first is not None:
        from lnbits.helpers import encrypt_internal_message

        newest_seen = max(
            [_epoch(t["transaction_time"]) or 0 for t in transactions]
            + [_epoch(first["last_successful_poll"]) or 0]
        )
        taken = await tx.fetchone(
            "SELECT operator_user_id FROM satmachineadmin.lamassu_config "
            "WHERE operator_user_id = :op",
            {"op": operator},
        )
        if taken:
            notes.append("a Lamassu configuration existed already: v1's was not used")
        else:
            await _insert_row(
                tx,
                "lamassu_config",
                {
                    "operator_user_id": operator,
                    "host": first["host"],
                    "port": int(first["port"] or 5432),
                    "database_name": first["database_name"],
                    "username": first["username"],
                    "password_encrypted": encrypt_internal_message(first["password"])
                    if first["password"]
                    else None,
                    "enabled": bool(first["is_active"]),
                    "cursor_at": newest_seen or None,
                    "created_at": _epoch(first["created_at"]) or moment,
                    "updated_at": moment,
                },
            )
        if any(c["use_ssh_tunnel"] for c in configs):
            tunnelled = next(c for c in configs if c["use_ssh_tunnel"])
            notes.append(
                "v1 reached Lamassu through an SSH tunnel "
                f"({tunnelled['ssh_username'] or ''}@{tunnelled['ssh_host']}:"
                f"{tunnelled['ssh_port']}); this version connects to PostgreSQL "
                "directly: run the tunnel outside LNbits (or open the port to this "
                "server only) and set host and port on the Lamassu tab. v1's SSH "
                "settings were not imported."
            )
        # The plaintext is gone from v1's tables (they stay, for the record).
        for place, have in sources:
            if "lamassu_config" in have:
                await tx.execute(
                    f"UPDATE {place}lamassu_config SET "
                    "password = '', ssh_password = NULL, ssh_private_key = NULL"
                )
        devices = sorted(
            (t for t in transactions if t["device_id"]),
            key=lambda t: _epoch(t["transaction_time"]) or 0,
        )
        if devices:
            await tx.execute(
                "UPDATE satmachineadmin.machines SET lamassu_device_id = :device "
                "WHERE id = :id AND lamassu_device_id IS NULL",
                {"device": devices[-1]["device_id"], "id": home_id},
            )

    # LPs: one enrolment per LNbits user (v1 allowed a user twice: merged).
    client_of: dict[str, str] = {}  # v1 client id -> enrolment id
    wallet_of: dict[str, str] = {}
    first_of_user: dict[str, dict] = {}
    for client in clients:
        user = client["user_id"]
        if user in first_of_user:
            client_of[client["id"]] = first_of_user[user]["id"]
            notes.append(
                f"v1 LP {client['id']} is LNbits user {user} again: merged into "
                f"{first_of_user[user]['id']}"
            )
            continue
        first_of_user[user] = client
        client_of[client["id"]] = client["id"]
        wallet_of[client["id"]] = client["wallet_id"]

    deposited: dict[str, int] = {}
    for deposit in deposits:
        if deposit["client_id"] in client_of and deposit["status"] == "confirmed":
            cid = client_of[deposit["client_id"]]
            deposited[cid] = deposited.get(cid, 0) + _whole_to_minor(deposit["amount"])
    spent: dict[str, int] = {}
    received: dict[str, int] = {}
    for payment in payments:
        if payment["client_id"] in client_of and payment["status"] == "confirmed":
            cid = client_of[payment["client_id"]]
            spent[cid] = spent.get(cid, 0) + _whole_to_minor(payment["amount_fiat"])
            received[cid] = received.get(cid, 0) + int(payment["amount_sats"])

    lp_lines = []
    for user, client in first_of_user.items():
        cid = client["id"]
        created = _epoch(client["created_at"]) or moment
        limit = client["fixed_mode_daily_limit"]
        prefs = await tx.fetchone(
            "SELECT user_id FROM satmachineadmin.lp_preferences WHERE user_id = :u",
            {"u": user},
        )
        if not prefs:
            await _insert_row(
                tx,
                "lp_preferences",
                {
                    "user_id": user,
                    "wallet_id": client["wallet_id"],
                    "dca_mode": "fixed" if client["dca_mode"] == "fixed" else "flow",
                    "fixed_mode_daily_limit": str(limit) if limit else None,
                    "created_at": created,
                    "updated_at": _epoch(client["updated_at"]) or created,
                },
            )
        deposits_minor, reserved = deposited.get(cid, 0), spent.get(cid, 0)
        await _insert_row(
            tx,
            "clients",
            {
                "id": cid,
                "machine_id": home_id,
                "operator_user_id": operator,
                "user_id": user,
                "username": client["username"],
                "status": "active" if client["status"] == "active" else "inactive",
                "deposits_minor": deposits_minor,
                "reserved_minor": reserved,
                "sats_received": received.get(cid, 0),
                "cycle_complete": 0 < deposits_minor <= reserved,
                # v1 let payments exceed deposits: kept as it was (m002's flag).
                "overspent_before_m002": reserved > deposits_minor,
                "created_at": created,
                "updated_at": moment,
            },
        )
        remaining = max(0, deposits_minor - reserved)
        lp_lines.append((cid, user, client["username"], deposits_minor, reserved))
        await _insert_row(
            tx,
            "audit_log",
            {
                "id": _new_id(),
                "actor_user_id": actor,
                "operator_user_id": operator,
                "action": "v1.import.lp",
                "entity_type": "client",
                "entity_id": cid,
                "detail": json.dumps(
                    {
                        "user_id": user,
                        "username": client["username"],
                        "deposits_minor": deposits_minor,
                        "paid_minor": reserved,
                        "remaining_minor": remaining,
                        "sats_received": received.get(cid, 0),
                        "currency": "GTQ",
                    },
                    sort_keys=True,
                ),
                "created_at": moment,
            },
        )

    for deposit in deposits:
        if deposit["client_id"] not in client_of:
            notes.append(f"v1 deposit {deposit['id']} of no known LP: not imported")
            continue
        created = _epoch(deposit["created_at"]) or moment
        await _insert_row(
            tx,
            "deposits",
            {
                "id": deposit["id"],
                "client_id": client_of[deposit["client_id"]],
                "machine_id": home_id,
                "operator_user_id": operator,
                "amount_minor": _whole_to_minor(deposit["amount"]),
                "currency": deposit["currency"] or "GTQ",
                "status": deposit["status"],
                "notes": deposit["notes"],
                "created_at": created,
                "confirmed_at": _epoch(deposit["confirmed_at"]),
            },
        )

    # v1's processed Lamassu transactions: settled, their keys claimed.
    settlement_of: dict[str, str] = {}
    for row in sorted(transactions, key=lambda t: _epoch(t["processed_at"]) or 0):
        external_id = str(row["lamassu_transaction_id"])
        key = f"lamassu:{operator}:{external_id}"
        claimed = await tx.fetchone(
            "SELECT settlement_id FROM satmachineadmin.transaction_keys "
            "WHERE key = :key",
            {"key": key},
        )
        if claimed:
            settlement_of[external_id] = claimed["settlement_id"]
            continue
        sid = f"v1-{row['id']}"
        settlement_of[external_id] = sid
        processed = _epoch(row["processed_at"]) or moment
        await _insert_row(
            tx,
            "settlements",
            {
                "id": sid,
                "machine_id": home_id,
                "operator_user_id": operator,
                "source": "lamassu",
                "external_id": external_id,
                "tx_type": "cash_out",
                "status": "processed",
                "fiat_amount_minor": _whole_to_minor(row["fiat_amount"]),
                "currency": row["fiat_code"] or "GTQ",
                "wire_sats": int(row["crypto_amount"]),
                "principal_sats": int(row["base_amount_sats"]),
                "fee_sats": int(row["commission_amount_sats"]),
                "fee_fraction": _decimal_text(row["effective_commission"]),
                "exchange_rate": _decimal_text(row["exchange_rate"]),
                "raw_payload": json.dumps(
                    {"v1": {k: str(v) for k, v in row.items()}}, sort_keys=True
                ),
                "external_created_at": _epoch(row["transaction_time"]),
                "created_at": processed,
                "updated_at": processed,
                "processed_at": processed,
            },
        )
        await _insert_row(
            tx,
            "transaction_keys",
            {
                "key": key,
                "operator_user_id": operator,
                "settlement_id": sid,
                "created_at": processed,
            },
        )

    # v1's payments: history. Confirmed ones are completed legs (counted in the LP's
    # balance above, as v1 counted them); the others never paid anything and are
    # skipped legs, which reserve nothing and are never paid.
    home_wallet = home["wallet_id"]
    for payment in payments:
        lp = client_of.get(payment["client_id"])
        confirmed = payment["status"] == "confirmed"
        created = _epoch(payment["created_at"]) or moment
        kind = payment["transaction_type"]
        await _insert_row(
            tx,
            "legs",
            {
                "id": f"v1-{payment['id']}",
                "idempotency_key": f"v1:payment:{payment['id']}",
                "settlement_id": settlement_of.get(
                    str(payment["lamassu_transaction_id"] or "")
                ),
                "machine_id": home_id,
                "operator_user_id": operator,
                "client_id": lp,
                "leg_type": ("fixed" if kind == "fixed" else "dca")
                if lp
                else "commission",
                "status": "completed" if confirmed else "skipped",
                "amount_sats": int(payment["amount_sats"]),
                "amount_fiat_minor": _whole_to_minor(payment["amount_fiat"]),
                "currency": "GTQ",
                "exchange_rate": _decimal_text(payment["exchange_rate"]),
                "source_wallet_id": home_wallet,
                "destination": wallet_of.get(lp or ""),
                "destination_kind": "wallet" if lp else None,
                "memo": f"paid by v1 ({kind})",
                "payment_hash": payment["payment_hash"],
                "error": None
                if confirmed
                else f"v1 payment {payment['status']}: v1 did not count it",
                "created_at": created,
                "updated_at": created,
                "completed_at": (_epoch(payment["transaction_time"]) or created)
                if confirmed
                else None,
                "sent_sats": int(payment["amount_sats"]) if confirmed else None,
                "fee_msat": 0 if confirmed else None,
            },
        )

    await _insert_row(
        tx,
        "audit_log",
        {
            "id": _new_id(),
            "actor_user_id": actor,
            "operator_user_id": operator,
            "action": "v1.import",
            "entity_type": "operator",
            "entity_id": operator,
            "detail": json.dumps(
                {
                    "lps": len(first_of_user),
                    "deposits": len(deposits),
                    "payments": len(payments),
                    "settlements": len(transactions),
                    "machines": sorted(m["id"] for m in machines.values()) or [home_id],
                    "lamassu_config": first is not None,
                    "sources": [place.rstrip(".") for place, _ in sources],
                    "remaining_minor": sum(max(0, d - r) for _, _, _, d, r in lp_lines),
                    "notes": notes,
                },
                sort_keys=True,
            ),
            "created_at": moment,
        },
    )


async def m006_alerts(db: Database) -> None:
    """Alerts (services/alerts.py): incidents and LP events, the messages that tell
    someone about them, and each user's choice of what to be told.

    - alerts: one row per incident or event, keyed by `incident_key` (unique: an
      incident seen again by the detector, before or after a restart, is the same
      row). `resolved_at` is set when the condition clears (events are resolved when
      they open).
    - alert_messages: the outbox. Each message is written in the same transaction as
      the alert it speaks for and delivered later by the sender loop, so the engine
      and the listener never wait for a mail server; `attempts` and `next_attempt_at`
      drive the backoff, `channels_done` keeps a retry from sending twice on a channel
      that already took it.
    - alert_settings: a user's choices as JSON (kinds on or off, for all machines or
      per machine, thresholds; the LP's notifications and digest period).
    - alert_state: named epoch values (`events_since`: LP events older than this
      migration are history, not news).
    The updated_at indexes let the live-update loop find what changed since its last
    tick without scanning the tables.
    """
    big = db.big_int
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.alerts (
            id TEXT PRIMARY KEY,
            incident_key TEXT NOT NULL,
            kind TEXT NOT NULL,
            audience TEXT NOT NULL,
            user_id TEXT NOT NULL,
            operator_user_id TEXT,
            machine_id TEXT,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            notify BOOLEAN NOT NULL DEFAULT TRUE,
            opened_at {big} NOT NULL,
            resolved_at {big},
            updated_at {big} NOT NULL
        );
        """
    )
    await _index(db, "alerts_key_uq", "alerts", "incident_key", unique=True)
    await _index(db, "alerts_user_ix", "alerts", "user_id, opened_at")
    await _index(db, "alerts_open_ix", "alerts", "resolved_at, audience")
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.alert_messages (
            id TEXT PRIMARY KEY,
            alert_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            phase TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'queued',
            channels_done TEXT NOT NULL DEFAULT '',
            attempts INT NOT NULL DEFAULT 0,
            next_attempt_at {big} NOT NULL DEFAULT 0,
            last_error TEXT,
            created_at {big} NOT NULL,
            sent_at {big}
        );
        """
    )
    await _index(
        db, "alert_messages_queue_ix", "alert_messages", "status, next_attempt_at"
    )
    await _index(db, "alert_messages_alert_ix", "alert_messages", "alert_id")
    await _index(db, "alert_messages_user_ix", "alert_messages", "user_id, created_at")
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.alert_settings (
            user_id TEXT PRIMARY KEY,
            settings TEXT NOT NULL,
            updated_at {big} NOT NULL
        );
        """
    )
    await db.execute(
        f"""
        CREATE TABLE satmachineadmin.alert_state (
            name TEXT PRIMARY KEY,
            value {big} NOT NULL
        );
        """
    )
    await db.execute(
        "INSERT INTO satmachineadmin.alert_state (name, value) VALUES (:name, :value)",
        {"name": "events_since", "value": int(time.time())},
    )
    await _index(db, "legs_updated_ix", "legs", "updated_at")
    await _index(db, "settlements_updated_ix", "settlements", "updated_at")
    await _index(db, "clients_updated_ix", "clients", "updated_at")
