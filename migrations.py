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

import time

from lnbits.db import SQLITE, Database


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


async def m003_payments_that_leave_lnbits(db: Database) -> None:
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


async def m005_alerts(db: Database) -> None:
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
