"""Who may read and write what (docs/api.md "Who is calling" and "Errors").

Two operators, A and B, each with a machine, an enrolled LP, a confirmed and a pending
deposit and commission rules. B (and LPs, strangers, made-up keys) is pointed at every
endpoint with A's ids. Every refusal must carry LNbits' or docs/api.md's exact status and
leave everything as it was: after each refused write every database row of both
operators, their LPs' preferences, the platform config, the audit trail and the LNbits
payments of every wallet involved are read again and compared (db_state.py).
"""

import uuid
from typing import Any

import pytest
from db_state import database_state

API = "/satmachineadmin/api/v1"
NOT_ENABLED = "Extension 'satmachineadmin' not enabled."


# ---------------------------------------------------------------- helpers


def detail_of(response: Any) -> str:
    body = response.json()
    assert isinstance(body, dict), body
    detail = body.get("detail")
    assert isinstance(detail, str) and detail.strip(), body
    return detail


def refused(response: Any, status: int, detail: str | None = None) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    text = detail_of(response)
    if detail is not None:
        assert text == detail, text
    return text


async def audit_count(actor_user_id: str) -> int:
    from satmachineadmin import db

    row = await db.fetchone(
        "SELECT COUNT(*) AS n FROM satmachineadmin.audit_log WHERE actor_user_id = :u",
        {"u": actor_user_id},
    )
    return int(row["n"])


async def operator_state(http: Any, operator: Any) -> dict:
    """Everything an operator can see, read with their own admin key."""
    headers = operator.admin

    async def get(path: str) -> Any:
        response = await http.get(f"{API}{path}", headers=headers)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    state: dict = {
        "machines": await get("/machines"),
        "clients": await get("/clients"),
        "deposits": await get("/deposits"),
        "splits": await get("/commission/splits"),
        "audit": await audit_count(operator.id),
    }
    # The lists carry whole rows; balances and per-machine rules are read one by one.
    for machine in state["machines"]:
        state[f"splits {machine['id']}"] = await get(
            f"/commission/splits?machine_id={machine['id']}"
        )
    for client in state["clients"]:
        state[f"balance {client['id']}"] = await get(f"/clients/{client['id']}/balance")
    return state


async def lp_state(http: Any, lp: Any) -> Any:
    response = await http.get(f"{API}/lp", headers=lp.invoice)
    return response.status_code, response.json()


async def super_state(http: Any, super_user: Any) -> Any:
    response = await http.get(f"{API}/super/config", headers=super_user.admin)
    assert response.status_code == 200, response.text
    return response.json()


class World:
    """Two operators with data, their LPs, and one snapshot of all of it."""

    def __init__(self, http: Any, super_user: Any):
        self.http = http
        self.super_user = super_user

    async def snapshot(self) -> dict:
        """Every database row of both operators and their people (database_state)."""
        people = (
            self.lp_a,
            self.lp_b,
            self.super_user,
            self.stranger,
            self.newcomer,
        )
        return await database_state(
            [self.a.id, self.b.id],
            [user.id for user in people],
            [w.id for user in (self.a, self.b, *people) for w in user.wallets],
        )


@pytest.fixture(scope="module")
async def world(http: Any, factory: Any, super_user: Any) -> World:
    w = World(http, super_user)
    for side in ("a", "b"):
        operator = await factory.operator()
        machine = await factory.machine(operator)
        lp = await factory.lp()
        client = await factory.enrol(operator, machine, lp, deposit="100.00")
        response = await http.post(
            f"{API}/deposits",
            headers=operator.admin,
            json={"client_id": client["id"], "amount": "50.00", "notes": "pending"},
        )
        assert response.status_code == 201, response.text
        pending = response.json()
        listed = await http.get(
            f"{API}/deposits?client_id={client['id']}", headers=operator.admin
        )
        confirmed = next(d for d in listed.json() if d["status"] == "confirmed")
        for machine_id, legs in (
            (None, [{"target": "lps", "percent": "100"}]),
            (
                machine["id"],
                [
                    {"target": operator.wallets[0].id, "percent": "60", "label": "ops"},
                    {"target": "lps", "percent": "40"},
                ],
            ),
        ):
            response = await http.put(
                f"{API}/commission/splits",
                headers=operator.admin,
                json={"machine_id": machine_id, "legs": legs},
            )
            assert response.status_code == 200, response.text
        setattr(w, side, operator)
        setattr(w, f"machine_{side}", machine)
        setattr(w, f"lp_{side}", lp)
        setattr(w, f"client_{side}", client)
        setattr(w, f"pending_{side}", pending)
        setattr(w, f"confirmed_{side}", confirmed)
    # A user who uses LNbits but has nothing to do with either operator.
    w.stranger = await factory.user()
    w.newcomer = await factory.user()
    return w


# Every endpoint of the API as it exists now, pointed at operator A's rows. Strings
# in braces are filled in from the world: {machine} is A's machine id, and so on.
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/machines", None),
    (
        "POST",
        "/machines",
        {"name": "x", "wallet_id": "{spare}", "fiat_currency": "GTQ"},
    ),
    ("GET", "/machines/{machine}", None),
    ("PUT", "/machines/{machine}", {"name": "renamed"}),
    ("PUT", "/lp", {"wallet_id": "{lp_wallet}", "dca_mode": "flow"}),
    ("GET", "/lp", None),
    ("POST", "/clients", {"machine_id": "{machine}", "user_id": "{newcomer}"}),
    ("GET", "/clients", None),
    ("GET", "/clients?machine_id={machine}", None),
    ("GET", "/clients/{client}", None),
    ("PUT", "/clients/{client}", {"status": "inactive"}),
    ("GET", "/clients/{client}/balance", None),
    ("POST", "/deposits", {"client_id": "{client}", "amount": "10.00"}),
    ("POST", "/deposits/{pending}/confirm", None),
    ("POST", "/deposits/{pending}/cancel", None),
    ("POST", "/deposits/{confirmed}/cancel", None),
    ("GET", "/deposits", None),
    ("GET", "/deposits?client_id={client}", None),
    ("GET", "/super/config", None),
    ("PUT", "/super/config", {"super_fee_fraction": "0.5", "fee_wallet_id": None}),
    ("GET", "/commission/splits", None),
    ("GET", "/commission/splits?machine_id={machine}", None),
    (
        "PUT",
        "/commission/splits",
        {"machine_id": "{machine}", "legs": [{"target": "lps", "percent": "100"}]},
    ),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in ENDPOINTS]


def resolve(w: World, value: Any, extra: dict | None = None) -> Any:
    names = {
        **(extra or {}),
        "machine": w.machine_a["id"],
        "client": w.client_a["id"],
        "pending": w.pending_a["id"],
        "confirmed": w.confirmed_a["id"],
        "spare": w.a.wallets[1].id,
        "lp_wallet": w.lp_a.wallet.id,
        "newcomer": w.newcomer.id,
    }
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [resolve(w, item, extra) for item in value]
    if isinstance(value, dict):
        return {key: resolve(w, item, extra) for key, item in value.items()}
    return value


def endpoint(w: World, index: int) -> tuple[str, str, Any]:
    method, path, body = ENDPOINTS[index]
    return method, resolve(w, path), resolve(w, body)


WRITES = {"POST", "PUT"}


async def call(http: Any, method: str, path: str, body: Any, headers: Any) -> Any:
    return await http.request(
        method, f"{API}{path}", headers=headers, json=body if body is not None else None
    )


# ---------------------------------------------------------------- who is calling


@pytest.mark.parametrize("index", range(len(ENDPOINTS)), ids=ENDPOINT_IDS)
async def test_callers_without_a_usable_key_are_refused(http, factory, world, index):
    """No key: 401. A made-up key: what LNbits' key checker says (404 "Wallet not
    found."). A user who has not enabled the extension: LNbits' 403. Nothing changes."""
    method, path, body = endpoint(world, index)
    outsider = await factory.user(enable=False)
    before = await world.snapshot()

    for headers in (None, {"X-Api-Key": ""}):
        response = await call(http, method, path, body, headers)
        refused(response, 401, "No Api Key provided.")

    for key in (uuid.uuid4().hex, "not a key at all", world.a.wallet.id):
        response = await call(http, method, path, body, {"X-Api-Key": key})
        refused(response, 404, "Wallet not found.")
    # The key may also come as LNbits' ?api-key= query parameter.
    joiner = "&" if "?" in path else "?"
    response = await call(
        http, method, f"{path}{joiner}api-key={uuid.uuid4().hex}", body, None
    )
    refused(response, 404, "Wallet not found.")

    for headers in (outsider.admin, outsider.invoice):
        response = await call(http, method, path, body, headers)
        refused(response, 403, NOT_ENABLED)

    assert await world.snapshot() == before
    # Nothing was written for the outsider either.
    assert await audit_count(outsider.id) == 0
    from satmachineadmin import crud

    assert await crud.get_lp_preferences(outsider.id) is None
    assert await crud.list_machines(outsider.id) == []


@pytest.mark.parametrize("index", range(len(ENDPOINTS)), ids=ENDPOINT_IDS)
async def test_invoice_key_reads_but_never_writes(http, world, index):
    method, path, body = endpoint(world, index)
    caller = world.super_user if "/super/" in path else world.a
    if path == "/lp":
        caller = world.lp_a
    before = await world.snapshot()
    response = await call(http, method, path, body, caller.invoice)
    if method in WRITES:
        refused(response, 403, "Invalid adminkey.")
        assert await world.snapshot() == before
    elif "/super/" in path:
        # Super user endpoints take the admin key of a super user wallet only.
        refused(response, 403, "Invalid adminkey.")
    else:
        assert response.status_code == 200, response.text
        # ...and it reads exactly what the admin key reads.
        admin = await call(http, method, path, body, caller.admin)
        assert admin.status_code == 200
        assert response.json() == admin.json()


# ---------------------------------------------------------------- operator vs operator


# B acting on A's rows; the last item names the id that must not be found.
FOREIGN: dict[str, tuple[str, str, Any, str]] = {
    "get-machine": ("GET", "/machines/{machine}", None, "machine"),
    "rename-machine": ("PUT", "/machines/{machine}", {"name": "hijacked"}, "machine"),
    "rewallet-machine": (
        "PUT",
        "/machines/{machine}",
        {"wallet_id": "{b_spare}"},
        "machine",
    ),
    "deactivate-machine": (
        "PUT",
        "/machines/{machine}",
        {"status": "inactive"},
        "machine",
    ),
    "list-clients-of-machine": (
        "GET",
        "/clients?machine_id={machine}",
        None,
        "machine",
    ),
    "enrol-newcomer": (
        "POST",
        "/clients",
        {"machine_id": "{machine}", "user_id": "{newcomer}"},
        "machine",
    ),
    "enrol-own-lp": (
        "POST",
        "/clients",
        {"machine_id": "{machine}", "user_id": "{b_lp}"},
        "machine",
    ),
    "get-client": ("GET", "/clients/{client}", None, "client"),
    "deactivate-client": ("PUT", "/clients/{client}", {"status": "inactive"}, "client"),
    "rename-client": ("PUT", "/clients/{client}", {"username": "mine now"}, "client"),
    "client-balance": ("GET", "/clients/{client}/balance", None, "client"),
    "list-deposits-of-client": ("GET", "/deposits?client_id={client}", None, "client"),
    "deposit-for-client": (
        "POST",
        "/deposits",
        {"client_id": "{client}", "amount": "10.00"},
        "client",
    ),
    "confirm-pending": ("POST", "/deposits/{pending}/confirm", None, "pending"),
    "cancel-pending": ("POST", "/deposits/{pending}/cancel", None, "pending"),
    # A confirmed deposit: 404, not the 409 A would get (that would leak it exists).
    "cancel-confirmed": ("POST", "/deposits/{confirmed}/cancel", None, "confirmed"),
    "confirm-confirmed": ("POST", "/deposits/{confirmed}/confirm", None, "confirmed"),
    "get-machine-splits": (
        "GET",
        "/commission/splits?machine_id={machine}",
        None,
        "machine",
    ),
    "set-machine-splits": (
        "PUT",
        "/commission/splits",
        {
            "machine_id": "{machine}",
            "legs": [{"target": "{b_wallet}", "percent": "100"}],
        },
        "machine",
    ),
}
FOREIGN_CASES = [
    (name, key)
    for name, (method, *_rest) in FOREIGN.items()
    for key in (("admin",) if method in WRITES else ("admin", "invoice"))
]


@pytest.mark.parametrize(
    "name,key", FOREIGN_CASES, ids=[f"{n}-{k}" for n, k in FOREIGN_CASES]
)
async def test_other_operator_gets_404_for_every_id(http, world, name, key):
    method, path, body, id_name = FOREIGN[name]
    extra = {
        "b_spare": world.b.wallets[1].id,
        "b_lp": world.lp_b.id,
        "b_wallet": world.b.wallet.id,
    }
    target_id = resolve(world, "{" + id_name + "}")
    path, body = resolve(world, path, extra), resolve(world, body, extra)
    headers = getattr(world.b, key)
    before = await world.snapshot()
    response = await call(http, method, path, body, headers)
    detail = refused(response, 404)
    assert await world.snapshot() == before
    # The answer is the one an id that never existed gets: nothing leaks.
    unknown = uuid.uuid4().hex
    twin = await call(
        http,
        method,
        path.replace(target_id, unknown),
        body and {k: (unknown if v == target_id else v) for k, v in body.items()},
        headers,
    )
    refused(twin, 404, detail.replace(target_id, unknown))
    assert await world.snapshot() == before


async def test_lists_never_show_another_operators_rows(http, world):
    a_ids = {
        world.machine_a["id"],
        world.client_a["id"],
        world.pending_a["id"],
        world.confirmed_a["id"],
        world.a.id,
    }
    for key in ("admin", "invoice"):
        headers = getattr(world.b, key)
        for path in ("/machines", "/clients", "/deposits", "/commission/splits"):
            response = await http.get(f"{API}{path}", headers=headers)
            assert response.status_code == 200, response.text
            text = response.text
            assert not any(a_id in text for a_id in a_ids), (path, text)
        machines = (await http.get(f"{API}/machines", headers=headers)).json()
        assert [m["id"] for m in machines] == [world.machine_b["id"]]
        clients = (await http.get(f"{API}/clients", headers=headers)).json()
        assert [c["id"] for c in clients] == [world.client_b["id"]]
        deposits = (await http.get(f"{API}/deposits", headers=headers)).json()
        assert {d["id"] for d in deposits} == {
            world.pending_b["id"],
            world.confirmed_b["id"],
        }
        splits = (await http.get(f"{API}/commission/splits", headers=headers)).json()
        assert [leg["target"] for leg in splits["legs"]] == ["lps"]


async def test_same_lp_at_two_operators_is_seen_by_each_only_as_their_client(
    http, factory, world
):
    # B enrols A's LP: allowed (an LP can hold cash at several operators)...
    response = await http.post(
        f"{API}/clients",
        headers=world.b.admin,
        json={"machine_id": world.machine_b["id"], "user_id": world.lp_a.id},
    )
    assert response.status_code == 201, response.text
    b_client = response.json()
    try:
        # ...but A sees only their own enrolment, and B only theirs.
        a_clients = (await http.get(f"{API}/clients", headers=world.a.admin)).json()
        assert b_client["id"] not in [c["id"] for c in a_clients]
        refused(
            await http.get(f"{API}/clients/{b_client['id']}", headers=world.a.admin),
            404,
        )
        b_balance = (
            await http.get(
                f"{API}/clients/{b_client['id']}/balance", headers=world.b.admin
            )
        ).json()
        assert b_balance["total_deposits"] == "0.00"  # A's 100.00 is not B's
    finally:
        response = await http.put(
            f"{API}/clients/{b_client['id']}",
            headers=world.b.admin,
            json={"status": "inactive"},
        )
        assert response.status_code == 200


async def test_machine_on_another_operators_wallet_is_403(http, factory):
    a = await factory.operator()
    b = await factory.operator()
    a_machine = await factory.machine(a)
    b_machine = await factory.machine(b)
    a_before = await operator_state(http, a)
    b_before = await operator_state(http, b)
    for wallet_id in (a.wallets[1].id, a_machine["wallet_id"], a.wallets[0].id):
        response = await http.post(
            f"{API}/machines",
            headers=b.admin,
            json={"name": "stolen", "wallet_id": wallet_id, "fiat_currency": "GTQ"},
        )
        # 403 even for a wallet that is already a machine: a 409 would leak that.
        refused(response, 403)
        response = await http.put(
            f"{API}/machines/{b_machine['id']}",
            headers=b.admin,
            json={"wallet_id": wallet_id},
        )
        refused(response, 403)
    # LP preferences and the platform fee wallet follow the same rule.
    response = await http.put(
        f"{API}/lp", headers=b.admin, json={"wallet_id": a.wallets[1].id}
    )
    refused(response, 403)
    assert await operator_state(http, a) == a_before
    assert await operator_state(http, b) == b_before
    # Nothing was reserved: A can still make a machine on the wallet B tried.
    response = await http.post(
        f"{API}/machines",
        headers=a.admin,
        json={"name": "mine", "wallet_id": a.wallets[1].id, "fiat_currency": "GTQ"},
    )
    assert response.status_code == 201, response.text


async def test_a_wallet_belongs_to_one_machine(http, factory):
    operator = await factory.operator()
    first = await factory.machine(operator)
    second = await factory.machine(operator)
    before = await operator_state(http, operator)
    response = await http.post(
        f"{API}/machines",
        headers=operator.admin,
        json={"name": "again", "wallet_id": first["wallet_id"], "fiat_currency": "USD"},
    )
    refused(response, 409)
    response = await http.put(
        f"{API}/machines/{second['id']}",
        headers=operator.admin,
        json={"wallet_id": first["wallet_id"], "name": "moved"},
    )
    refused(response, 409)
    assert await operator_state(http, operator) == before
    # Keeping one's own wallet is not a conflict, and a free wallet may be moved to.
    response = await http.put(
        f"{API}/machines/{second['id']}",
        headers=operator.admin,
        json={"wallet_id": second["wallet_id"]},
    )
    assert response.status_code == 200, response.text
    response = await http.put(
        f"{API}/machines/{second['id']}",
        headers=operator.admin,
        json={"wallet_id": operator.wallets[0].id},
    )
    assert response.status_code == 200, response.text
    # ...and the wallet it left is free again.
    response = await http.post(
        f"{API}/machines",
        headers=operator.admin,
        json={
            "name": "third",
            "wallet_id": second["wallet_id"],
            "fiat_currency": "GTQ",
        },
    )
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- LPs


async def test_lp_on_operator_endpoints_sees_nothing_of_the_operator(http, world):
    lp = world.lp_a
    before = await world.snapshot()
    for key in ("admin", "invoice"):
        headers = getattr(lp, key)
        for path in ("/machines", "/clients", "/deposits"):
            response = await http.get(f"{API}{path}", headers=headers)
            assert response.status_code == 200, response.text
            assert response.json() == []
        splits = (await http.get(f"{API}/commission/splits", headers=headers)).json()
        assert splits["legs"] == []
        for path in (
            f"/machines/{world.machine_a['id']}",
            f"/clients/{world.client_a['id']}",  # their own enrolment: still A's row
            f"/clients/{world.client_a['id']}/balance",
            f"/clients?machine_id={world.machine_a['id']}",
            f"/deposits?client_id={world.client_a['id']}",
            f"/commission/splits?machine_id={world.machine_a['id']}",
        ):
            refused(await http.get(f"{API}{path}", headers=headers), 404)
    # Writes with the LP's admin key: 404 (nothing of A is visible to them).
    for method, path, body in (
        ("PUT", f"/machines/{world.machine_a['id']}", {"name": "lp was here"}),
        ("PUT", f"/clients/{world.client_a['id']}", {"username": "me"}),
        ("POST", "/deposits", {"client_id": world.client_a["id"], "amount": "1000.00"}),
        ("POST", f"/deposits/{world.pending_a['id']}/confirm", None),
        ("POST", f"/deposits/{world.pending_a['id']}/cancel", None),
        ("POST", "/clients", {"machine_id": world.machine_a["id"], "user_id": lp.id}),
        (
            "PUT",
            "/commission/splits",
            {
                "machine_id": world.machine_a["id"],
                "legs": [{"target": lp.wallet.id, "percent": "100"}],
            },
        ),
    ):
        refused(await call(http, method, path, body, lp.admin), 404)
    # The LP cannot make a machine out of the operator's wallet either.
    response = await http.post(
        f"{API}/machines",
        headers=lp.admin,
        json={
            "name": "x",
            "wallet_id": world.machine_a["wallet_id"],
            "fiat_currency": "GTQ",
        },
    )
    refused(response, 403)
    assert await world.snapshot() == before


async def test_lp_preferences_wallet_must_be_the_lps_own(http, factory, world):
    lp = world.lp_a
    before = await world.snapshot()
    for wallet_id in (
        world.lp_b.wallet.id,
        world.a.wallet.id,
        world.machine_a["wallet_id"],
        world.super_user.wallet.id,
        uuid.uuid4().hex,
    ):
        for body in (
            {"wallet_id": wallet_id},
            {
                "wallet_id": wallet_id,
                "dca_mode": "fixed",
                "fixed_mode_daily_limit": "10",
            },
        ):
            refused(await http.put(f"{API}/lp", headers=lp.admin, json=body), 403)
    # An invoice key cannot set preferences even with the LP's own wallet.
    refused(
        await http.put(
            f"{API}/lp", headers=lp.invoice, json={"wallet_id": lp.wallet.id}
        ),
        403,
        "Invalid adminkey.",
    )
    assert await world.snapshot() == before


async def test_lp_preferences_of_a_user_with_none(http, factory, world):
    newbie = await factory.user(wallets=2)
    for headers in (newbie.admin, newbie.invoice):
        refused(await http.get(f"{API}/lp", headers=headers), 404)
    refused(
        await http.put(
            f"{API}/lp", headers=newbie.admin, json={"wallet_id": world.lp_a.wallet.id}
        ),
        403,
    )
    refused(await http.get(f"{API}/lp", headers=newbie.admin), 404)
    assert await audit_count(newbie.id) == 0
    # Any of the user's own wallets will do, whichever key authenticates.
    response = await http.put(
        f"{API}/lp", headers=newbie.admin, json={"wallet_id": newbie.wallets[1].id}
    )
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == newbie.id
    got = await http.get(f"{API}/lp", headers=newbie.wallets[1].invoice)
    assert got.status_code == 200
    assert got.json()["wallet_id"] == newbie.wallets[1].id
    # Each user sees their own preferences only.
    other = await http.get(f"{API}/lp", headers=world.lp_a.invoice)
    assert other.json()["user_id"] == world.lp_a.id


# ---------------------------------------------------------------- super user


async def test_super_config_only_for_the_super_user(http, factory, world):
    super_user = world.super_user
    original = await super_state(http, super_user)
    before = await world.snapshot()
    for caller in (world.a, world.lp_a, world.stranger):
        refused(await http.get(f"{API}/super/config", headers=caller.admin), 403)
        response = await http.put(
            f"{API}/super/config",
            headers=caller.admin,
            json={"super_fee_fraction": "0.9", "fee_wallet_id": caller.wallet.id},
        )
        refused(response, 403)
    # The super user's invoice key is not enough.
    refused(
        await http.put(
            f"{API}/super/config",
            headers=super_user.invoice,
            json={"super_fee_fraction": "0.9"},
        ),
        403,
        "Invalid adminkey.",
    )
    # The fee wallet must be the super user's own.
    refused(
        await http.put(
            f"{API}/super/config",
            headers=super_user.admin,
            json={"super_fee_fraction": "0.9", "fee_wallet_id": world.a.wallet.id},
        ),
        403,
    )
    assert await world.snapshot() == before

    try:
        response = await http.put(
            f"{API}/super/config",
            headers=super_user.admin,
            json={"super_fee_fraction": "0.25", "fee_wallet_id": super_user.wallet.id},
        )
        assert response.status_code == 200, response.text
        assert response.json()["super_fee_fraction"] == "0.25"
        assert response.json()["fee_wallet_id"] == super_user.wallet.id
        got = await super_state(http, super_user)
        assert got["super_fee_fraction"] == "0.25"
        assert got["fee_wallet_id"] == super_user.wallet.id
        # Operators still cannot read it.
        refused(await http.get(f"{API}/super/config", headers=world.b.admin), 403)
    finally:
        response = await http.put(
            f"{API}/super/config",
            headers=super_user.admin,
            json={
                "super_fee_fraction": original["super_fee_fraction"],
                "fee_wallet_id": original["fee_wallet_id"],
            },
        )
        assert response.status_code == 200, response.text
