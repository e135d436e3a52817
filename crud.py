"""SQL and nothing else.

Every write that must be atomic with another (a leg and the running totals it moves, a
deposit confirmation and the LP's balance) goes through `transaction()`: LNbits'
`Connection.execute` commits after each statement, so multi-statement units use the
underlying connection and commit once at the end; an exception rolls all of it back.
All SQL uses named parameters; the only interpolated text is our own fixed table
names and column lists.
"""

import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Optional, TypeVar

from lnbits.db import Connection, Database, insert_query, model_to_dict
from pydantic import BaseModel
from sqlalchemy import text

from .models import (
    Alert,
    AlertMessage,
    AuditEntry,
    Client,
    ClientWithPrefs,
    CommissionRule,
    Deposit,
    Leg,
    LpPreferences,
    Machine,
    PlatformConfig,
    Settlement,
    SettlementNote,
)

# The extension's database; __init__.py re-exports it for LNbits.
db = Database("ext_satmachineadmin")

T = TypeVar("T", bound=BaseModel)

# Leg statuses whose fiat is spoken for: completed, in flight, or owed and retried.
RESERVING_STATUSES = ("pending", "completed", "failed")
BALANCE_LEG_TYPES = ("dca", "fixed", "settlement")


def _named_list(prefix: str, values: Iterable[Any]) -> tuple[str, dict[str, Any]]:
    """Named parameters for an IN list: (":p0, :p1", {"p0": ..., "p1": ...})."""
    keys = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{k}" for k in keys), keys


def now() -> int:
    return int(time.time())


_last_id_ms = 0
_id_counter = 0


def new_id() -> str:
    """32 hex chars that sort by creation: LR ties go to the earlier part, ordered by
    (creation time, id), so rows made within one second must still sort in order."""
    global _last_id_ms, _id_counter
    ms = time.time_ns() // 1_000_000
    if ms <= _last_id_ms:
        _id_counter += 1
        ms = _last_id_ms
    else:
        _last_id_ms, _id_counter = ms, 0
    return f"{ms:012x}{_id_counter & 0xFFFF:04x}{os.urandom(8).hex()}"


class Tx:
    """One database transaction: statements run uncommitted until the block ends."""

    def __init__(self, conn: Connection):
        self.conn = conn

    async def execute(self, sql: str, values: Optional[dict] = None) -> int:
        result = await self.conn.conn.execute(
            text(self.conn.rewrite_query(sql)),
            self.conn.rewrite_values(values or {}),
        )
        return result.rowcount

    async def execute_many(self, sql: str, rows: Sequence[dict]) -> None:
        await self.conn.conn.execute(
            text(self.conn.rewrite_query(sql)),
            [self.conn.rewrite_values(row) for row in rows],
        )

    async def insert(self, table: str, model: BaseModel) -> None:
        await self.execute(insert_query(table, model), model_to_dict(model))

    async def fetchone(
        self, sql: str, values: Optional[dict] = None, model: Optional[type[T]] = None
    ) -> Any:
        return await self.conn.fetchone(sql, values or {}, model)

    async def fetchall(
        self, sql: str, values: Optional[dict] = None, model: Optional[type[T]] = None
    ) -> list[Any]:
        return await self.conn.fetchall(sql, values or {}, model)


def _reader(tx: Optional["Tx"]) -> Any:
    """The transaction when there is one, else the database (autocommit reads)."""
    return tx if tx is not None else db


async def _by_id(
    table: str, model: type[T], row_id: str, tx: Optional["Tx"] = None
) -> Optional[T]:
    # `table` is always one of our own fixed table names, never a value.
    return await _reader(tx).fetchone(
        f"SELECT * FROM satmachineadmin.{table} WHERE id = :id", {"id": row_id}, model
    )


async def _owned_by(
    table: str, model: type[T], operator_user_id: str, row_id: str
) -> Optional[T]:
    """The row, if the operator owns it: another operator's id reads as missing."""
    return await db.fetchone(
        f"SELECT * FROM satmachineadmin.{table} "
        "WHERE id = :id AND operator_user_id = :op",
        {"id": row_id, "op": operator_user_id},
        model,
    )


@asynccontextmanager
async def transaction() -> AsyncIterator[Tx]:
    async with db.connect() as conn:
        tx = Tx(conn)
        yield tx
        await conn.conn.commit()


async def add_audit(
    tx: Tx,
    actor_user_id: str,
    operator_user_id: Optional[str],
    action: str,
    entity_type: str,
    entity_id: str,
    detail: Optional[dict] = None,
) -> None:
    await tx.insert(
        "satmachineadmin.audit_log",
        AuditEntry(
            id=new_id(),
            actor_user_id=actor_user_id,
            operator_user_id=operator_user_id,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            detail=json.dumps(detail, sort_keys=True, default=str) if detail else None,
            created_at=now(),
        ),
    )


async def audit(
    actor_user_id: str,
    operator_user_id: Optional[str],
    action: str,
    entity_type: str,
    entity_id: str,
    detail: Optional[dict] = None,
) -> None:
    """An audit row on its own, for a change already committed."""
    async with transaction() as tx:
        await add_audit(
            tx, actor_user_id, operator_user_id, action, entity_type, entity_id, detail
        )


@asynccontextmanager
async def audited(
    actor_user_id: str,
    operator_user_id: Optional[str],
    action: str,
    entity_type: str,
    entity_id: str,
    detail: Optional[dict] = None,
) -> AsyncIterator[Tx]:
    """A transaction whose changes commit together with their audit row, or not at
    all: a refusal raised inside the block leaves neither."""
    async with transaction() as tx:
        yield tx
        await add_audit(
            tx, actor_user_id, operator_user_id, action, entity_type, entity_id, detail
        )


async def get_audit_log(
    operator_user_id: str, entity_id: Optional[str] = None, limit: int = 200
) -> list[AuditEntry]:
    where = "operator_user_id = :op"
    values: dict = {"op": operator_user_id, "limit": limit}
    if entity_id:
        where += " AND entity_id = :entity"
        values["entity"] = entity_id
    return await db.fetchall(
        f"SELECT * FROM satmachineadmin.audit_log WHERE {where} "
        "ORDER BY created_at DESC, id LIMIT :limit",
        values,
        AuditEntry,
    )


# ---------------------------------------------------------------- machines


async def insert_machine(tx: Tx, machine: Machine) -> None:
    await tx.insert("satmachineadmin.machines", machine)


async def save_machine(tx: Tx, machine: Machine) -> None:
    values = model_to_dict(machine)
    columns = ", ".join(f"{k} = :{k}" for k in values if k != "id")
    await tx.execute(
        f"UPDATE satmachineadmin.machines SET {columns} WHERE id = :id",
        values,
    )


async def get_machine(machine_id: str) -> Optional[Machine]:
    return await _by_id("machines", Machine, machine_id)


async def get_operator_machine(
    operator_user_id: str, machine_id: str
) -> Optional[Machine]:
    return await _owned_by("machines", Machine, operator_user_id, machine_id)


async def get_machine_by_wallet(wallet_id: str) -> Optional[Machine]:
    return await db.fetchone(
        "SELECT * FROM satmachineadmin.machines WHERE wallet_id = :wallet",
        {"wallet": wallet_id},
        Machine,
    )


async def get_machines_by_device(device_ids: Sequence[str]) -> list[Machine]:
    if not device_ids:
        return []
    marks, keys = _named_list("d", device_ids)
    return await db.fetchall(
        f"SELECT * FROM satmachineadmin.machines WHERE lamassu_device_id IN ({marks})",
        keys,
        Machine,
    )


async def list_machines(operator_user_id: str) -> list[Machine]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.machines WHERE operator_user_id = :op "
        "ORDER BY created_at, id",
        {"op": operator_user_id},
        Machine,
    )


async def list_active_machines() -> list[Machine]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.machines WHERE status = 'active' "
        "ORDER BY created_at, id",
        {},
        Machine,
    )


async def advance_sweep_cursor(machine_id: str, cursor: int) -> None:
    await db.execute(
        "UPDATE satmachineadmin.machines SET sweep_cursor = :cursor "
        "WHERE id = :id AND sweep_cursor < :cursor",
        {"id": machine_id, "cursor": cursor},
    )


# ---------------------------------------------------------------- LP preferences


async def get_lp_preferences(user_id: str) -> Optional[LpPreferences]:
    return await db.fetchone(
        "SELECT * FROM satmachineadmin.lp_preferences WHERE user_id = :user",
        {"user": user_id},
        LpPreferences,
    )


async def upsert_lp_preferences(tx: Tx, prefs: LpPreferences) -> None:
    exists = await tx.fetchone(
        "SELECT user_id FROM satmachineadmin.lp_preferences WHERE user_id = :user",
        {"user": prefs.user_id},
    )
    if not exists:
        await tx.insert("satmachineadmin.lp_preferences", prefs)
        return
    await tx.execute(
        """
        UPDATE satmachineadmin.lp_preferences
        SET wallet_id = :wallet_id, dca_mode = :dca_mode,
            fixed_mode_daily_limit = :fixed_mode_daily_limit,
            autoforward_enabled = :autoforward_enabled,
            autoforward_ln_address = :autoforward_ln_address,
            updated_at = :updated_at
        WHERE user_id = :user_id
        """,
        model_to_dict(prefs),
    )


# ---------------------------------------------------------------- clients


async def insert_client(tx: Tx, client: Client) -> None:
    await tx.insert("satmachineadmin.clients", client)


async def get_client(client_id: str, tx: Optional[Tx] = None) -> Optional[Client]:
    return await _by_id("clients", Client, client_id, tx)


async def get_operator_client(
    operator_user_id: str, client_id: str
) -> Optional[Client]:
    return await _owned_by("clients", Client, operator_user_id, client_id)


async def get_client_by_machine_user(machine_id: str, user_id: str) -> Optional[Client]:
    return await db.fetchone(
        "SELECT * FROM satmachineadmin.clients "
        "WHERE machine_id = :machine AND user_id = :user",
        {"machine": machine_id, "user": user_id},
        Client,
    )


async def list_clients(
    operator_user_id: str, machine_id: Optional[str] = None
) -> list[Client]:
    where = "operator_user_id = :op"
    values = {"op": operator_user_id}
    if machine_id:
        where += " AND machine_id = :machine"
        values["machine"] = machine_id
    return await db.fetchall(
        f"SELECT * FROM satmachineadmin.clients WHERE {where} ORDER BY created_at, id",
        values,
        Client,
    )


async def list_user_clients(user_id: str) -> list[Client]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.clients WHERE user_id = :user "
        "ORDER BY created_at, id",
        {"user": user_id},
        Client,
    )


async def update_client_fields(
    tx: Tx, client_id: str, username: Optional[str], status: str
) -> None:
    await tx.execute(
        "UPDATE satmachineadmin.clients SET username = :username, status = :status, "
        "updated_at = :now WHERE id = :id",
        {"id": client_id, "username": username, "status": status, "now": now()},
    )


_CLIENT_WITH_PREFS = """
    SELECT c.id, c.machine_id, c.user_id, c.username, c.status, c.deposits_minor,
           c.reserved_minor, c.sats_received, c.created_at, p.wallet_id, p.dca_mode,
           p.fixed_mode_daily_limit, p.autoforward_enabled, p.autoforward_ln_address
    FROM satmachineadmin.clients c
    LEFT JOIN satmachineadmin.lp_preferences p ON p.user_id = c.user_id
"""


async def list_machine_clients_with_prefs(
    machine_id: str, tx: Optional[Tx] = None
) -> list[ClientWithPrefs]:
    sql = (
        _CLIENT_WITH_PREFS
        + " WHERE c.machine_id = :machine ORDER BY c.created_at, c.id"
    )
    if tx:
        rows: Any = await tx.fetchall(sql, {"machine": machine_id})
    else:
        rows = await db.fetchall(sql, {"machine": machine_id})
    return [ClientWithPrefs.from_row(row) for row in rows]


async def list_operator_clients_with_prefs(
    operator_user_id: str, machine_id: Optional[str] = None
) -> list[ClientWithPrefs]:
    where = " WHERE c.operator_user_id = :op"
    values = {"op": operator_user_id}
    if machine_id:
        where += " AND c.machine_id = :machine"
        values["machine"] = machine_id
    rows: Any = await db.fetchall(
        _CLIENT_WITH_PREFS + where + " ORDER BY c.created_at, c.id", values
    )
    return [ClientWithPrefs.from_row(row) for row in rows]


async def autoforward_addresses(machine_id: str) -> dict[str, str]:
    """client id -> Lightning address, for the machine's LPs who auto-forward."""
    rows: Any = await db.fetchall(
        "SELECT c.id, p.autoforward_ln_address FROM satmachineadmin.clients c "
        "JOIN satmachineadmin.lp_preferences p ON p.user_id = c.user_id "
        "WHERE c.machine_id = :machine AND p.autoforward_enabled = TRUE "
        "AND p.autoforward_ln_address IS NOT NULL",
        {"machine": machine_id},
    )
    return {
        row["id"]: row["autoforward_ln_address"]
        for row in rows
        if row["autoforward_ln_address"]
    }


async def get_client_with_prefs(
    client_id: str, tx: Optional[Tx] = None
) -> Optional[ClientWithPrefs]:
    sql = _CLIENT_WITH_PREFS + " WHERE c.id = :id"
    row = await (
        tx.fetchone(sql, {"id": client_id})
        if tx
        else db.fetchone(sql, {"id": client_id})
    )
    return ClientWithPrefs.from_row(row) if row else None


_ADD_CLIENT_TOTALS = """
    UPDATE satmachineadmin.clients
    SET deposits_minor = deposits_minor + :deposits,
        reserved_minor = reserved_minor + :reserved,
        sats_received = sats_received + :sats,
        cycle_complete = CASE
            WHEN deposits_minor + :deposits > 0
                 AND deposits_minor + :deposits <= reserved_minor + :reserved
            THEN TRUE ELSE FALSE END,
        updated_at = :now
    WHERE id = :id
"""


def _totals(
    client_id: str, deposits: int = 0, reserved: int = 0, sats: int = 0
) -> dict:
    return {
        "id": client_id,
        "deposits": deposits,
        "reserved": reserved,
        "sats": sats,
        "now": now(),
    }


async def add_client_totals(
    tx: Tx,
    client_id: str,
    deposits_minor: int = 0,
    reserved_minor: int = 0,
    sats_received: int = 0,
) -> None:
    await tx.execute(
        _ADD_CLIENT_TOTALS,
        _totals(client_id, deposits_minor, reserved_minor, sats_received),
    )


# ---------------------------------------------------------------- deposits


async def insert_deposit(tx: Tx, deposit: Deposit) -> None:
    await tx.insert("satmachineadmin.deposits", deposit)


async def get_operator_deposit(
    operator_user_id: str, deposit_id: str
) -> Optional[Deposit]:
    return await _owned_by("deposits", Deposit, operator_user_id, deposit_id)


async def list_deposits(
    operator_user_id: str, client_id: Optional[str] = None
) -> list[Deposit]:
    where = "operator_user_id = :op"
    values = {"op": operator_user_id}
    if client_id:
        where += " AND client_id = :client"
        values["client"] = client_id
    return await db.fetchall(
        f"SELECT * FROM satmachineadmin.deposits WHERE {where} "
        "ORDER BY created_at DESC, id",
        values,
        Deposit,
    )


async def list_client_deposits(client_id: str) -> list[Deposit]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.deposits WHERE client_id = :client "
        "ORDER BY created_at DESC, id",
        {"client": client_id},
        Deposit,
    )


async def transition_deposit(
    tx: Tx, deposit_id: str, from_status: str, to_status: str
) -> bool:
    """Move a deposit between statuses; False when someone else moved it first."""
    stamp_column = "confirmed_at" if to_status == "confirmed" else "cancelled_at"
    changed = await tx.execute(
        f"UPDATE satmachineadmin.deposits SET status = :to, {stamp_column} = :now "
        "WHERE id = :id AND status = :from",
        {"id": deposit_id, "from": from_status, "to": to_status, "now": now()},
    )
    return changed == 1


# ---------------------------------------------------------------- platform config


async def get_platform_config() -> PlatformConfig:
    row: Any = await db.fetchone(
        "SELECT * FROM satmachineadmin.platform_config WHERE id = 1", {}, PlatformConfig
    )
    return row or PlatformConfig()


async def save_platform_config(tx: Tx, config: PlatformConfig) -> None:
    exists = await tx.fetchone(
        "SELECT id FROM satmachineadmin.platform_config WHERE id = 1"
    )
    if exists:
        await tx.execute(
            "UPDATE satmachineadmin.platform_config SET "
            "super_fee_fraction = :super_fee_fraction, fee_wallet_id = :fee_wallet_id, "
            "updated_at = :updated_at WHERE id = 1",
            model_to_dict(config),
        )
    else:
        await tx.insert("satmachineadmin.platform_config", config)


# ---------------------------------------------------------------- commission rules


async def list_commission_rules(
    operator_user_id: str, machine_id: Optional[str]
) -> list[CommissionRule]:
    if machine_id is None:
        return await db.fetchall(
            "SELECT * FROM satmachineadmin.commission_rules "
            "WHERE operator_user_id = :op AND machine_id IS NULL ORDER BY position",
            {"op": operator_user_id},
            CommissionRule,
        )
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.commission_rules "
        "WHERE operator_user_id = :op AND machine_id = :machine ORDER BY position",
        {"op": operator_user_id, "machine": machine_id},
        CommissionRule,
    )


async def replace_commission_rules(
    tx: Tx,
    operator_user_id: str,
    machine_id: Optional[str],
    rules: Sequence[CommissionRule],
) -> None:
    if machine_id is None:
        await tx.execute(
            "DELETE FROM satmachineadmin.commission_rules "
            "WHERE operator_user_id = :op AND machine_id IS NULL",
            {"op": operator_user_id},
        )
    else:
        await tx.execute(
            "DELETE FROM satmachineadmin.commission_rules "
            "WHERE operator_user_id = :op AND machine_id = :machine",
            {"op": operator_user_id, "machine": machine_id},
        )
    for rule in rules:
        await tx.insert("satmachineadmin.commission_rules", rule)


# ---------------------------------------------------------------- settlements


async def settlement_known(tx: Tx, settlement: Settlement) -> bool:
    """Whether (machine, source, external_id) or the settlement's payment landed."""
    existing = await tx.fetchone(
        "SELECT id FROM satmachineadmin.settlements WHERE "
        "(machine_id = :machine AND source = :source AND external_id = :ext) "
        "OR (payment_hash IS NOT NULL AND payment_hash = :hash)",
        {
            "machine": settlement.machine_id,
            "source": settlement.source,
            "ext": settlement.external_id,
            "hash": settlement.payment_hash,
        },
    )
    return bool(existing)


async def claim_transaction_keys(
    tx: Tx, keys: Sequence[str], operator_user_id: str, settlement_id: str
) -> Optional[Settlement]:
    """Claim every key for the settlement, or none: the payable settlement already
    holding one of them (the same real-world transaction, landed first), or None
    when all were claimed (a key a rejected settlement held is taken over). A
    concurrent claimer of the same key waits for this transaction (PostgreSQL) or
    never runs beside it (SQLite), then finds it taken."""
    claimed: list[str] = []
    for key in keys:
        written = await tx.execute(
            "INSERT INTO satmachineadmin.transaction_keys "
            "(key, operator_user_id, settlement_id, created_at) "
            "VALUES (:key, :op, :sid, :now) ON CONFLICT (key) DO NOTHING",
            {"key": key, "op": operator_user_id, "sid": settlement_id, "now": now()},
        )
        if written == 1:
            claimed.append(key)
            continue
        holder = await tx.fetchone(
            "SELECT s.* FROM satmachineadmin.transaction_keys k "
            "JOIN satmachineadmin.settlements s ON s.id = k.settlement_id "
            "WHERE k.key = :key",
            {"key": key},
            Settlement,
        )
        if holder is None or holder.status == "rejected":
            # A rejected settlement pays nothing: the real transaction takes its key.
            await tx.execute(
                "UPDATE satmachineadmin.transaction_keys SET settlement_id = :sid, "
                "created_at = :now WHERE key = :key",
                {"key": key, "sid": settlement_id, "now": now()},
            )
            claimed.append(key)
            continue
        for mine in claimed:
            await tx.execute(
                "DELETE FROM satmachineadmin.transaction_keys WHERE key = :key",
                {"key": mine},
            )
        return holder
    return None


async def insert_settlement(tx: Tx, settlement: Settlement) -> None:
    await tx.insert("satmachineadmin.settlements", settlement)


async def get_settlement(
    settlement_id: str, tx: Optional[Tx] = None
) -> Optional[Settlement]:
    return await _by_id("settlements", Settlement, settlement_id, tx)


async def get_operator_settlement(
    operator_user_id: str, settlement_id: str
) -> Optional[Settlement]:
    return await _owned_by("settlements", Settlement, operator_user_id, settlement_id)


async def find_settlement(
    machine_id: str, source: str, external_id: str
) -> Optional[Settlement]:
    return await db.fetchone(
        "SELECT * FROM satmachineadmin.settlements "
        "WHERE machine_id = :machine AND source = :source AND external_id = :ext",
        {"machine": machine_id, "source": source, "ext": external_id},
        Settlement,
    )


async def settlement_exists_for_payment(payment_hash: str) -> bool:
    row: Any = await db.fetchone(
        "SELECT id FROM satmachineadmin.settlements WHERE payment_hash = :hash",
        {"hash": payment_hash},
    )
    return bool(row)


async def list_settlements(
    operator_user_id: str,
    machine_id: Optional[str] = None,
    status: Optional[str] = None,
    tx_type: Optional[str] = None,
    since: Optional[int] = None,
    until: Optional[int] = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Settlement], int]:
    where = ["operator_user_id = :op"]
    values: dict[str, Any] = {"op": operator_user_id}
    for column, value in (
        ("machine_id", machine_id),
        ("status", status),
        ("tx_type", tx_type),
    ):
        if value is not None:
            where.append(f"{column} = :{column}")
            values[column] = value
    if since is not None:
        where.append("created_at >= :since")
        values["since"] = since
    if until is not None:
        where.append("created_at < :until")
        values["until"] = until
    clause = " AND ".join(where)
    total: Any = await db.fetchone(
        f"SELECT COUNT(*) AS n FROM satmachineadmin.settlements WHERE {clause}",
        values,
    )
    rows: Any = await db.fetchall(
        f"SELECT * FROM satmachineadmin.settlements WHERE {clause} "
        "ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset",
        {**values, "limit": limit, "offset": offset},
        Settlement,
    )
    return rows, int(total["n"])


async def claim_settlement(settlement_id: str, token: str, lease_seconds: int) -> bool:
    """Atomically take a settlement for processing.

    A single conditional UPDATE is the arbiter on SQLite and PostgreSQL alike: of two
    workers (or two LNbits processes on one database) exactly one sees rowcount 1.
    A claim whose lease ran out (its worker died) can be taken over.
    """
    moment = now()
    changed = await db.execute(
        """
        UPDATE satmachineadmin.settlements
        SET status = 'processing', claim_token = :token, claimed_until = :until,
            attempts = attempts + 1, updated_at = :now
        WHERE id = :id AND (
            status = 'pending'
            OR (status = 'errored' AND next_attempt_at <= :now)
            OR (status = 'processing' AND claimed_until < :now)
        )
        """,
        {
            "id": settlement_id,
            "token": token,
            "until": moment + lease_seconds,
            "now": moment,
        },
    )
    return changed.rowcount == 1


async def claim_settlement_as_read(
    settlement: Settlement, token: str, lease_seconds: int
) -> bool:
    """Take a settlement only if it is still as `settlement` was read (its status,
    attempts and last change): a compare-and-swap for a caller that decided on that
    state (a void), so that what it restores on failure is what it took."""
    moment = now()
    changed = await db.execute(
        """
        UPDATE satmachineadmin.settlements
        SET status = 'processing', claim_token = :token, claimed_until = :until,
            attempts = attempts + 1, updated_at = :now
        WHERE id = :id AND status = :status AND attempts = :attempts
            AND updated_at = :updated_at
            AND (status <> 'processing' OR claimed_until < :now)
        """,
        {
            "id": settlement.id,
            "token": token,
            "until": moment + lease_seconds,
            "now": moment,
            "status": settlement.status,
            "attempts": settlement.attempts,
            "updated_at": settlement.updated_at,
        },
    )
    return changed.rowcount == 1


async def release_claim_as_read(settlement: Settlement, token: str) -> bool:
    """Put back a settlement taken with claim_settlement_as_read exactly as it was
    read (a dead worker's `processing` as `pending`: due again)."""
    status = "pending" if settlement.status == "processing" else settlement.status
    changed = await db.execute(
        """
        UPDATE satmachineadmin.settlements
        SET status = :status, error = :error, next_attempt_at = :next,
            attempts = :attempts, processed_at = :processed,
            claim_token = NULL, claimed_until = NULL, updated_at = :now
        WHERE id = :id AND claim_token = :token AND status = 'processing'
        """,
        {
            "id": settlement.id,
            "token": token,
            "status": status,
            "error": settlement.error,
            "next": settlement.next_attempt_at,
            "attempts": settlement.attempts,
            "processed": settlement.processed_at,
            "now": now(),
        },
    )
    return changed.rowcount == 1


async def extend_claim(settlement_id: str, token: str, lease_seconds: int) -> bool:
    changed = await db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = :until "
        "WHERE id = :id AND claim_token = :token AND status = 'processing'",
        {"id": settlement_id, "token": token, "until": now() + lease_seconds},
    )
    return changed.rowcount == 1


async def list_due_settlement_ids(limit: int = 100) -> list[str]:
    moment = now()
    rows: Any = await db.fetchall(
        """
        SELECT id FROM satmachineadmin.settlements
        WHERE status = 'pending'
           OR (status = 'errored' AND next_attempt_at <= :now)
           OR (status = 'processing' AND claimed_until < :now)
        ORDER BY created_at, id
        LIMIT :limit
        """,
        {"now": moment, "limit": limit},
    )
    return [row["id"] for row in rows]


async def list_due_settlement_refs(limit: int = 100) -> list[tuple[str, str]]:
    """(id, machine_id) of due settlements, oldest first, for an engine pass that pays
    machines in parallel (a settlement under a live claim is not due: another worker,
    here or in another LNbits process, is paying it)."""
    moment = now()
    rows: Any = await db.fetchall(
        """
        SELECT id, machine_id FROM satmachineadmin.settlements
        WHERE status = 'pending'
           OR (status = 'errored' AND next_attempt_at <= :now)
           OR (status = 'processing' AND claimed_until < :now)
        ORDER BY created_at, id
        LIMIT :limit
        """,
        {"now": moment, "limit": limit},
    )
    return [(row["id"], row["machine_id"]) for row in rows]


async def update_settlement_plan(tx: Tx, settlement: Settlement) -> bool:
    """Write the plan's figures, only while the worker still holds the claim it
    planned under, for the plan version it planned (a compare-and-swap): a worker
    whose lease ran out, or a plan a partial dispense replaced, writes nothing.
    Run first in the plan's transaction: on PostgreSQL the row stays locked until
    the plan is written, so a correction waits for it instead of racing it."""
    changed = await tx.execute(
        """
        UPDATE satmachineadmin.settlements
        SET fiat_amount_minor = :fiat_amount_minor, wire_sats = :wire_sats,
            principal_sats = :principal_sats, fee_sats = :fee_sats,
            platform_fee_sats = :platform_fee_sats,
            operator_fee_sats = :operator_fee_sats, exchange_rate = :exchange_rate,
            orphan_sats = :orphan_sats, orphan_fiat_minor = :orphan_fiat_minor,
            updated_at = :updated_at
        WHERE id = :id AND status = 'processing' AND claim_token = :claim_token
          AND plan_version = :plan_version
        """,
        model_to_dict(settlement),
    )
    return changed == 1


async def set_settlement_orphans(
    tx: Tx, settlement_id: str, orphan_sats: int, orphan_fiat_minor: int, moment: int
) -> None:
    await tx.execute(
        "UPDATE satmachineadmin.settlements SET orphan_sats = :sats, "
        "orphan_fiat_minor = :fiat, updated_at = :now WHERE id = :id",
        {
            "id": settlement_id,
            "sats": orphan_sats,
            "fiat": orphan_fiat_minor,
            "now": moment,
        },
    )


async def finish_settlement(
    settlement_id: str,
    token: Optional[str],
    status: str,
    error: Optional[str],
    next_attempt_at: int = 0,
) -> bool:
    moment = now()
    where = "id = :id"
    values: dict[str, Any] = {
        "id": settlement_id,
        "status": status,
        "error": error,
        "next": next_attempt_at,
        "now": moment,
        "processed": moment if status == "processed" else None,
    }
    if token is not None:
        where += " AND claim_token = :token"
        values["token"] = token
    changed = await db.execute(
        f"""
        UPDATE satmachineadmin.settlements
        SET status = :status, error = :error, next_attempt_at = :next,
            claim_token = NULL, claimed_until = NULL, updated_at = :now,
            processed_at = :processed
        WHERE {where}
        """,
        values,
    )
    return changed.rowcount == 1


async def set_settlement_status(
    tx: Tx,
    settlement_id: str,
    from_statuses: Sequence[str],
    to_status: str,
    error: Optional[str] = None,
) -> bool:
    marks, keys = _named_list("s", from_statuses)
    changed = await tx.execute(
        f"UPDATE satmachineadmin.settlements SET status = :to, next_attempt_at = 0, "
        f"error = :error, updated_at = :now WHERE id = :id AND status IN ({marks})",
        {"id": settlement_id, "to": to_status, "error": error, "now": now(), **keys},
    )
    return changed == 1


async def insert_note(tx: Tx, note: SettlementNote) -> None:
    await tx.insert("satmachineadmin.settlement_notes", note)


async def list_notes(settlement_id: str) -> list[SettlementNote]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.settlement_notes "
        "WHERE settlement_id = :id ORDER BY created_at, id",
        {"id": settlement_id},
        SettlementNote,
    )


# ---------------------------------------------------------------- legs


def _reserves(leg: Leg, status: str) -> int:
    if leg.client_id and leg.leg_type in BALANCE_LEG_TYPES and leg.amount_fiat_minor:
        return leg.amount_fiat_minor if status in RESERVING_STATUSES else 0
    return 0


def _received(leg: Leg, status: str) -> int:
    # Only principal bought with the LP's fiat counts: commission shares and
    # forwards would distort their cost basis.
    if leg.client_id and leg.leg_type in BALANCE_LEG_TYPES and status == "completed":
        return leg.amount_sats
    return 0


class BalanceShort(Exception):
    """A leg asked for more of an LP's balance than remains: nothing was written
    (the transaction it ran in rolls back)."""


# A reservation is a conditional UPDATE: the balance check and the write are one
# statement, so two writers (two requests, two LNbits processes) can never both spend
# the same fiat. On PostgreSQL a CHECK constraint (m002) says the same.
_RESERVE = """
    UPDATE satmachineadmin.clients
    SET reserved_minor = reserved_minor + :reserved,
        sats_received = sats_received + :sats,
        cycle_complete = CASE
            WHEN deposits_minor > 0 AND deposits_minor <= reserved_minor + :reserved
            THEN TRUE ELSE FALSE END,
        updated_at = :now
    WHERE id = :id AND deposits_minor - reserved_minor >= :reserved
"""


async def insert_leg(tx: Tx, leg: Leg) -> bool:
    """Write a leg unless its idempotency key exists (False), and reserve what it
    takes of its LP's balance in the same transaction. A balance that no longer
    covers the leg raises BalanceShort."""
    written = await tx.execute(
        insert_query("satmachineadmin.legs", leg)
        + " ON CONFLICT (idempotency_key) DO NOTHING",
        model_to_dict(leg),
    )
    if written != 1:
        return False
    reserved = _reserves(leg, leg.status)
    sats = _received(leg, leg.status)
    if leg.client_id and (reserved or sats):
        values = _totals(leg.client_id, reserved=reserved, sats=sats)
        if await tx.execute(_RESERVE, values) != 1:
            raise BalanceShort(
                f"LP {leg.client_id} no longer has {leg.amount_fiat_minor} (minor "
                "units) of remaining balance"
            )
    return True


async def insert_plan(tx: Tx, legs: Sequence[Leg]) -> None:
    """Write a whole plan in two batched statements: its legs, and the balance they
    reserve. The unique idempotency key makes a replayed plan fail as a whole; a plan
    that would take more than an LP has raises BalanceShort (planning locks the LPs'
    rows, so this is a guard, not a path)."""
    if not legs:
        return
    await tx.execute_many(
        insert_query("satmachineadmin.legs", legs[0]),
        [model_to_dict(leg) for leg in legs],
    )
    await _move_client_totals(tx, legs, None)
    client_ids = sorted(
        {leg.client_id for leg in legs if leg.client_id and _reserves(leg, leg.status)}
    )
    if client_ids:
        marks, keys = _named_list("c", client_ids)
        over: Any = await tx.fetchone(
            "SELECT COUNT(*) AS n FROM satmachineadmin.clients "
            f"WHERE id IN ({marks}) AND reserved_minor > deposits_minor",
            keys,
        )
        if over and int(over["n"]):
            raise BalanceShort("a plan would reserve more than an LP's balance")


async def _move_client_totals(
    tx: Tx, legs: Sequence[Leg], from_status: Optional[str], to_status: str = ""
) -> None:
    """Each leg's LP totals, moved from what `from_status` counted (None: a new leg,
    nothing) to what `to_status` counts (empty: the leg's own status), in one
    batched statement."""
    totals = []
    for leg in legs:
        after = to_status or leg.status
        reserved = _reserves(leg, after)
        sats = _received(leg, after)
        if from_status is not None:
            reserved -= _reserves(leg, from_status)
            sats -= _received(leg, from_status)
        if leg.client_id and (reserved or sats):
            totals.append(_totals(leg.client_id, reserved=reserved, sats=sats))
    if totals:
        await tx.execute_many(_ADD_CLIENT_TOTALS, totals)


async def get_leg(leg_id: str, tx: Optional[Tx] = None) -> Optional[Leg]:
    return await _by_id("legs", Leg, leg_id, tx)


async def get_leg_by_key(key: str) -> Optional[Leg]:
    return await db.fetchone(
        "SELECT * FROM satmachineadmin.legs WHERE idempotency_key = :key",
        {"key": key},
        Leg,
    )


async def list_settlement_legs(settlement_id: str) -> list[Leg]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE settlement_id = :id "
        "ORDER BY created_at, idempotency_key",
        {"id": settlement_id},
        Leg,
    )


async def list_legs_by_status(status: str, limit: int = 500) -> list[Leg]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE status = :status "
        "ORDER BY created_at, id LIMIT :limit",
        {"status": status, "limit": limit},
        Leg,
    )


async def set_leg_payments(
    invoices: Sequence[tuple[str, str, str, Optional[str]]],
) -> set[str]:
    """Store legs' invoices (leg id, payment hash, bolt11, the hash the worker saw),
    in one transaction. Each is stored only if the row still holds the hash its
    worker saw: of two workers racing on one leg, one invoice wins, and only the
    winner may pay it. Returns the ids of the legs stored."""
    stored: set[str] = set()
    async with transaction() as tx:
        for leg_id, payment_hash, bolt11, replaces in invoices:
            seen = (
                "payment_hash IS NULL"
                if replaces is None
                else "payment_hash = :replaces"
            )
            changed = await tx.execute(
                "UPDATE satmachineadmin.legs SET payment_hash = :hash, "
                "bolt11 = :bolt11, updated_at = :now "
                "WHERE id = :id AND status IN ('pending', 'failed') "
                f"AND {seen}",
                {
                    "id": leg_id,
                    "hash": payment_hash,
                    "bolt11": bolt11,
                    "replaces": replaces,
                    "now": now(),
                },
            )
            if changed == 1:
                stored.add(leg_id)
    return stored


async def fence_payment(
    leg_id: str,
    payment_hash: str,
    settlement_id: Optional[str],
    token: Optional[str],
    deadline: int,
) -> bool:
    """The compare-and-swap before a leg's payment: the leg is still `pending` with
    the invoice its worker stored, and that worker still holds the claim it planned
    under until at least `deadline` (the settlement's claim token, or for a
    standalone leg its own lease's token). False: pay nothing."""
    if settlement_id is not None:
        held = (
            "settlement_id = :sid AND EXISTS (SELECT 1 FROM satmachineadmin.settlements"
            " s WHERE s.id = :sid AND s.claim_token = :token "
            "AND s.status = 'processing' AND s.claimed_until >= :deadline)"
        )
    else:
        held = "claim_token = :token AND claimed_until >= :deadline"
    changed = await db.execute(
        "UPDATE satmachineadmin.legs SET updated_at = :now "
        "WHERE id = :id AND status = 'pending' AND payment_hash = :hash "
        f"AND {held}",
        {
            "id": leg_id,
            "hash": payment_hash,
            "sid": settlement_id,
            "token": token,
            "deadline": deadline,
            "now": now(),
        },
    )
    return changed.rowcount == 1


async def complete_paid_legs(
    legs: Sequence[Leg], outcomes: Optional[dict[str, tuple[int, int]]] = None
) -> set[str]:
    """Mark legs LNbits has just paid `completed` (with their LPs' totals), in one
    transaction. Each moves only from `pending` with the invoice it was paid by, so a
    leg another worker already settled is left alone. Returns the ids moved.
    `outcomes` holds what LNbits reported per leg id: (sats sent, fee in msat);
    without it, the leg's amount and no fee.

    The caller's rows are trusted for amount, LP and type: those never change once
    planned (a partial dispense voids legs and plans new ones)."""
    moved: list[Leg] = []
    moment = now()
    async with transaction() as tx:
        for leg in legs:
            sent, fee = (outcomes or {}).get(leg.id, (leg.amount_sats, 0))
            changed = await tx.execute(
                """
                UPDATE satmachineadmin.legs
                SET status = 'completed', error = NULL, updated_at = :now,
                    attempts = attempts + 1, completed_at = :now,
                    sent_sats = :sent, fee_msat = :fee, in_flight_since = NULL
                WHERE id = :id AND status = 'pending' AND payment_hash = :hash
                """,
                {
                    "id": leg.id,
                    "hash": leg.payment_hash,
                    "now": moment,
                    "sent": sent,
                    "fee": fee,
                },
            )
            if changed == 1:
                moved.append(leg)
        await _move_client_totals(tx, moved, "pending", "completed")
    return {leg.id for leg in moved}


async def transition_leg(
    leg_id: str,
    to_status: str,
    error: Optional[str] = None,
    from_statuses: Sequence[str] = ("pending", "failed"),
    count_attempt: bool = False,
) -> bool:
    """Move a leg to a new status and its LP's running totals with it, atomically."""
    async with transaction() as tx:
        leg = await get_leg(leg_id, tx)
        if leg is None or leg.status not in from_statuses:
            return False
        moment = now()
        changed = await tx.execute(
            """
            UPDATE satmachineadmin.legs
            SET status = :to, error = :error, updated_at = :now,
                attempts = attempts + :attempt, in_flight_since = NULL,
                completed_at = COALESCE(:completed_at, completed_at)
            WHERE id = :id AND status = :from
            """,
            {
                "id": leg_id,
                "to": to_status,
                "from": leg.status,
                "error": error,
                "now": moment,
                "attempt": 1 if count_attempt else 0,
                "completed_at": moment if to_status == "completed" else None,
            },
        )
        if changed != 1:
            return False
        if leg.client_id:
            reserved_delta = _reserves(leg, to_status) - _reserves(leg, leg.status)
            sats_delta = _received(leg, to_status) - _received(leg, leg.status)
            if reserved_delta or sats_delta:
                await add_client_totals(
                    tx,
                    leg.client_id,
                    reserved_minor=reserved_delta,
                    sats_received=sats_delta,
                )
    return True


async def settle_leg_payment(
    leg_id: str,
    payment_hash: str,
    to_status: str,
    *,
    sent_sats: Optional[int] = None,
    fee_msat: Optional[int] = None,
    error: Optional[str] = None,
) -> bool:
    """Record what LNbits reported about the payment of a leg's stored invoice:
    `completed` (with what was sent and the fee) or `failed` (with why). A
    compare-and-swap on the invoice as well as the status: an outcome about an
    invoice the leg no longer holds is never written. Moves the LP's totals."""
    async with transaction() as tx:
        leg = await get_leg(leg_id, tx)
        if (
            leg is None
            or leg.status not in ("pending", "failed")
            or leg.payment_hash != payment_hash
        ):
            return False
        moment = now()
        completed = to_status == "completed"
        changed = await tx.execute(
            """
            UPDATE satmachineadmin.legs
            SET status = :to, error = :error, updated_at = :now,
                attempts = attempts + :attempt, in_flight_since = NULL,
                sent_sats = :sent, fee_msat = :fee,
                completed_at = COALESCE(:completed_at, completed_at)
            WHERE id = :id AND status = :from AND payment_hash = :hash
            """,
            {
                "id": leg_id,
                "hash": payment_hash,
                "to": to_status,
                "from": leg.status,
                "error": None if completed else error,
                "now": moment,
                "attempt": 1 if leg.status == "pending" else 0,
                "sent": sent_sats if completed else None,
                "fee": fee_msat if completed else None,
                "completed_at": moment if completed else None,
            },
        )
        if changed != 1:
            return False
        if leg.client_id:
            reserved_delta = _reserves(leg, to_status) - _reserves(leg, leg.status)
            sats_delta = _received(leg, to_status) - _received(leg, leg.status)
            if reserved_delta or sats_delta:
                await add_client_totals(
                    tx,
                    leg.client_id,
                    reserved_minor=reserved_delta,
                    sats_received=sats_delta,
                )
    return True


async def mark_leg_in_flight(leg_id: str, payment_hash: str, note: str) -> bool:
    """LNbits reports the payment of the leg's stored invoice pending: the leg stays
    (or goes back to) `pending`, in flight since the first time this was seen, and
    is never given a fresh invoice while it is. Balances are unchanged (pending and
    failed both reserve)."""
    changed = await db.execute(
        "UPDATE satmachineadmin.legs SET status = 'pending', error = :note, "
        "in_flight_since = COALESCE(in_flight_since, :now), updated_at = :now "
        "WHERE id = :id AND payment_hash = :hash AND status IN ('pending', 'failed')",
        {"id": leg_id, "hash": payment_hash, "note": note, "now": now()},
    )
    return changed.rowcount == 1


async def in_flight_legs(operator_user_id: str) -> list[Leg]:
    """The operator's legs whose payment LNbits reports pending, oldest first."""
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE operator_user_id = :op "
        "AND status = 'pending' AND in_flight_since IS NOT NULL "
        "ORDER BY in_flight_since, id",
        {"op": operator_user_id},
        Leg,
    )


async def void_open_legs(tx: Tx, settlement_id: str) -> int:
    """Void the legs of a settlement that were never paid, releasing what they
    reserved. Each is a compare-and-swap on its status: a leg that completed
    meanwhile is never voided."""
    legs = await tx.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE settlement_id = :id "
        "AND status IN ('pending', 'failed', 'skipped') AND in_flight_since IS NULL",
        {"id": settlement_id},
        Leg,
    )
    voided = 0
    for leg in legs:
        # Never a leg in flight: its payment may still arrive.
        changed = await tx.execute(
            "UPDATE satmachineadmin.legs SET status = 'voided', updated_at = :now "
            "WHERE id = :id AND status = :status AND in_flight_since IS NULL",
            {"id": leg.id, "status": leg.status, "now": now()},
        )
        if changed != 1:
            continue
        voided += 1
        released = _reserves(leg, leg.status)
        if leg.client_id and released:
            await add_client_totals(tx, leg.client_id, reserved_minor=-released)
    return voided


async def _count_settlement_legs(settlement_id: str, condition: str) -> int:
    row: Any = await db.fetchone(
        "SELECT COUNT(*) AS n FROM satmachineadmin.legs "
        f"WHERE settlement_id = :id AND {condition}",
        {"id": settlement_id},
    )
    return int(row["n"])


async def count_in_flight_legs(settlement_id: str) -> int:
    return await _count_settlement_legs(
        settlement_id,
        "status IN ('pending', 'failed') AND in_flight_since IS NOT NULL",
    )


async def count_completed_legs(settlement_id: str) -> int:
    return await _count_settlement_legs(
        settlement_id, "status = 'completed' AND leg_type != 'autoforward'"
    )


def _leg_where(
    operator_user_id: Optional[str],
    user_id: Optional[str],
    columns: dict[str, Optional[str]],
    since: Optional[int],
    until: Optional[int],
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    values: dict[str, Any] = {}
    if operator_user_id is not None:
        where.append("l.operator_user_id = :op")
        values["op"] = operator_user_id
    if user_id is not None:
        where.append(
            "l.client_id IN "
            "(SELECT id FROM satmachineadmin.clients WHERE user_id = :user)"
        )
        values["user"] = user_id
    for column, value in columns.items():
        if value is not None:
            where.append(f"l.{column} = :{column}")
            values[column] = value
    if since is not None:
        where.append("l.created_at >= :since")
        values["since"] = since
    if until is not None:
        where.append("l.created_at < :until")
        values["until"] = until
    return where, values


async def list_legs(
    *,
    operator_user_id: Optional[str] = None,
    user_id: Optional[str] = None,
    machine_id: Optional[str] = None,
    client_id: Optional[str] = None,
    leg_type: Optional[str] = None,
    status: Optional[str] = None,
    settlement_id: Optional[str] = None,
    since: Optional[int] = None,
    until: Optional[int] = None,
    limit: int = 500,
    offset: int = 0,
) -> list[Leg]:
    columns = {
        "machine_id": machine_id,
        "client_id": client_id,
        "leg_type": leg_type,
        "status": status,
        "settlement_id": settlement_id,
    }
    where, values = _leg_where(operator_user_id, user_id, columns, since, until)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    return await db.fetchall(
        f"SELECT l.* FROM satmachineadmin.legs l {clause} "
        "ORDER BY l.created_at DESC, l.id LIMIT :limit OFFSET :offset",
        {**values, "limit": limit, "offset": offset},
        Leg,
    )


async def _keyset_pages(
    select_from: str,
    where: list[str],
    values: dict[str, Any],
    page_size: int,
    model: Optional[type[BaseModel]] = None,
    order: str = "created_at",
    alias: str = "",
) -> AsyncIterator[list[Any]]:
    """Every row of `select_from WHERE where`, ordered by (order, id), a page at a
    time: keyset paging, one short query per page, so a read of any size holds one
    page in memory and no connection between pages. Rows as `model`, or plain rows
    (an export of 200,000 legs must not validate 200,000 models)."""
    column, id_column = f"{alias}{order}", f"{alias}id"
    after: Optional[tuple[int, str]] = None
    while True:
        keyset = list(where)
        page_values = {**values, "page": page_size}
        if after is not None:
            keyset.append(
                f"({column} > :after_t "
                f"OR ({column} = :after_t AND {id_column} > :after_id))"
            )
            page_values.update(after_t=after[0], after_id=after[1])
        sql = (
            f"{select_from} WHERE {' AND '.join(keyset)} "
            f"ORDER BY {column}, {id_column} LIMIT :page"
        )
        page: Any = (
            await db.fetchall(sql, page_values, model)
            if model
            else await db.fetchall(sql, page_values)
        )
        if page:
            yield page
        if len(page) < page_size:
            return
        last = page[-1]
        if model:
            after = (getattr(last, order) or 0, last.id)
        else:
            after = (last[order] or 0, last["id"])


_EXPORTED_LEG_COLUMNS = (
    "l.id, l.settlement_id, l.machine_id, l.client_id, l.leg_type, l.status, "
    "l.amount_sats, l.amount_fiat_minor, l.currency, l.exchange_rate, "
    "l.destination, l.payment_hash, l.error, l.created_at, l.completed_at, "
    "l.sent_sats, l.fee_msat, l.in_flight_since"
)


async def iter_leg_rows(
    *,
    operator_user_id: str,
    page_size: int = 2000,
    since: Optional[int] = None,
    until: Optional[int] = None,
    **columns: Optional[str],
) -> AsyncIterator[list[Any]]:
    """Every leg matching the filters, oldest first, a page at a time, as plain rows
    of the exported columns (no model: an export of 200,000 legs must not validate
    200,000 of them). Keyset paging on (created_at, id), one short query per page,
    so an export of any size holds one page in memory and no connection between
    pages."""
    where, values = _leg_where(operator_user_id, None, columns, since, until)
    async for page in _keyset_pages(
        f"SELECT {_EXPORTED_LEG_COLUMNS} FROM satmachineadmin.legs l",
        where,
        values,
        page_size,
        alias="l.",
    ):
        yield page


async def iter_settlements(
    operator_user_id: str,
    *,
    page_size: int = 1000,
    since: Optional[int] = None,
    until: Optional[int] = None,
    **columns: Optional[str],
) -> AsyncIterator[list[Settlement]]:
    """Every settlement matching the filters, oldest first, a page at a time (keyset
    paging, as iter_legs)."""
    where = ["operator_user_id = :op"]
    values: dict[str, Any] = {"op": operator_user_id}
    for column, value in columns.items():
        if value is not None:
            where.append(f"{column} = :{column}")
            values[column] = value
    if since is not None:
        where.append("created_at >= :since")
        values["since"] = since
    if until is not None:
        where.append("created_at < :until")
        values["until"] = until
    async for page in _keyset_pages(
        "SELECT * FROM satmachineadmin.settlements",
        where,
        values,
        page_size,
        Settlement,
    ):
        yield page


async def fixed_paid_on(client_id: str, slot_date: str, tx: Optional[Tx] = None) -> int:
    sql = (
        "SELECT COALESCE(SUM(amount_fiat_minor), 0) AS total FROM satmachineadmin.legs "
        "WHERE client_id = :client AND leg_type = 'fixed' AND slot_date = :day "
        "AND status IN ('pending', 'completed', 'failed')"
    )
    values = {"client": client_id, "day": slot_date}
    row: Any = await (tx.fetchone(sql, values) if tx else db.fetchone(sql, values))
    return int(row["total"])


async def pending_needs_by_wallet() -> dict[str, int]:
    rows: Any = await db.fetchall(
        "SELECT source_wallet_id, COALESCE(SUM(amount_sats), 0) AS need "
        "FROM satmachineadmin.legs WHERE status IN ('pending', 'failed') "
        "GROUP BY source_wallet_id",
        {},
    )
    return {row["source_wallet_id"]: int(row["need"]) for row in rows}


async def unpaid_legs_lnbits_debited(wallet_id: str) -> int:
    """Sats of the wallet's pending or failed legs whose invoice LNbits has already
    taken off the wallet's balance (an outgoing payment pending or succeeded: a leg
    in flight, or paid by a worker that died before recording it)."""
    from lnbits.core.db import db as core_db

    rows: Any = await db.fetchall(
        "SELECT payment_hash, amount_sats FROM satmachineadmin.legs "
        "WHERE source_wallet_id = :wallet AND status IN ('pending', 'failed') "
        "AND payment_hash IS NOT NULL",
        {"wallet": wallet_id},
    )
    amounts = {row["payment_hash"]: int(row["amount_sats"]) for row in rows}
    hashes = list(amounts)
    debited = 0
    for start in range(0, len(hashes), 500):
        marks, keys = _named_list("h", hashes[start : start + 500])
        paid: Any = await core_db.fetchall(
            "SELECT DISTINCT payment_hash FROM apipayments WHERE wallet_id = :wallet "
            "AND amount < 0 AND status IN ('pending', 'success') "
            f"AND payment_hash IN ({marks})",
            {**keys, "wallet": wallet_id},
        )
        debited += sum(amounts[row["payment_hash"]] for row in paid)
    return debited


async def make_errored_due(machine_id: str) -> int:
    result = await db.execute(
        "UPDATE satmachineadmin.settlements SET next_attempt_at = 0 "
        "WHERE machine_id = :machine AND status = 'errored' AND next_attempt_at > 0",
        {"machine": machine_id},
    )
    return result.rowcount


async def rescale_settlement(
    tx: Tx,
    settlement_id: str,
    token: str,
    *,
    fiat_amount_minor: int,
    principal_sats: int,
    fee_sats: int,
    platform_fee_sats: int,
    operator_fee_sats: int,
    wire_sats: int,
    exchange_rate: Optional[str],
) -> bool:
    changed = await tx.execute(
        """
        UPDATE satmachineadmin.settlements
        SET fiat_amount_minor = :fiat, principal_sats = :principal, fee_sats = :fee,
            platform_fee_sats = :platform, operator_fee_sats = :operator,
            wire_sats = :wire, exchange_rate = :rate, orphan_sats = 0,
            orphan_fiat_minor = 0, plan_version = plan_version + 1, updated_at = :now
        WHERE id = :id AND claim_token = :token
        """,
        {
            "id": settlement_id,
            "token": token,
            "fiat": fiat_amount_minor,
            "principal": principal_sats,
            "fee": fee_sats,
            "platform": platform_fee_sats,
            "operator": operator_fee_sats,
            "wire": wire_sats,
            "rate": exchange_rate,
            "now": now(),
        },
    )
    return changed == 1


async def settlement_status_counts(operator_user_id: str) -> dict[str, int]:
    rows: Any = await db.fetchall(
        "SELECT status, COUNT(*) AS n FROM satmachineadmin.settlements "
        "WHERE operator_user_id = :op GROUP BY status",
        {"op": operator_user_id},
    )
    return {row["status"]: int(row["n"]) for row in rows}


async def count_stuck_settlements(operator_user_id: str, older_than: int) -> int:
    row: Any = await db.fetchone(
        "SELECT COUNT(*) AS n FROM satmachineadmin.settlements "
        "WHERE operator_user_id = :op AND status IN ('pending', 'processing') "
        "AND updated_at < :older",
        {"op": operator_user_id, "older": older_than},
    )
    return int(row["n"])


async def completed_principal_totals(client_id: str) -> tuple[int, int]:
    """(fiat minor, sats) of an LP's completed principal legs: their cost basis."""
    row: Any = await db.fetchone(
        "SELECT COALESCE(SUM(amount_fiat_minor), 0) AS fiat, "
        "COALESCE(SUM(amount_sats), 0) AS sats FROM satmachineadmin.legs "
        "WHERE client_id = :client AND status = 'completed' "
        "AND leg_type IN ('dca', 'fixed', 'settlement')",
        {"client": client_id},
    )
    return int(row["fiat"]), int(row["sats"])


async def claim_leg(leg_id: str, token: str, lease_seconds: int) -> bool:
    """Take a leg that no settlement claim covers (fixed, balance settlement) for
    paying, under the caller's token: of two schedulers or a scheduler and a manual
    run, one wins, and only the winner may pay or release it."""
    moment = now()
    result = await db.execute(
        "UPDATE satmachineadmin.legs SET claimed_until = :until, claim_token = :token "
        "WHERE id = :id AND status IN ('pending', 'failed') "
        "AND (claimed_until IS NULL OR claimed_until < :now)",
        {"id": leg_id, "until": moment + lease_seconds, "token": token, "now": moment},
    )
    return result.rowcount == 1


async def release_leg(leg_id: str, token: str) -> None:
    await db.execute(
        "UPDATE satmachineadmin.legs SET claimed_until = NULL, claim_token = NULL "
        "WHERE id = :id AND claim_token = :token",
        {"id": leg_id, "token": token},
    )


async def list_retryable_standalone_legs(before: int, limit: int = 200) -> list[Leg]:
    # Autoforwards have their own retries (list_open_forwards).
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE settlement_id IS NULL "
        "AND leg_type != 'autoforward' "
        "AND status IN ('pending', 'failed') AND updated_at < :before "
        "AND (claimed_until IS NULL OR claimed_until < :now) "
        "ORDER BY updated_at LIMIT :limit",
        {"before": before, "now": now(), "limit": limit},
        Leg,
    )


# Legs that land in an LP's own wallet, and so may be forwarded on.
FORWARDED_LEG_TYPES = ("dca", "fixed", "settlement")


async def autoforward_targets(client_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """client id -> (Lightning address, when the LP last saved their preferences),
    for those of the given clients whose LP auto-forwards."""
    if not client_ids:
        return {}
    marks, keys = _named_list("c", sorted(set(client_ids)))
    rows: Any = await db.fetchall(
        "SELECT c.id, p.autoforward_ln_address, p.updated_at "
        "FROM satmachineadmin.clients c "
        "JOIN satmachineadmin.lp_preferences p ON p.user_id = c.user_id "
        f"WHERE c.id IN ({marks}) AND p.autoforward_enabled = TRUE "
        "AND p.autoforward_ln_address IS NOT NULL",
        keys,
    )
    return {
        row["id"]: (row["autoforward_ln_address"], int(row["updated_at"]))
        for row in rows
        if row["autoforward_ln_address"]
    }


async def list_unforwarded_legs(since: int, limit: int = 200) -> list[Leg]:
    """Completed legs that landed in an LP's wallet since `since`, after the LP
    turned autoforward on (saved their preferences), and have no autoforward leg:
    a crash came between the leg and its forward. The forward's key is the leg's
    key + ':autoforward', looked up through the unique index."""
    return await db.fetchall(
        """
        SELECT l.* FROM satmachineadmin.legs l
        JOIN satmachineadmin.clients c ON c.id = l.client_id
        JOIN satmachineadmin.lp_preferences p ON p.user_id = c.user_id
        WHERE l.status = 'completed' AND l.updated_at >= :since
          AND l.leg_type IN ('dca', 'fixed', 'settlement')
          AND l.amount_sats > 0 AND l.destination_kind = 'wallet'
          AND l.completed_at >= p.updated_at
          AND p.autoforward_enabled = TRUE
          AND p.autoforward_ln_address IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM satmachineadmin.legs f
              WHERE f.idempotency_key = l.idempotency_key || :suffix
          )
        ORDER BY l.completed_at, l.id LIMIT :limit
        """,
        {"since": since, "limit": limit, "suffix": ":autoforward"},
        Leg,
    )


async def list_open_forwards(max_attempts: int, limit: int = 200) -> list[Leg]:
    """Autoforward legs not yet paid (written but not invoiced at a crash, in
    flight, or failed and under their attempt limit), no other worker paying them."""
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE leg_type = 'autoforward' "
        "AND status IN ('pending', 'failed') AND attempts < :max "
        "AND (claimed_until IS NULL OR claimed_until < :now) "
        "ORDER BY updated_at, id LIMIT :limit",
        {"max": max_attempts, "now": now(), "limit": limit},
        Leg,
    )


async def latest_settlement_rate(machine_id: str, since: int) -> Optional[str]:
    row: Any = await db.fetchone(
        "SELECT exchange_rate FROM satmachineadmin.settlements "
        "WHERE machine_id = :machine AND exchange_rate IS NOT NULL "
        "AND status NOT IN ('rejected', 'held') AND created_at >= :since "
        "ORDER BY created_at DESC LIMIT 1",
        {"machine": machine_id, "since": since},
    )
    return row["exchange_rate"] if row else None


async def save_fixed_schedule(
    tx: Tx, machine_id: str, times_json: str, timezone: str
) -> None:
    await tx.execute(
        "UPDATE satmachineadmin.machines SET fixed_times = :times, "
        "fixed_timezone = :tz, updated_at = :now WHERE id = :id",
        {"id": machine_id, "times": times_json, "tz": timezone, "now": now()},
    )


async def save_auto_settlement(
    tx: Tx,
    machine_id: str,
    enabled: bool,
    threshold_type: Optional[str],
    threshold_value: Optional[str],
    funding_wallet_id: Optional[str],
) -> None:
    await tx.execute(
        "UPDATE satmachineadmin.machines SET auto_settle_enabled = :enabled, "
        "auto_settle_threshold_type = :type, auto_settle_threshold_value = :value, "
        "auto_settle_funding_wallet_id = :wallet, updated_at = :now WHERE id = :id",
        {
            "id": machine_id,
            "enabled": enabled,
            "type": threshold_type,
            "value": threshold_value,
            "wallet": funding_wallet_id,
            "now": now(),
        },
    )


async def list_scheduled_machines() -> list[Machine]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.machines WHERE status = 'active' "
        "AND fixed_times != '[]' ORDER BY created_at, id",
        {},
        Machine,
    )


# ---------------------------------------------------------------- Lamassu (lamassu.py)

LAMASSU_CONFIG_COLUMNS = (
    "operator_user_id",
    "host",
    "port",
    "database_name",
    "username",
    "password_encrypted",
    "sslmode",
    "poll_interval_seconds",
    "lookback_hours",
    "enabled",
    "last_poll_at",
    "last_success_at",
    "last_error",
    "last_found",
    "last_new",
    "unknown_devices",
    "newest_created_seen",
    "consecutive_failures",
    "next_poll_at",
    "created_at",
    "updated_at",
)
LAMASSU_SETTINGS_COLUMNS = (
    "host",
    "port",
    "database_name",
    "username",
    "password_encrypted",
    "sslmode",
    "poll_interval_seconds",
    "lookback_hours",
    "enabled",
    "consecutive_failures",
    "next_poll_at",
    "updated_at",
)
LAMASSU_STATUS_COLUMNS = (
    "last_poll_at",
    "last_success_at",
    "last_error",
    "last_found",
    "last_new",
    "unknown_devices",
    "newest_created_seen",
    "consecutive_failures",
    "next_poll_at",
)


async def get_lamassu_config_row(operator_user_id: str) -> dict | None:
    row: Any = await db.fetchone(
        "SELECT * FROM satmachineadmin.lamassu_config WHERE operator_user_id = :op",
        {"op": operator_user_id},
    )
    return dict(row) if row else None


async def upsert_lamassu_config(tx: Tx, values: dict, insert: bool) -> None:
    """Insert a whole row, or update only the settings (never the poll status)."""
    if insert:
        await tx.execute(
            "INSERT INTO satmachineadmin.lamassu_config "
            f"({', '.join(LAMASSU_CONFIG_COLUMNS)}) "
            f"VALUES ({', '.join(':' + c for c in LAMASSU_CONFIG_COLUMNS)})",
            {c: values[c] for c in LAMASSU_CONFIG_COLUMNS},
        )
        return
    await tx.execute(
        "UPDATE satmachineadmin.lamassu_config SET "
        + ", ".join(f"{c} = :{c}" for c in LAMASSU_SETTINGS_COLUMNS)
        + " WHERE operator_user_id = :operator_user_id",
        {c: values[c] for c in (*LAMASSU_SETTINGS_COLUMNS, "operator_user_id")},
    )


async def list_due_lamassu_configs(moment: int) -> list[dict]:
    rows: list[Any] = await db.fetchall(
        "SELECT * FROM satmachineadmin.lamassu_config "
        "WHERE enabled = TRUE AND next_poll_at <= :now ORDER BY next_poll_at",
        {"now": moment},
    )
    return [dict(r) for r in rows]


async def claim_lamassu_poll(operator_user_id: str, expected: int, until: int) -> bool:
    """Lease a due poll: of two processes seeing it due, exactly one gets rowcount 1."""
    changed = await db.execute(
        "UPDATE satmachineadmin.lamassu_config SET next_poll_at = :until "
        "WHERE operator_user_id = :op AND next_poll_at = :expected",
        {"op": operator_user_id, "expected": expected, "until": until},
    )
    return changed.rowcount == 1


async def save_lamassu_poll_status(operator_user_id: str, values: dict) -> None:
    unknown = set(values) - set(LAMASSU_STATUS_COLUMNS)
    if unknown:
        raise ValueError(f"not status columns: {sorted(unknown)}")
    await db.execute(
        "UPDATE satmachineadmin.lamassu_config SET "
        + ", ".join(f"{c} = :{c}" for c in values)
        + " WHERE operator_user_id = :op",
        {**values, "op": operator_user_id},
    )


async def known_lamassu_settlements(
    machine_ids: Sequence[str], external_ids: Sequence[str]
) -> set[tuple[str, str]]:
    """(machine_id, external_id) among these that already are Lamassu settlements."""
    if not machine_ids or not external_ids:
        return set()
    machine_marks, machines = _named_list("m", machine_ids)
    external_marks, externals = _named_list("e", external_ids)
    rows: list[Any] = await db.fetchall(
        "SELECT machine_id, external_id FROM satmachineadmin.settlements "
        f"WHERE machine_id IN ({machine_marks}) "
        "AND source = 'lamassu' "
        f"AND external_id IN ({external_marks})",
        {**machines, **externals},
    )
    return {(r["machine_id"], r["external_id"]) for r in rows}


async def known_lamassu_external_ids(
    machine_ids: Sequence[str], since: int
) -> set[tuple[str, str]]:
    """(machine_id, external_id) of Lamassu settlements landed since `since`."""
    if not machine_ids:
        return set()
    marks, machines = _named_list("m", machine_ids)
    rows: list[Any] = await db.fetchall(
        "SELECT machine_id, external_id FROM satmachineadmin.settlements "
        f"WHERE machine_id IN ({marks}) "
        "AND source = 'lamassu' AND created_at >= :since",
        {**machines, "since": since},
    )
    return {(r["machine_id"], r["external_id"]) for r in rows}


async def set_lamassu_start_at(
    tx: Tx, operator_user_id: str, start_at: Optional[int], reset_cursor: bool
) -> None:
    """The operator's start date; `reset_cursor`: the next poll starts from it."""
    await tx.execute(
        "UPDATE satmachineadmin.lamassu_config SET start_at = :start"
        + (", cursor_at = NULL" if reset_cursor else "")
        + " WHERE operator_user_id = :op",
        {"start": start_at, "op": operator_user_id},
    )


async def advance_lamassu_cursor(
    operator_user_id: str,
    cursor_at: int,
    updated_at: int,
    old_cursor_at: Optional[int],
    start_at: Optional[int],
) -> bool:
    """Move the poll cursor, only if the row still has the settings (`updated_at`),
    cursor and start date the poll began with: a poll never overwrites what was
    saved while it ran. True when moved."""
    changed = await db.execute(
        "UPDATE satmachineadmin.lamassu_config SET cursor_at = :cursor "
        "WHERE operator_user_id = :op AND updated_at = :updated "
        "AND COALESCE(cursor_at, -1) = :old AND COALESCE(start_at, -1) = :start",
        {
            "cursor": cursor_at,
            "op": operator_user_id,
            "updated": updated_at,
            "old": -1 if old_cursor_at is None else old_cursor_at,
            "start": -1 if start_at is None else start_at,
        },
    )
    return changed.rowcount == 1


# --------------------------------------------------------------- LNbits' own books
# LNbits 1.6.2 can leave an internal transfer half-written: the payer's debit
# (`internal_<hash>`, success) without the payee's credit (see engine/books.py).
# These read and repair its `apipayments` rows, never anything else of LNbits'.


class UndoneCredit(BaseModel):
    checking_id: str
    payment_hash: str
    wallet_id: str
    amount: int  # msat, > 0


_INTERNAL_DEBIT_PAID = (
    "EXISTS (SELECT 1 FROM apipayments o WHERE o.checking_id = 'internal_' || "
    "i.payment_hash AND o.status = 'success' AND o.amount = -i.amount "
    "AND LOWER(o.bolt11) = LOWER(i.bolt11))"
)


async def undone_internal_credits(
    since: int, limit: int, offset: int = 0
) -> list[UndoneCredit]:
    """Incoming payments changed since `since` (epoch s) that LNbits holds as not
    paid although its internal debit of the same invoice, at the same amount,
    succeeded; a page of them, in a stable order."""
    from lnbits.core.db import db as core_db

    return await core_db.fetchall(
        "SELECT i.checking_id, i.payment_hash, i.wallet_id, i.amount "
        "FROM apipayments i WHERE i.updated_at >= "
        + core_db.timestamp_placeholder("since")
        + " AND i.amount > 0 AND i.status = 'failed' AND "
        + _INTERNAL_DEBIT_PAID
        + " ORDER BY i.updated_at, i.checking_id LIMIT :limit OFFSET :offset",
        {"since": since, "limit": limit, "offset": offset},
        UndoneCredit,
    )


async def restore_internal_credit(
    checking_id: str, payment_hash: str, wallet_id: str, amount_msat: int
) -> bool:
    """Mark the payee's side of an internal transfer paid, as LNbits' own
    `_pay_internal_invoice` does — only while its debit still reads succeeded at
    the same amount and the credit does not. True when this call changed it."""
    from lnbits.core.db import db as core_db

    changed = await core_db.execute(
        "UPDATE apipayments SET status = 'success', updated_at = "
        + core_db.timestamp_placeholder("now")
        + " WHERE checking_id = :checking_id AND payment_hash = :hash "
        "AND wallet_id = :wallet AND amount = :amount AND amount > 0 "
        "AND status IN ('pending', 'failed') "
        "AND EXISTS (SELECT 1 FROM apipayments o WHERE o.checking_id = :debit "
        "AND o.status = 'success' AND o.amount = -apipayments.amount "
        "AND LOWER(o.bolt11) = LOWER(apipayments.bolt11))",
        {
            "checking_id": checking_id,
            "wallet": wallet_id,
            "amount": amount_msat,
            "hash": payment_hash,
            "debit": f"internal_{payment_hash}",
            "now": now(),
        },
    )
    return changed.rowcount == 1


async def legs_paying_invoices(payment_hashes: Sequence[str]) -> list[Leg]:
    """Legs to a wallet whose stored invoice is one of these."""
    if not payment_hashes:
        return []
    marks, keys = _named_list("h", payment_hashes)
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE destination_kind = 'wallet' "
        f"AND payment_hash IN ({marks})",
        keys,
        Leg,
    )


# ---------------------------------------------------------------- void, statements,
# platform view (issue 16)


async def void_settlement(
    tx: Tx, settlement_id: str, token: str, reason: str
) -> Optional[list[Leg]]:
    """Write a settlement off: every open leg voided (its LP reservation released),
    then the settlement `voided`, in the caller's transaction. The caller holds the
    settlement's claim (`token`), so no worker pays one of its legs meanwhile.

    Every step is a guarded UPDATE, and None (nothing to commit: the caller rolls
    back) answers any of: a leg completed or in flight, a leg that changed status
    since it was read (a payment completing concurrently: on PostgreSQL the UPDATE
    waits for that transaction and then finds the row changed), or a claim lost.
    Returns the legs voided."""
    legs = await tx.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE settlement_id = :id "
        "AND leg_type <> 'autoforward' ORDER BY id",
        {"id": settlement_id},
        Leg,
    )
    voided = []
    for leg in legs:
        if leg.status == "voided":
            continue
        if leg.status not in ("pending", "failed", "skipped"):
            return None
        if leg.in_flight_since is not None:
            return None
        changed = await tx.execute(
            "UPDATE satmachineadmin.legs SET status = 'voided', updated_at = :now, "
            "error = :reason, claimed_until = NULL, claim_token = NULL "
            "WHERE id = :id AND status = :status AND in_flight_since IS NULL",
            {"id": leg.id, "status": leg.status, "now": now(), "reason": reason},
        )
        if changed != 1:
            return None
        released = _reserves(leg, leg.status)
        if leg.client_id and released:
            await add_client_totals(tx, leg.client_id, reserved_minor=-released)
        voided.append(leg)
    changed = await tx.execute(
        """
        UPDATE satmachineadmin.settlements
        SET status = 'voided', error = :reason, next_attempt_at = 0,
            claim_token = NULL, claimed_until = NULL, updated_at = :now
        WHERE id = :id AND status = 'processing' AND claim_token = :token
          AND NOT EXISTS (
              SELECT 1 FROM satmachineadmin.legs l
              WHERE l.settlement_id = :id AND l.leg_type <> 'autoforward'
                AND (l.status = 'completed' OR l.in_flight_since IS NOT NULL))
        """,
        {"id": settlement_id, "token": token, "reason": reason, "now": now()},
    )
    return voided if changed == 1 else None


async def count_legs(
    *,
    operator_user_id: str,
    machine_id: Optional[str] = None,
    client_id: Optional[str] = None,
    leg_type: Optional[str] = None,
    status: Optional[str] = None,
    settlement_id: Optional[str] = None,
    since: Optional[int] = None,
    until: Optional[int] = None,
) -> int:
    """How many legs list_legs would page through (for X-Total-Count)."""
    columns = {
        "machine_id": machine_id,
        "client_id": client_id,
        "leg_type": leg_type,
        "status": status,
        "settlement_id": settlement_id,
    }
    where, values = _leg_where(operator_user_id, None, columns, since, until)
    row: Any = await db.fetchone(
        f"SELECT COUNT(*) AS n FROM satmachineadmin.legs l WHERE {' AND '.join(where)}",
        values,
    )
    return int(row["n"])


async def estimated_settlement_ids(settlement_ids: Sequence[str]) -> set[str]:
    """Those of the settlements whose principal was estimated (a Lamassu row
    without a ticker price)."""
    wanted = sorted({s for s in settlement_ids if s})
    if not wanted:
        return set()
    marks, keys = _named_list("s", wanted)
    rows: Any = await db.fetchall(
        f"SELECT id FROM satmachineadmin.settlements WHERE id IN ({marks}) "
        "AND estimated = TRUE",
        keys,
    )
    return {row["id"] for row in rows}


async def list_user_deposits(user_id: str) -> list[Deposit]:
    """The LP's own deposits at every machine that enrolled them, newest first."""
    return await db.fetchall(
        "SELECT d.* FROM satmachineadmin.deposits d "
        "JOIN satmachineadmin.clients c ON c.id = d.client_id "
        "WHERE c.user_id = :user ORDER BY d.created_at DESC, d.id DESC",
        {"user": user_id},
        Deposit,
    )


async def iter_user_completed_legs(
    user_id: str, leg_types: Sequence[str], page_size: int = 2000
) -> AsyncIterator[list[Leg]]:
    """The LP's own completed legs of those types (their payouts: dca, fixed,
    settlement; their forwards: autoforward), oldest completion first, a page at a
    time (keyset on completed_at, id)."""
    marks, types = _named_list("t", leg_types)
    async for page in _keyset_pages(
        "SELECT l.* FROM satmachineadmin.legs l "
        "JOIN satmachineadmin.clients c ON c.id = l.client_id",
        [
            "c.user_id = :user",
            "l.status = 'completed'",
            f"l.leg_type IN ({marks})",
            "l.completed_at IS NOT NULL",
        ],
        {"user": user_id, **types},
        page_size,
        Leg,
        order="completed_at",
        alias="l.",
    ):
        yield page


async def list_all_machines() -> list[Machine]:
    """Every operator's machines (the platform's read-only view)."""
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.machines "
        "ORDER BY operator_user_id, created_at, id",
        {},
        Machine,
    )


async def iter_all_settlements(
    *,
    page_size: int = 1000,
    since: Optional[int] = None,
    until: Optional[int] = None,
) -> AsyncIterator[list[Settlement]]:
    """Every operator's settlements, oldest first, a page at a time (keyset)."""
    where = ["1 = 1"]
    values: dict[str, Any] = {}
    if since is not None:
        where.append("created_at >= :since")
        values["since"] = since
    if until is not None:
        where.append("created_at < :until")
        values["until"] = until
    async for page in _keyset_pages(
        "SELECT * FROM satmachineadmin.settlements",
        where,
        values,
        page_size,
        Settlement,
    ):
        yield page


async def platform_fees_paid(
    since: Optional[int] = None, until: Optional[int] = None
) -> AsyncIterator[list[Any]]:
    """The completed super_fee legs (what the platform actually received), as rows
    of (machine_id, operator_user_id, amount_sats, completed_at, id), a page at a
    time."""
    where = ["leg_type = 'super_fee'", "status = 'completed'"]
    values: dict[str, Any] = {}
    if since is not None:
        where.append("created_at >= :since")
        values["since"] = since
    if until is not None:
        where.append("created_at < :until")
        values["until"] = until
    async for page in _keyset_pages(
        "SELECT id, machine_id, operator_user_id, amount_sats, created_at, "
        "completed_at FROM satmachineadmin.legs",
        where,
        values,
        2000,
    ):
        yield page


# ---------------------------------------------------------------- v1 import


async def v1_import_summary(operator_user_id: str) -> Optional[dict]:
    """What m005 imported from v1 for this operator (its `v1.import` audit row), with
    when; None when nothing was."""
    row: Any = await db.fetchone(
        "SELECT detail, created_at FROM satmachineadmin.audit_log "
        "WHERE operator_user_id = :op AND action = 'v1.import'",
        {"op": operator_user_id},
    )
    if not row:
        return None
    summary = json.loads(row["detail"] or "{}")
    summary["imported_at"] = int(row["created_at"])
    return summary


# ---------------------------------------------------------------- alerts


async def get_alert_state(name: str) -> Optional[int]:
    row: Any = await db.fetchone(
        "SELECT value FROM satmachineadmin.alert_state WHERE name = :name",
        {"name": name},
    )
    return int(row["value"]) if row else None


async def get_alert_settings(user_id: str) -> Optional[dict]:
    row: Any = await db.fetchone(
        "SELECT settings FROM satmachineadmin.alert_settings WHERE user_id = :user",
        {"user": user_id},
    )
    return json.loads(row["settings"]) if row else None


async def save_alert_settings(user_id: str, settings: dict) -> None:
    async with transaction() as tx:
        values = {
            "user": user_id,
            "settings": json.dumps(settings, sort_keys=True),
            "now": now(),
        }
        changed = await tx.execute(
            "UPDATE satmachineadmin.alert_settings "
            "SET settings = :settings, updated_at = :now WHERE user_id = :user",
            values,
        )
        if not changed:
            await tx.execute(
                "INSERT INTO satmachineadmin.alert_settings "
                "(user_id, settings, updated_at) VALUES (:user, :settings, :now)",
                values,
            )


async def open_alert(alert: Alert, message: Optional[AlertMessage]) -> bool:
    """Record an incident or event and queue its message, in one transaction. False
    when its key is already recorded (seen by an earlier pass, before a restart or
    by another process): nothing is written and nothing is sent again."""
    async with transaction() as tx:
        inserted = await tx.execute(
            insert_query("satmachineadmin.alerts", alert)
            + " ON CONFLICT (incident_key) DO NOTHING",
            model_to_dict(alert),
        )
        if inserted and message:
            await tx.insert("satmachineadmin.alert_messages", message)
    return bool(inserted)


async def resolve_alert(
    alert_id: str, resolved_at: int, message: Optional[AlertMessage]
) -> bool:
    """Close an open incident and queue its "resolved" message, in one transaction;
    False when it was already closed. The key gets the row's id appended: the
    unique key then means "at most one open incident per condition", and the same
    condition coming back later is a new incident."""
    async with transaction() as tx:
        closed = await tx.execute(
            "UPDATE satmachineadmin.alerts SET resolved_at = :at, updated_at = :at, "
            "incident_key = incident_key || '#' || id "
            "WHERE id = :id AND resolved_at IS NULL",
            {"id": alert_id, "at": resolved_at},
        )
        if closed and message:
            await tx.insert("satmachineadmin.alert_messages", message)
    return bool(closed)


async def list_open_incidents() -> list[Alert]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.alerts "
        "WHERE resolved_at IS NULL AND audience = 'operator' ORDER BY opened_at, id",
        {},
        Alert,
    )


async def latest_alert(user_id: str, kind: str) -> Optional[Alert]:
    return await db.fetchone(
        "SELECT * FROM satmachineadmin.alerts WHERE user_id = :user AND kind = :kind "
        "ORDER BY opened_at DESC, id DESC LIMIT 1",
        {"user": user_id, "kind": kind},
        Alert,
    )


async def list_alerts(
    user_id: str, audience: str, limit: int
) -> list[tuple[Alert, Optional[AlertMessage]]]:
    """The user's alerts, newest first, each with its latest message."""
    alerts: list[Alert] = await db.fetchall(
        "SELECT * FROM satmachineadmin.alerts "
        "WHERE user_id = :user AND audience = :audience "
        "ORDER BY updated_at DESC, id DESC LIMIT :limit",
        {"user": user_id, "audience": audience, "limit": limit},
        Alert,
    )
    if not alerts:
        return []
    marks, names = _named_list("a", [alert.id for alert in alerts])
    messages: list[AlertMessage] = await db.fetchall(
        "SELECT * FROM satmachineadmin.alert_messages "
        f"WHERE alert_id IN ({marks}) "
        "ORDER BY created_at, id",
        names,
        AlertMessage,
    )
    latest = {message.alert_id: message for message in messages}
    return [(alert, latest.get(alert.id)) for alert in alerts]


async def get_alert_message(message_id: str) -> Optional[AlertMessage]:
    return await _by_id("alert_messages", AlertMessage, message_id)


async def due_alert_messages(moment: int, limit: int = 50) -> list[AlertMessage]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.alert_messages "
        "WHERE status = 'queued' AND next_attempt_at <= :now "
        "ORDER BY next_attempt_at, created_at, id LIMIT :limit",
        {"now": moment, "limit": limit},
        AlertMessage,
    )


async def claim_alert_message(message_id: str, attempts: int, until: int) -> bool:
    """Take a message for one delivery attempt (another sender skips it until
    `until`): the attempt counter is the fence."""
    return bool(
        await db.execute(
            "UPDATE satmachineadmin.alert_messages "
            "SET attempts = :next, next_attempt_at = :until "
            "WHERE id = :id AND attempts = :attempts AND status = 'queued'",
            {
                "id": message_id,
                "attempts": attempts,
                "next": attempts + 1,
                "until": until,
            },
        )
    )


async def record_alert_delivery(
    message_id: str,
    status: str,
    channels_done: str,
    next_attempt_at: int,
    last_error: Optional[str],
) -> None:
    await db.execute(
        "UPDATE satmachineadmin.alert_messages SET status = :status, "
        "channels_done = :done, next_attempt_at = :next, last_error = :error, "
        "sent_at = :sent_at WHERE id = :id",
        {
            "id": message_id,
            "status": status,
            "done": channels_done,
            "next": next_attempt_at,
            "error": last_error,
            "sent_at": None if status == "queued" else now(),
        },
    )


async def alert_delivery_summary(user_id: str) -> dict:
    """The user's messages still queued: how many, how many after a failed
    attempt, the oldest, and the latest failure."""
    row: Any = await db.fetchone(
        "SELECT COUNT(*) AS queued, "
        "COALESCE(SUM(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END), 0) "
        "AS failing, MIN(created_at) AS oldest "
        "FROM satmachineadmin.alert_messages "
        "WHERE user_id = :user AND status = 'queued'",
        {"user": user_id},
    )
    failure: Any = await db.fetchone(
        "SELECT last_error, attempts, next_attempt_at "
        "FROM satmachineadmin.alert_messages "
        "WHERE user_id = :user AND status = 'queued' AND last_error IS NOT NULL "
        "ORDER BY next_attempt_at DESC, id DESC LIMIT 1",
        {"user": user_id},
    )
    return {
        "queued": int(row["queued"]),
        "failing": int(row["failing"]),
        "oldest_queued_at": row["oldest"],
        "last_error": failure["last_error"] if failure else None,
        "last_error_attempts": int(failure["attempts"]) if failure else 0,
        "next_attempt_at": failure["next_attempt_at"] if failure else None,
    }


# What the alert detector reads: every operator's at once, each query bounded by
# an index (status, in-flight legs) or by `since` (events after alerts began).


async def list_lamassu_config_rows() -> list[dict]:
    rows: Any = await db.fetchall("SELECT * FROM satmachineadmin.lamassu_config", {})
    return [dict(row) for row in rows]


async def list_settlements_in(
    statuses: Sequence[str], updated_since: int = 0, limit: int = 1000
) -> list[Settlement]:
    marks, keys = _named_list("s", statuses)
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.settlements "
        f"WHERE status IN ({marks}) "
        "AND updated_at >= :since ORDER BY updated_at, id LIMIT :limit",
        {**keys, "since": updated_since, "limit": limit},
        Settlement,
    )


async def list_in_flight_legs_before(moment: int, limit: int = 1000) -> list[Leg]:
    return await db.fetchall(
        "SELECT * FROM satmachineadmin.legs WHERE status = 'pending' "
        "AND in_flight_since IS NOT NULL AND in_flight_since < :moment "
        "ORDER BY in_flight_since, id LIMIT :limit",
        {"moment": moment, "limit": limit},
        Leg,
    )


async def list_confirmed_deposits_since(since: int, limit: int = 1000) -> list[Any]:
    """Deposits confirmed since `since`, with the LP's user id."""
    rows: Any = await db.fetchall(
        "SELECT d.*, c.user_id FROM satmachineadmin.deposits d "
        "JOIN satmachineadmin.clients c ON c.id = d.client_id "
        "WHERE d.status = 'confirmed' AND d.confirmed_at >= :since "
        "ORDER BY d.confirmed_at, d.id LIMIT :limit",
        {"since": since, "limit": limit},
    )
    return [dict(row) for row in rows]


async def list_cycle_complete_clients(since: int, limit: int = 1000) -> list[Client]:
    """LPs whose whole balance is paid out: `cycle_complete` says it is all taken by
    legs, which may still be unpaid (pending, in flight, failed on an empty float),
    so an LP is listed only once none of those legs is left, and again only when one
    of them was paid (or the LP changed) since `since`."""
    return await db.fetchall(
        "SELECT c.* FROM satmachineadmin.clients c WHERE c.cycle_complete = TRUE "
        "AND NOT EXISTS (SELECT 1 FROM satmachineadmin.legs l "
        "WHERE l.client_id = c.id AND l.leg_type IN ('dca', 'fixed', 'settlement') "
        "AND l.status IN ('pending', 'failed')) "
        "AND (c.updated_at >= :since OR EXISTS (SELECT 1 FROM satmachineadmin.legs l "
        "WHERE l.client_id = c.id AND l.status = 'completed' "
        "AND l.updated_at >= :since)) "
        "ORDER BY c.updated_at, c.id LIMIT :limit",
        {"since": since, "limit": limit},
        Client,
    )


async def list_failed_autoforwards(since: int, limit: int = 1000) -> list[Any]:
    """Autoforward legs that failed since `since`, with the LP's user id."""
    rows: Any = await db.fetchall(
        "SELECT l.id, l.machine_id, l.amount_sats, l.destination, l.error, "
        "l.attempts, c.user_id FROM satmachineadmin.legs l "
        "JOIN satmachineadmin.clients c ON c.id = l.client_id "
        "WHERE l.leg_type = 'autoforward' AND l.status = 'failed' "
        "AND l.updated_at >= :since ORDER BY l.updated_at, l.id LIMIT :limit",
        {"since": since, "limit": limit},
    )
    return [dict(row) for row in rows]


async def lp_users_paid_since(since: int) -> list[str]:
    rows: Any = await db.fetchall(
        "SELECT DISTINCT c.user_id FROM satmachineadmin.legs l "
        "JOIN satmachineadmin.clients c ON c.id = l.client_id "
        "WHERE l.updated_at >= :since AND l.status = 'completed' "
        "AND l.leg_type IN ('dca', 'fixed', 'settlement')",
        {"since": since},
    )
    return [row["user_id"] for row in rows]


async def lp_payouts_between(user_id: str, after: int, until: int) -> list[Any]:
    """Per machine and currency: the LP's completed principal legs with
    after < completed_at <= until (count, sats, fiat minor)."""
    rows: Any = await db.fetchall(
        "SELECT l.machine_id, l.currency, COUNT(*) AS legs, "
        "COALESCE(SUM(l.amount_sats), 0) AS sats, "
        "COALESCE(SUM(l.amount_fiat_minor), 0) AS fiat "
        "FROM satmachineadmin.legs l "
        "JOIN satmachineadmin.clients c ON c.id = l.client_id "
        "WHERE c.user_id = :user AND l.status = 'completed' "
        "AND l.leg_type IN ('dca', 'fixed', 'settlement') "
        "AND l.completed_at > :after AND l.completed_at <= :until "
        "GROUP BY l.machine_id, l.currency ORDER BY l.machine_id, l.currency",
        {"user": user_id, "after": after, "until": until},
    )
    return [dict(row) for row in rows]


async def users_changed_since(since: int) -> tuple[set[str], set[str]]:
    """(operators, LP users) whose settlements, legs or LP balances changed at or
    after `since`: whom the live-update loop tells to refresh."""
    operators: set[str] = set()
    lps: set[str] = set()
    for table in ("settlements", "legs", "clients"):
        rows: Any = await db.fetchall(
            f"SELECT DISTINCT operator_user_id FROM satmachineadmin.{table} "
            "WHERE updated_at >= :since",
            {"since": since},
        )
        operators.update(row["operator_user_id"] for row in rows)
    rows = await db.fetchall(
        "SELECT DISTINCT c.user_id FROM satmachineadmin.clients c "
        "WHERE c.updated_at >= :since UNION "
        "SELECT DISTINCT c.user_id FROM satmachineadmin.legs l "
        "JOIN satmachineadmin.clients c ON c.id = l.client_id "
        "WHERE l.updated_at >= :since",
        {"since": since},
    )
    lps.update(row["user_id"] for row in rows)
    return operators, lps
