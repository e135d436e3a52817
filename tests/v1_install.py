"""v1 of this extension (github.com/Atitlanio/satmachineadmin, the same id), as an
installation holds it: its schema made by its own migrations' SQL, rows written the way
its crud writes them (datetimes; whole GTQ), and its balance as its own query computes
it. `schema` is where that release kept its tables: `satmachineadmin` (first release)
or `satoshimachine` (its last commit).
"""

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text


async def create_schema(conn: Any, schema: str) -> None:
    """v1's m001_initial_dca_schema and m002_add_transaction_time_to_dca_payments."""
    now = conn.timestamp_now
    await conn.execute(
        f"""
        CREATE TABLE {schema}.dca_clients (
            id TEXT PRIMARY KEY NOT NULL,
            user_id TEXT NOT NULL,
            wallet_id TEXT NOT NULL,
            username TEXT,
            dca_mode TEXT NOT NULL DEFAULT 'flow',
            fixed_mode_daily_limit INTEGER,
            status TEXT NOT NULL DEFAULT 'active',
            created_at TIMESTAMP NOT NULL DEFAULT {now},
            updated_at TIMESTAMP NOT NULL DEFAULT {now}
        );
        """
    )
    await conn.execute(
        f"""
        CREATE TABLE {schema}.dca_deposits (
            id TEXT PRIMARY KEY NOT NULL,
            client_id TEXT NOT NULL,
            amount INTEGER NOT NULL,
            currency TEXT NOT NULL DEFAULT 'GTQ',
            status TEXT NOT NULL DEFAULT 'pending',
            notes TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {now},
            confirmed_at TIMESTAMP
        );
        """
    )
    await conn.execute(
        f"""
        CREATE TABLE {schema}.dca_payments (
            id TEXT PRIMARY KEY NOT NULL,
            client_id TEXT NOT NULL,
            amount_sats INTEGER NOT NULL,
            amount_fiat INTEGER NOT NULL,
            exchange_rate REAL NOT NULL,
            transaction_type TEXT NOT NULL,
            lamassu_transaction_id TEXT,
            payment_hash TEXT,
            status TEXT NOT NULL DEFAULT 'pending',
            created_at TIMESTAMP NOT NULL DEFAULT {now}
        );
        """
    )
    await conn.execute(
        f"""
        CREATE TABLE {schema}.lamassu_config (
            id TEXT PRIMARY KEY NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL DEFAULT 5432,
            database_name TEXT NOT NULL,
            username TEXT NOT NULL,
            password TEXT NOT NULL,
            source_wallet_id TEXT,
            commission_wallet_id TEXT,
            is_active BOOLEAN NOT NULL DEFAULT true,
            test_connection_last TIMESTAMP,
            test_connection_success BOOLEAN,
            last_poll_time TIMESTAMP,
            last_successful_poll TIMESTAMP,
            use_ssh_tunnel BOOLEAN NOT NULL DEFAULT false,
            ssh_host TEXT,
            ssh_port INTEGER NOT NULL DEFAULT 22,
            ssh_username TEXT,
            ssh_password TEXT,
            ssh_private_key TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT {now},
            updated_at TIMESTAMP NOT NULL DEFAULT {now}
        );
        """
    )
    await conn.execute(
        f"""
        CREATE TABLE {schema}.lamassu_transactions (
            id TEXT PRIMARY KEY NOT NULL,
            lamassu_transaction_id TEXT NOT NULL UNIQUE,
            fiat_amount INTEGER NOT NULL,
            crypto_amount INTEGER NOT NULL,
            commission_percentage REAL NOT NULL,
            discount REAL NOT NULL DEFAULT 0.0,
            effective_commission REAL NOT NULL,
            commission_amount_sats INTEGER NOT NULL,
            base_amount_sats INTEGER NOT NULL,
            exchange_rate REAL NOT NULL,
            crypto_code TEXT NOT NULL DEFAULT 'BTC',
            fiat_code TEXT NOT NULL DEFAULT 'GTQ',
            device_id TEXT,
            transaction_time TIMESTAMP NOT NULL,
            processed_at TIMESTAMP NOT NULL DEFAULT {now},
            clients_count INTEGER NOT NULL DEFAULT 0,
            distributions_total_sats INTEGER NOT NULL DEFAULT 0
        );
        """
    )
    await conn.execute(
        f"ALTER TABLE {schema}.dca_payments ADD COLUMN transaction_time TIMESTAMP"
    )


async def write(conn: Any, schema: str, table: str, row: dict) -> None:
    """A row as v1's crud wrote it: datetimes through LNbits' connection (epoch
    integers on SQLite); on PostgreSQL a TIMESTAMP column takes the datetime itself."""
    columns = ", ".join(row)
    sql = (
        f"INSERT INTO {schema}.{table} ({columns}) "
        f"VALUES ({', '.join(':' + k for k in row)})"
    )
    if conn.type == "SQLITE":
        await conn.execute(sql, row)
    else:
        await conn.conn.execute(text(sql), row)
        await conn.conn.commit()


async def balance(conn: Any, schema: str, client_id: str, prefix: str = "") -> int:
    """v1's get_client_balance_summary: confirmed deposits less the amount_fiat of
    confirmed payments, in whole GTQ."""
    deposits = await conn.fetchone(
        f"SELECT COALESCE(SUM(amount), 0) AS total FROM {schema}.{prefix}dca_deposits "
        "WHERE client_id = :client_id AND status = 'confirmed'",
        {"client_id": client_id},
    )
    payments = await conn.fetchone(
        f"SELECT COALESCE(SUM(amount_fiat), 0) AS total FROM {schema}.{prefix}dca_payments "
        "WHERE client_id = :client_id AND status = 'confirmed'",
        {"client_id": client_id},
    )
    return int(deposits["total"]) - int(payments["total"])


def epoch_as_stored(conn: Any, moment: datetime) -> int:
    """What a naive datetime v1 wrote reads back as: LNbits turned it into epoch
    seconds in the server's zone on SQLite; PostgreSQL kept it naive (read as UTC)."""
    if conn.type == "SQLITE":
        return int(moment.timestamp())
    return int(moment.replace(tzinfo=timezone.utc).timestamp())


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2025, 6, day, hour, 0, 0)
