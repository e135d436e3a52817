"""What the database holds for a set of operators and users: the "nothing changed"
check of the refusal tests.

Read straight from the tables (every row and column the extension keeps for them,
the platform config, their audit rows and their LNbits wallets' payments), in one
connection: stricter than comparing what the API shows, and fast enough to run after
each of hundreds of refused requests.
"""

from typing import Any, Sequence

# Table -> the column that says whose row it is.
_OWNED_BY_OPERATOR = (
    "machines",
    "clients",
    "deposits",
    "settlements",
    "legs",
    "commission_rules",
    "lamassu_config",
)


def _ids(prefix: str, values: Sequence[str]) -> tuple[str, dict]:
    names = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{name}" for name in names) or "NULL", names


async def database_state(
    operator_ids: Sequence[str], user_ids: Sequence[str], wallet_ids: Sequence[str]
) -> dict:
    from lnbits.core.db import db as core_db

    from satmachineadmin import db

    ops, op_values = _ids("op", operator_ids)
    users, user_values = _ids("user", [*operator_ids, *user_ids])
    wallets, wallet_values = _ids("wallet", wallet_ids)
    state: dict[str, Any] = {}
    async with db.connect() as conn:

        async def rows(sql: str, values: dict) -> list:
            return [dict(row) for row in await conn.fetchall(sql, values)]

        for table in _OWNED_BY_OPERATOR:
            state[table] = await rows(
                f"SELECT * FROM satmachineadmin.{table} "
                f"WHERE operator_user_id IN ({ops}) ORDER BY 1",
                op_values,
            )
        state["lp_preferences"] = await rows(
            f"SELECT * FROM satmachineadmin.lp_preferences "
            f"WHERE user_id IN ({users}) ORDER BY user_id",
            user_values,
        )
        state["platform_config"] = await rows(
            "SELECT * FROM satmachineadmin.platform_config", {}
        )
        state["settlement_notes"] = await rows(
            "SELECT n.* FROM satmachineadmin.settlement_notes n "
            "JOIN satmachineadmin.settlements s ON s.id = n.settlement_id "
            f"WHERE s.operator_user_id IN ({ops}) ORDER BY n.id",
            op_values,
        )
        state["audit_log"] = await rows(
            f"SELECT id FROM satmachineadmin.audit_log WHERE actor_user_id IN ({users}) "
            f"OR operator_user_id IN ({ops}) ORDER BY id",
            {**user_values, **op_values},
        )
    async with core_db.connect() as conn:
        state["payments"] = [
            dict(row)
            for row in await conn.fetchall(
                "SELECT checking_id, wallet_id, amount, status FROM apipayments "
                f"WHERE wallet_id IN ({wallets}) ORDER BY checking_id",
                wallet_values,
            )
        ]
    return state
