"""An installation of v1 (Atitlanio/satmachineadmin, the same extension id) upgraded in
place: LNbits stored version 2 for it, so it runs m003 onwards. v1's schema is built
with v1's own SQL and holds rows as v1 wrote them; after the upgrade every LP's balance
is what v1 showed, v1's tables are kept (secrets blanked) and the import is listed.
"""

import json
from typing import Any

import pytest
import v1_install as v1
from test_migrations import fresh_databases, migrate

LAMASSU_IDS = {
    "lt-1": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "lt-2": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
}
V1_VERSION = 2  # v1's m001_initial_dca_schema, m002_add_transaction_time_…


async def _v1_install(conn: Any, schema: str, factory: Any) -> dict:
    """A v1 installation with LPs, deposits, payments, two configurations and two
    processed Lamassu transactions; returns the LNbits users and wallets involved."""
    operator = await factory.user(wallets=1, enable=False)
    old_wallet = await factory.wallet(operator, "old source")
    commission = await factory.wallet(operator, "commission")
    alice = await factory.user(enable=False)
    bob = await factory.user(enable=False)
    carol = await factory.user(enable=False)
    await v1.create_schema(conn, schema)

    async def write(table: str, **row: Any) -> None:
        await v1.write(conn, schema, table, row)

    for cid, user, mode, limit, status, day in (
        ("cl-alice", alice, "flow", None, "active", 1),
        ("cl-bob", bob, "fixed", 50, "active", 2),
        ("cl-carol", carol, "flow", None, "inactive", 3),
        # v1 let the same LNbits user be added twice.
        ("cl-alice-2", alice, "flow", None, "active", 4),
    ):
        await write(
            "dca_clients",
            id=cid,
            user_id=user.id,
            wallet_id=user.wallet.id,
            username=cid[3:],
            dca_mode=mode,
            fixed_mode_daily_limit=limit,
            status=status,
            created_at=v1.at(day),
            updated_at=v1.at(day),
        )
    for did, cid, amount, status in (
        ("dep-1", "cl-alice", 1000, "confirmed"),
        ("dep-2", "cl-alice", 500, "pending"),
        ("dep-3", "cl-bob", 200, "confirmed"),
        ("dep-4", "cl-alice-2", 100, "confirmed"),
    ):
        await write(
            "dca_deposits",
            id=did,
            client_id=cid,
            amount=amount,
            currency="GTQ",
            status=status,
            notes=f"{did} note",
            created_at=v1.at(5),
            confirmed_at=v1.at(5, 13) if status == "confirmed" else None,
        )
    for tid, lamassu_id, fiat, day in (
        ("lt-1", "0f8fad5b-d9cb-469f-a165-70867728950e", 300, 6),
        ("lt-2", "7c9e6679-7425-40de-944b-e07fc1f90ae7", 100, 7),
    ):
        await write(
            "lamassu_transactions",
            id=tid,
            lamassu_transaction_id=lamassu_id,
            fiat_amount=fiat,
            crypto_amount=fiat * 150,
            commission_percentage=0.055,
            discount=0.0,
            effective_commission=0.055,
            commission_amount_sats=fiat * 8,
            base_amount_sats=fiat * 142,
            exchange_rate=150.12,
            crypto_code="BTC",
            fiat_code="GTQ",
            device_id="dev-atm-1",
            transaction_time=v1.at(day),
            processed_at=v1.at(day, 13),
            clients_count=2,
            distributions_total_sats=fiat * 142,
        )
    for pid, cid, sats, fiat, kind, lamassu_id, status in (
        ("pay-1", "cl-alice", 15_000, 100, "flow", "lt-1", "confirmed"),
        ("pay-2", "cl-alice", 7_500, 50, "flow", "lt-2", "confirmed"),
        ("pay-3", "cl-alice", 4_500, 30, "flow", "lt-2", "failed"),
        ("pay-4", "cl-bob", 37_500, 250, "fixed", "", "confirmed"),
        ("pay-5", "cl-bob", 1_500, 10, "fixed", "", "pending"),
    ):
        await write(
            "dca_payments",
            id=pid,
            client_id=cid,
            amount_sats=sats,
            amount_fiat=fiat,
            exchange_rate=150.0,
            transaction_type=kind,
            lamassu_transaction_id=LAMASSU_IDS.get(lamassu_id),
            payment_hash=f"hash-{pid}",
            status=status,
            created_at=v1.at(8),
            transaction_time=v1.at(6),
        )
    for config_id, source, active, day in (
        ("cfg-old", old_wallet.id, False, 1),
        ("cfg-now", operator.wallet.id, True, 2),
    ):
        await write(
            "lamassu_config",
            id=config_id,
            host="lamassu.example.com",
            port=5432,
            database_name="lamassu",
            username="readonly",
            password=f"plaintext-{config_id}",
            source_wallet_id=source,
            commission_wallet_id=commission.id,
            is_active=active,
            use_ssh_tunnel=True,
            ssh_host="atm-server.example.com",
            ssh_port=22,
            ssh_username="lamassu",
            ssh_password="ssh-secret",
            ssh_private_key=None,
            last_successful_poll=v1.at(9),
            created_at=v1.at(day),
            updated_at=v1.at(day),
        )
    return {
        "operator": operator,
        "old_wallet": old_wallet,
        "commission": commission,
        "alice": alice,
        "bob": bob,
        "carol": carol,
    }


async def _count(conn: Any, table: str) -> int:
    row = await conn.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
    return int(row["n"])


async def _imported(conn: Any) -> dict:
    out = {}
    for table in (
        "machines",
        "clients",
        "lp_preferences",
        "deposits",
        "legs",
        "settlements",
        "transaction_keys",
        "commission_rules",
        "lamassu_config",
        "audit_log",
    ):
        out[table] = await _count(conn, f"satmachineadmin.{table}")
    return out


async def test_v1_first_release_upgraded_in_place_keeps_every_balance(
    app, factory, tmp_path
):
    from lnbits.helpers import decrypt_internal_message

    async with (
        fresh_databases(tmp_path, "ext_satmachineadmin") as dbs,
        dbs["ext_satmachineadmin"].connect() as conn,
    ):
        users = await _v1_install(conn, "satmachineadmin", factory)
        shown = {
            cid: await v1.balance(conn, "satmachineadmin", cid)
            for cid in ("cl-alice", "cl-bob", "cl-carol", "cl-alice-2")
        }
        assert shown == {
            "cl-alice": 850,
            "cl-bob": -50,
            "cl-carol": 0,
            "cl-alice-2": 100,
        }

        await migrate(conn, after=V1_VERSION)

        # v1's tables: moved aside, every row kept, the secrets gone.
        for table, rows in (
            ("dca_clients", 4),
            ("dca_deposits", 4),
            ("dca_payments", 5),
            ("lamassu_config", 2),
            ("lamassu_transactions", 2),
        ):
            assert await _count(conn, f"satmachineadmin.v1_{table}") == rows
        secrets = await conn.fetchall(
            "SELECT password, ssh_password, ssh_private_key "
            "FROM satmachineadmin.v1_lamassu_config"
        )
        assert [tuple(r.values()) for r in secrets] == [("", None, None)] * 2
        # v1's own balance query reads the kept tables as before.
        assert await v1.balance(conn, "satmachineadmin", "cl-alice", "v1_") == 850

        operator = users["operator"].id
        machines = {
            r["id"]: r
            for r in await conn.fetchall("SELECT * FROM satmachineadmin.machines")
        }
        assert set(machines) == {"v1-cfg-now", "v1-cfg-old"}
        home = machines["v1-cfg-now"]
        assert (home["wallet_id"], home["fiat_currency"], home["status"]) == (
            users["operator"].wallet.id,
            "GTQ",
            "active",
        )
        assert home["operator_user_id"] == operator
        assert home["lamassu_device_id"] == "dev-atm-1"
        assert machines["v1-cfg-old"]["wallet_id"] == users["old_wallet"].id
        assert machines["v1-cfg-old"]["status"] == "inactive"
        rules = await conn.fetchall(
            "SELECT machine_id, target, target_kind, percent "
            "FROM satmachineadmin.commission_rules ORDER BY machine_id"
        )
        assert [tuple(r.values()) for r in rules] == [
            ("v1-cfg-now", users["commission"].id, "wallet", "100"),
            ("v1-cfg-old", users["commission"].id, "wallet", "100"),
        ]

        # Every LP's balance is what v1 showed (the user added twice: one LP).
        clients = {
            r["id"]: r
            for r in await conn.fetchall("SELECT * FROM satmachineadmin.clients")
        }
        assert set(clients) == {"cl-alice", "cl-bob", "cl-carol"}
        for cid, v1_balance in (
            ("cl-alice", shown["cl-alice"] + shown["cl-alice-2"]),
            ("cl-bob", shown["cl-bob"]),
            ("cl-carol", shown["cl-carol"]),
        ):
            row = clients[cid]
            assert row["deposits_minor"] - row["reserved_minor"] == v1_balance * 100
            assert row["machine_id"] == "v1-cfg-now"
        assert (
            clients["cl-alice"]["deposits_minor"],
            clients["cl-alice"]["reserved_minor"],
        ) == (110_000, 15_000)
        assert clients["cl-alice"]["sats_received"] == 22_500
        assert bool(clients["cl-bob"]["overspent_before_m002"]) is True
        assert bool(clients["cl-alice"]["overspent_before_m002"]) is False
        assert clients["cl-carol"]["status"] == "inactive"
        prefs = {
            r["user_id"]: r
            for r in await conn.fetchall("SELECT * FROM satmachineadmin.lp_preferences")
        }
        assert prefs[users["bob"].id]["dca_mode"] == "fixed"
        assert prefs[users["bob"].id]["fixed_mode_daily_limit"] == "50"
        assert prefs[users["alice"].id]["wallet_id"] == users["alice"].wallet.id
        assert bool(prefs[users["alice"].id]["autoforward_enabled"]) is False

        deposits = {
            r["id"]: (r["client_id"], r["amount_minor"], r["status"], r["currency"])
            for r in await conn.fetchall("SELECT * FROM satmachineadmin.deposits")
        }
        assert deposits == {
            "dep-1": ("cl-alice", 100_000, "confirmed", "GTQ"),
            "dep-2": ("cl-alice", 50_000, "pending", "GTQ"),
            "dep-3": ("cl-bob", 20_000, "confirmed", "GTQ"),
            "dep-4": ("cl-alice", 10_000, "confirmed", "GTQ"),
        }
        # The balance is the sum of its rows, as the extension keeps it.
        for cid, row in clients.items():
            legs = await conn.fetchone(
                "SELECT COALESCE(SUM(amount_fiat_minor), 0) AS fiat "
                "FROM satmachineadmin.legs WHERE client_id = :c "
                "AND status IN ('pending', 'completed', 'failed')",
                {"c": cid},
            )
            assert int(legs["fiat"]) == row["reserved_minor"]

        legs = {
            r["id"]: r
            for r in await conn.fetchall("SELECT * FROM satmachineadmin.legs")
        }
        assert {k: (v["status"], v["leg_type"]) for k, v in legs.items()} == {
            "v1-pay-1": ("completed", "dca"),
            "v1-pay-2": ("completed", "dca"),
            "v1-pay-3": ("skipped", "dca"),
            "v1-pay-4": ("completed", "fixed"),
            "v1-pay-5": ("skipped", "fixed"),
        }
        assert legs["v1-pay-1"]["settlement_id"] == "v1-lt-1"
        assert legs["v1-pay-1"]["destination"] == users["alice"].wallet.id
        assert legs["v1-pay-1"]["exchange_rate"] == "150"
        assert legs["v1-pay-4"]["settlement_id"] is None

        settlements = {
            r["id"]: r
            for r in await conn.fetchall("SELECT * FROM satmachineadmin.settlements")
        }
        assert {k: v["status"] for k, v in settlements.items()} == {
            "v1-lt-1": "processed",
            "v1-lt-2": "processed",
        }
        s1 = settlements["v1-lt-1"]
        assert (s1["fiat_amount_minor"], s1["wire_sats"], s1["principal_sats"]) == (
            30_000,
            45_000,
            42_600,
        )
        assert (s1["fee_sats"], s1["fee_fraction"], s1["exchange_rate"]) == (
            2_400,
            "0.055",
            "150.12",
        )
        keys = {
            r["key"]: r["settlement_id"]
            for r in await conn.fetchall(
                "SELECT key, settlement_id FROM satmachineadmin.transaction_keys"
            )
        }
        # Never paid again: a Lamassu poll finding them meets the claimed keys.
        assert keys == {
            f"lamassu:{operator}:0f8fad5b-d9cb-469f-a165-70867728950e": "v1-lt-1",
            f"lamassu:{operator}:7c9e6679-7425-40de-944b-e07fc1f90ae7": "v1-lt-2",
        }

        config = await conn.fetchone("SELECT * FROM satmachineadmin.lamassu_config")
        assert config["operator_user_id"] == operator
        assert (config["host"], config["username"]) == (
            "lamassu.example.com",
            "readonly",
        )
        assert decrypt_internal_message(config["password_encrypted"]) == (
            "plaintext-cfg-now"
        )
        assert "plaintext" not in config["password_encrypted"]
        # The poller resumes where v1's last successful poll was.
        assert config["cursor_at"] == v1.epoch_as_stored(conn, v1.at(9))

        audit = await conn.fetchall(
            "SELECT action, entity_id, detail FROM satmachineadmin.audit_log"
        )
        summary = [json.loads(r["detail"]) for r in audit if r["action"] == "v1.import"]
        assert len(summary) == 1
        assert summary[0]["lps"] == 3 and summary[0]["payments"] == 5
        assert summary[0]["remaining_minor"] == 85_000 + 10_000
        assert any("SSH tunnel" in note for note in summary[0]["notes"])
        assert any("cl-alice-2" in note for note in summary[0]["notes"])
        lps = {
            r["entity_id"]: json.loads(r["detail"])
            for r in audit
            if r["action"] == "v1.import.lp"
        }
        assert lps["cl-alice"]["remaining_minor"] == 95_000
        assert lps["cl-bob"]["remaining_minor"] == 0

        # Done once: running the import again changes nothing.
        before = await _imported(conn)
        from satmachineadmin import migrations

        await migrations.m005_v1_data_imported(conn)
        assert await _imported(conn) == before


async def test_v1_import_is_one_transaction(app, factory, tmp_path, monkeypatch):
    from satmachineadmin import migrations

    async with (
        fresh_databases(tmp_path, "ext_satmachineadmin") as dbs,
        dbs["ext_satmachineadmin"].connect() as conn,
    ):
        await _v1_install(conn, "satmachineadmin", factory)
        await migrate(conn, after=V1_VERSION, upto=4)
        real_insert = migrations._insert_row

        async def failing_insert(tx: Any, table: str, values: dict) -> None:
            if table == "legs":
                raise RuntimeError("disk full")
            await real_insert(tx, table, values)

        monkeypatch.setattr(migrations, "_insert_row", failing_insert)
        with pytest.raises(RuntimeError):
            await migrations.m005_v1_data_imported(conn)
        # Nothing of it stayed, not even the blanked password.
        counts = await _imported(conn)
        assert counts["clients"] == counts["audit_log"] == counts["machines"] == 0
        row = await conn.fetchone(
            "SELECT password FROM satmachineadmin.v1_lamassu_config "
            "WHERE id = 'cfg-now'"
        )
        assert row["password"] == "plaintext-cfg-now"

        monkeypatch.setattr(migrations, "_insert_row", real_insert)
        await migrations.m005_v1_data_imported(conn)
        counts = await _imported(conn)
        assert (counts["clients"], counts["legs"], counts["deposits"]) == (3, 5, 4)


async def test_v1_last_commit_schema_satoshimachine(
    app, factory, tmp_path, monkeypatch
):
    """v1's last commit kept its tables in `satoshimachine` (on SQLite its own file):
    they are read where they are, and this version's schema is created."""
    from lnbits.settings import settings

    monkeypatch.setattr(settings, "lnbits_data_folder", str(tmp_path))
    async with fresh_databases(
        tmp_path, "ext_satmachineadmin", "ext_satoshimachine"
    ) as dbs:
        async with dbs["ext_satoshimachine"].connect() as old:
            users = await _v1_install(old, "satoshimachine", factory)
        async with dbs["ext_satmachineadmin"].connect() as conn:
            await migrate(conn, after=V1_VERSION)
            clients = {
                r["id"]: r["deposits_minor"] - r["reserved_minor"]
                for r in await conn.fetchall("SELECT * FROM satmachineadmin.clients")
            }
            assert clients == {"cl-alice": 95_000, "cl-bob": -5_000, "cl-carol": 0}
            machine = await conn.fetchone(
                "SELECT wallet_id FROM satmachineadmin.machines WHERE id = 'v1-cfg-now'"
            )
            assert machine["wallet_id"] == users["operator"].wallet.id
            assert await _count(conn, "satmachineadmin.legs") == 5
        async with dbs["ext_satoshimachine"].connect() as old:
            rows = await old.fetchall(
                "SELECT password, ssh_password FROM satoshimachine.lamassu_config"
            )
            assert [tuple(r.values()) for r in rows] == [("", None)] * 2
            assert await _count(old, "satoshimachine.dca_payments") == 5


async def test_v1_schema_change_is_one_transaction(app, factory, tmp_path, monkeypatch):
    """m003 fails half-way (after v1's tables are renamed and some of this version's
    are created): nothing of it stays, and it runs again from the start."""
    from satmachineadmin import migrations

    async with (
        fresh_databases(tmp_path, "ext_satmachineadmin") as dbs,
        dbs["ext_satmachineadmin"].connect() as conn,
    ):
        await _v1_install(conn, "satmachineadmin", factory)
        real_m002 = migrations.m002_every_sat_held_by_the_database

        async def failing_m002(db: Any) -> None:
            raise RuntimeError("power cut")

        monkeypatch.setattr(
            migrations, "m002_every_sat_held_by_the_database", failing_m002
        )
        with pytest.raises(RuntimeError):
            await migrations.m003_v1_install_gets_this_schema(conn)
        tables = await migrations._tables(conn, "satmachineadmin")
        assert set(tables) == set(migrations.V1_TABLES)

        monkeypatch.setattr(
            migrations, "m002_every_sat_held_by_the_database", real_m002
        )
        await migrate(conn, after=V1_VERSION)
        assert await _count(conn, "satmachineadmin.clients") == 3


async def test_v1_without_a_configuration_keeps_its_lps_on_a_machine_to_set_up(
    app, factory, tmp_path
):
    """v1 with LPs and deposits but no Lamassu configuration (no source wallet): the
    LPs are kept, with their balances, on an inactive machine the operator (LNbits'
    super user, who ran v1) gives a wallet to."""
    from lnbits.settings import settings

    async with (
        fresh_databases(tmp_path, "ext_satmachineadmin") as dbs,
        dbs["ext_satmachineadmin"].connect() as conn,
    ):
        lp = await factory.user(enable=False)
        await v1.create_schema(conn, "satmachineadmin")
        await v1.write(
            conn,
            "satmachineadmin",
            "dca_clients",
            {
                "id": "cl-solo",
                "user_id": lp.id,
                "wallet_id": lp.wallet.id,
                "username": "solo",
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
                "id": "dep-solo",
                "client_id": "cl-solo",
                "amount": 250,
                "currency": "GTQ",
                "status": "confirmed",
                "notes": None,
                "created_at": v1.at(2),
                "confirmed_at": v1.at(2),
            },
        )
        await migrate(conn, after=V1_VERSION)
        machine = await conn.fetchone("SELECT * FROM satmachineadmin.machines")
        assert (machine["id"], machine["status"]) == ("v1-machine", "inactive")
        assert machine["operator_user_id"] == settings.super_user
        client = await conn.fetchone("SELECT * FROM satmachineadmin.clients")
        assert (client["id"], client["machine_id"], client["deposits_minor"]) == (
            "cl-solo",
            "v1-machine",
            25_000,
        )
        assert await _count(conn, "satmachineadmin.lamassu_config") == 0
        row = await conn.fetchone(
            "SELECT detail FROM satmachineadmin.audit_log WHERE action = 'v1.import'"
        )
        assert "set the wallet" in " ".join(json.loads(row["detail"])["notes"])
