"""Authorization matrix: every endpoint x every kind of caller -> the exact status.

The table below is docs/api.md's "Errors" and "Who is calling" rules written out, one row
per endpoint (some endpoints have a second row for a filter carrying another
operator's id). The routes are read from the running LNbits app: a route under
/satmachineadmin/api/v1 without a row here fails `test_every_route_has_a_row`, so a new
endpoint cannot ship without someone deciding who may call it.

Callers (A is the operator who owns every id the rows use):
- anonymous   no X-Api-Key                       -> 401 "No Api Key provided." (LNbits)
- bad_key     a key no wallet has                 -> 404 "Wallet not found."   (LNbits)
- invoice     A's invoice key                     -> reads as A; writes 403 "Invalid adminkey."
- other       operator B's admin key              -> 404 for A's ids, 403 for A's wallets,
                                                     lists 200 with nothing of A's
- lp          admin key of an LP enrolled at A's machine (not its operator): like `other`
- operator    A's admin key                       -> 2xx
- super       the LNbits super user's admin key   -> like `other` on operator routes;
                                                     the only one allowed on /super/...
/lp routes belong to the LP: the LP gets 2xx, everyone else sees only their own (GET /lp
of a user with no preferences: 404; PUT /lp naming the LP's wallet: 403).
Every refusal carries a non-empty `detail`; no body answered to anyone but A (or the
LP on /lp routes) carries any id of A's that the caller did not send.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pytest

API = "/satmachineadmin/api/v1"
CALLERS = ("anonymous", "bad_key", "invoice", "other", "lp", "operator", "super")
LNBITS_DETAIL = {
    "anonymous": "No Api Key provided.",
    "bad_key": "Wallet not found.",
}
INVALID_ADMIN_KEY = "Invalid adminkey."


def read(ok: int = 200, others: int = 404) -> dict[str, int]:
    """An operator read (admin or invoice key). `others`: what B, the LP and the super
    user get (404 for one of A's ids, 200 for a list of their own)."""
    return {
        "anonymous": 401,
        "bad_key": 404,
        "invoice": ok,
        "other": others,
        "lp": others,
        "operator": ok,
        "super": others,
    }


def write(ok: int = 200, others: int = 404) -> dict[str, int]:
    """An operator write (admin key only)."""
    return {**read(ok, others), "invoice": 403}


def super_only(ok: int = 200) -> dict[str, int]:
    return {
        "anonymous": 401,
        "bad_key": 404,
        "invoice": 403,
        "other": 403,
        "lp": 403,
        "operator": 403,
        "super": ok,
    }


def lp_own(
    ok: int = 200, others: int = 404, invoice: Optional[int] = None
) -> dict[str, int]:
    """/lp routes: the LP's own; everybody else gets their own (here: none)."""
    return {
        "anonymous": 401,
        "bad_key": 404,
        "invoice": others if invoice is None else invoice,
        "other": others,
        "lp": ok,
        "operator": others,
        "super": others,
    }


@dataclass
class Row:
    method: str
    path: str  # the route's template, e.g. /machines/{machine_id}
    expect: dict[str, int]
    ids: dict[str, str] = field(default_factory=dict)  # template var -> world key
    query: Callable[[dict], dict] = lambda w: {}
    body: Optional[Callable[[dict, str], Any]] = None  # (world, caller) -> json
    note: str = ""


def _settle_body(w: dict, caller: str) -> dict:
    return {"funding_wallet_id": w["funding_wallet"], "exchange_rate": "150"}


ROWS: list[Row] = [
    # ------------------------------------------------------------ machines
    Row(
        "POST",
        "/machines",
        write(201, others=403),
        body=lambda w, c: {
            "name": "ATM x",
            "wallet_id": w["fresh_wallet"],
            "fiat_currency": "GTQ",
        },
        note="the wallet must be the caller's (403)",
    ),
    Row("GET", "/machines", read(200, others=200)),
    Row("GET", "/machines/{machine_id}", read(), ids={"machine_id": "machine"}),
    Row(
        "PUT",
        "/machines/{machine_id}",
        write(),
        ids={"machine_id": "machine"},
        body=lambda w, c: {"name": "renamed"},
    ),
    Row(
        "PUT",
        "/machines/{machine_id}/auto-settlement",
        write(),
        ids={"machine_id": "machine"},
        body=lambda w, c: {"enabled": False},
    ),
    Row(
        "PUT",
        "/machines/{machine_id}/fixed-schedule",
        write(),
        ids={"machine_id": "machine"},
        body=lambda w, c: {"times": ["09:00", "18:00"], "timezone": "UTC"},
    ),
    Row(
        "POST",
        "/machines/{machine_id}/fixed-run",
        write(),
        ids={"machine_id": "machine"},
    ),
    # ------------------------------------------------------------ LP (the LP's own)
    Row(
        "PUT",
        "/lp",
        lp_own(200, others=403),
        body=lambda w, c: {"wallet_id": w["lp_wallet"], "dca_mode": "flow"},
        note="naming the LP's wallet: only the LP may",
    ),
    Row("GET", "/lp", lp_own(200, others=404)),
    Row("GET", "/lp/summary", lp_own(200, others=200)),
    Row("GET", "/lp/legs", lp_own(200, others=200)),
    Row("GET", "/lp/payments", lp_own(200, others=200), note="alias of /lp/legs"),
    # The LP's own deposits and statement: everybody else gets their own (none).
    Row("GET", "/lp/deposits", lp_own(200, others=200)),
    Row("GET", "/lp/statement", lp_own(200, others=200)),
    Row("GET", "/lp/statement.csv", lp_own(200, others=200)),
    # ------------------------------------------------------------ clients
    Row(
        "POST",
        "/clients",
        write(201),
        body=lambda w, c: {"machine_id": w["machine"], "user_id": w["fresh_user"]},
    ),
    Row("GET", "/clients", read(200, others=200)),
    Row(
        "GET",
        "/clients",
        read(),
        query=lambda w: {"machine_id": w["machine"]},
        note="filter on A's machine",
    ),
    Row("GET", "/clients/{client_id}", read(), ids={"client_id": "client"}),
    Row(
        "PUT",
        "/clients/{client_id}",
        write(),
        ids={"client_id": "client"},
        body=lambda w, c: {"username": "renamed-lp"},
    ),
    Row("GET", "/clients/{client_id}/balance", read(), ids={"client_id": "client"}),
    Row(
        "POST",
        "/clients/{client_id}/settle",
        write(201),
        ids={"client_id": "settle_client"},
        body=_settle_body,
    ),
    # ------------------------------------------------------------ deposits
    Row(
        "POST",
        "/deposits",
        write(201),
        body=lambda w, c: {"client_id": w["client"], "amount": "1.00"},
    ),
    Row(
        "POST",
        "/deposits/{deposit_id}/confirm",
        write(),
        ids={"deposit_id": "deposit_to_confirm"},
    ),
    Row(
        "POST",
        "/deposits/{deposit_id}/cancel",
        write(),
        ids={"deposit_id": "deposit_to_cancel"},
    ),
    Row("GET", "/deposits", read(200, others=200)),
    Row(
        "GET",
        "/deposits",
        read(),
        query=lambda w: {"client_id": w["client"]},
        note="filter on A's client",
    ),
    # ------------------------------------------------------------ commission rules
    Row(
        "PUT",
        "/commission/splits",
        write(),
        body=lambda w, c: {
            "machine_id": w["machine"],
            "legs": [{"target": w["split_wallet"], "percent": "100"}],
        },
    ),
    Row("GET", "/commission/splits", read(200, others=200)),
    Row(
        "GET",
        "/commission/splits",
        read(),
        query=lambda w: {"machine_id": w["machine"]},
    ),
    # ------------------------------------------------------------ settlements
    Row("GET", "/settlements", read(200, others=200)),
    Row("GET", "/settlements", read(), query=lambda w: {"machine_id": w["machine"]}),
    Row(
        "POST",
        "/settlements",
        write(201),
        body=lambda w, c: {
            "machine_id": w["machine"],
            "tx_type": "cash_out",
            "external_id": f"matrix-{c}",
            "fiat_amount": "1.00",
            "principal_sats": 150,
            "fee_sats": 0,
        },
    ),
    Row(
        "GET",
        "/settlements/{settlement_id}",
        read(),
        ids={"settlement_id": "settlement"},
    ),
    Row(
        "POST",
        "/settlements/{settlement_id}/retry",
        write(),
        ids={"settlement_id": "errored_settlement"},
    ),
    Row(
        "POST",
        "/settlements/{settlement_id}/approve",
        write(409),
        ids={"settlement_id": "pending_settlement"},
        note="only a held settlement can be approved: the owner gets 409 here",
    ),
    Row(
        "POST",
        "/settlements/{settlement_id}/reject",
        write(409),
        ids={"settlement_id": "pending_settlement"},
        body=lambda w, c: {"reason": f"checked by {c}"},
        note="only a held settlement can be rejected: the owner gets 409 here",
    ),
    Row(
        "POST",
        "/settlements/{settlement_id}/partial-dispense",
        write(),
        ids={"settlement_id": "pending_settlement"},
        body=lambda w, c: {"dispensed_fraction": "0.5"},
    ),
    Row(
        "POST",
        "/settlements/{settlement_id}/void",
        write(),
        ids={"settlement_id": "void_settlement"},
        body=lambda w, c: {"reason": f"written off by {c}"},
    ),
    Row(
        "POST",
        "/settlements/{settlement_id}/notes",
        write(201),
        ids={"settlement_id": "settlement"},
        body=lambda w, c: {"note": f"checked by {c}"},
    ),
    # ------------------------------------------------------------ legs (/payments: alias)
    Row("GET", "/legs", read(200, others=200)),
    Row("GET", "/legs.csv", read(200, others=200)),
    Row("GET", "/settlements.csv", read(200, others=200)),
    Row("GET", "/payments", read(200, others=200)),
    Row(
        "GET",
        "/payments",
        read(200, others=200),
        query=lambda w: {"settlement_id": w["settlement"], "machine_id": w["machine"]},
        note="a filter on another operator's ids only narrows the caller's own legs",
    ),
    Row("GET", "/payments.csv", read(200, others=200)),
    Row(
        "GET",
        "/payments.csv",
        read(200, others=200),
        query=lambda w: {"client_id": w["client"]},
    ),
    # ------------------------------------------------------------ health, audit trail
    Row("GET", "/health", read(200, others=200)),
    Row("GET", "/reports", read(200, others=200)),
    Row(
        "GET",
        "/reports",
        read(200, others=404),
        query=lambda w: {"machine_id": w["machine"], "period": "day"},
        note="another operator's machine is a 404",
    ),
    Row("GET", "/audit", read(200, others=200)),
    Row(
        "GET",
        "/audit",
        read(200, others=200),
        query=lambda w: {"entity_id": w["machine"]},
        note="a filter on another operator's id only narrows the caller's own trail",
    ),
    # ------------------------------------------------------------ alerts
    Row("GET", "/alerts", read(200, others=200)),
    Row("GET", "/alerts/settings", read(200, others=200)),
    Row(
        "PUT",
        "/alerts/settings",
        write(200, others=404),
        body=lambda w, c: {
            "kinds": {"float_short": True},
            "machines": {w["machine"]: {"payment_held": False}},
        },
        note="naming another operator's machine is a 404",
    ),
    Row("GET", "/lp/alerts", lp_own(200, others=200)),
    Row("GET", "/lp/alerts/settings", lp_own(200, others=200)),
    Row(
        "PUT",
        "/lp/alerts/settings",
        lp_own(200, others=200, invoice=403),
        body=lambda w, c: {"digest_period": "week"},
        note="everyone sets their own",
    ),
    # ------------------------------------------------------------ Lamassu (each caller's own)
    Row(
        "PUT",
        "/lamassu/config",
        write(200, others=200),
        body=lambda w, c: w["lamassu_body"][
            c if c in w["lamassu_body"] else "operator"
        ],
        note="configures the caller's own connection",
    ),
    Row("GET", "/lamassu/config", read(200, others=200)),
    Row("GET", "/lamassu/status", read(200, others=200)),
    Row("POST", "/lamassu/test", write(200, others=200)),
    Row("POST", "/lamassu/poll", write(200, others=200)),
    # ------------------------------------------------------------ super user
    Row("GET", "/super/config", super_only()),
    Row("PUT", "/super/config", super_only(), body=lambda w, c: w["super_config"]),
    Row("GET", "/super/overview", super_only()),
]


def routes_of(app: Any) -> set[tuple[str, str]]:
    prefix = f"{API}"
    found = set()
    for route in app.routes:
        path = getattr(route, "path", "")
        if not path.startswith(prefix + "/"):
            continue
        for method in getattr(route, "methods", None) or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            found.add((method, path[len(prefix) :]))
    return found


async def test_every_route_has_a_row(app):
    routes = routes_of(app)
    assert len(routes) >= 30, routes
    rows = {(row.method, row.path) for row in ROWS}
    missing = sorted(routes - rows)
    assert not missing, (
        f"endpoints without a row in the authorization matrix (tests/test_matrix.py, "
        f"docs/api.md 'Who is calling'): {missing}"
    )
    stale = sorted(rows - routes)
    assert not stale, f"rows for endpoints that no longer exist: {stale}"


# ---------------------------------------------------------------- the world


LAMASSU_CLOSED_PORT = 9  # discard: nothing listens on loopback here, refused at once


def _lamassu_body(database: str) -> dict:
    return {
        "host": "127.0.0.1",
        "port": LAMASSU_CLOSED_PORT,
        "database": database,
        "username": f"{database}_reader",
        "password": f"pw-{uuid.uuid4().hex}",
        "sslmode": "disable",
        "poll_interval_seconds": 60,
        "lookback_hours": 24,
    }


@pytest.fixture(scope="module")
async def world(http, factory, super_user) -> dict:
    operator = await factory.operator()
    other = await factory.operator()
    await factory.machine(other)  # B has data of its own too
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], 20_000)

    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="100.00")
    lp2 = await factory.lp()
    settle_client = await factory.enrol(operator, machine, lp2, deposit="10.00")
    funding = await factory.wallet(operator, "funding")
    await factory.fund(funding, 50_000)
    await factory.splits(
        operator,
        [{"target": operator.wallet.id, "percent": "100"}],
        machine_id=machine["id"],
    )

    async def pending_deposit() -> str:
        response = await http.post(
            f"{API}/deposits",
            headers=operator.admin,
            json={"client_id": client["id"], "amount": "5.00"},
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def manual(external_id: str, fiat: str, principal: int, fee: int) -> str:
        response = await http.post(
            f"{API}/settlements",
            headers=operator.admin,
            json={
                "machine_id": machine["id"],
                "tx_type": "cash_out",
                "external_id": external_id,
                "fiat_amount": fiat,
                "principal_sats": principal,
                "fee_sats": fee,
            },
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    settlement = await manual("matrix-paid", "10.00", 1_500, 100)
    errored = await manual("matrix-short", "20.00", 3_000_000, 0)  # more than the float
    # Its rate is far off the machine's: held until the operator approves it.
    approved = await http.post(
        f"{API}/settlements/{errored}/approve", headers=operator.admin
    )
    assert approved.status_code == 200, approved.text
    await factory.run_engine()
    shown = (
        await http.get(f"{API}/settlements/{settlement}", headers=operator.admin)
    ).json()
    assert shown["status"] == "processed", shown
    assert shown["legs"], shown
    errored_row = (
        await http.get(f"{API}/settlements/{errored}", headers=operator.admin)
    ).json()
    assert errored_row["status"] == "errored", errored_row
    pending = await manual("matrix-pending", "2.00", 300, 0)  # the engine has not run
    to_void = await manual("matrix-void", "1.00", 150, 0)

    schedule = await http.put(
        f"{API}/machines/{machine['id']}/fixed-schedule",
        headers=operator.admin,
        json={"times": ["09:00"], "timezone": "UTC"},
    )
    assert schedule.status_code == 200, schedule.text

    lamassu_body = {
        "operator": _lamassu_body("lamassu_of_a"),
        "other": _lamassu_body("lamassu_of_b"),
        "lp": _lamassu_body("lamassu_of_lp"),
        "super": _lamassu_body("lamassu_of_super"),
    }
    callers_user = {"operator": operator, "other": other, "lp": lp, "super": super_user}
    for name, user in callers_user.items():
        response = await http.put(
            f"{API}/lamassu/config", headers=user.admin, json=lamassu_body[name]
        )
        assert response.status_code == 200, response.text

    config = (await http.get(f"{API}/super/config", headers=super_user.admin)).json()

    legs = (await http.get(f"{API}/payments", headers=operator.admin)).json()
    deposits = (await http.get(f"{API}/deposits", headers=operator.admin)).json()
    fresh_user = await factory.user()
    world = {
        "machine": machine["id"],
        "client": client["id"],
        "settle_client": settle_client["id"],
        "settlement": settlement,
        "errored_settlement": errored,
        "pending_settlement": pending,
        "void_settlement": to_void,
        "deposit_to_confirm": await pending_deposit(),
        "deposit_to_cancel": await pending_deposit(),
        "fresh_wallet": (await factory.wallet(operator, "fresh")).id,
        "fresh_user": fresh_user.id,
        "funding_wallet": funding.id,
        "split_wallet": operator.wallet.id,
        "lp_wallet": lp.wallet.id,
        "lamassu_body": lamassu_body,
        "super_config": {
            "super_fee_fraction": config["super_fee_fraction"],
            "fee_wallet_id": config["fee_wallet_id"],
        },
        "headers": {
            "anonymous": {},
            "bad_key": {"X-Api-Key": uuid.uuid4().hex},
            "invoice": operator.invoice,
            "other": other.admin,
            "lp": lp.admin,
            "operator": operator.admin,
            "super": super_user.admin,
        },
    }
    # Everything of A's a stranger must never be shown.
    secrets = {
        machine["id"],
        machine["wallet"].id,
        client["id"],
        settle_client["id"],
        settlement,
        errored,
        pending,
        to_void,
        funding.id,
        "lamassu_of_a",
    }
    secrets |= {leg["id"] for leg in legs}
    secrets |= {d["id"] for d in deposits}
    secrets |= {world["deposit_to_confirm"], world["deposit_to_cancel"]}
    world["a_ids"] = secrets
    # The other LP's own rows at A's machine: never shown to the LP caller.
    world["other_lp_ids"] = {settle_client["id"]} | {
        d["id"] for d in deposits if d["client_id"] == settle_client["id"]
    }
    return world


def _fill(row: Row, world: dict) -> str:
    path = row.path
    for var, key in row.ids.items():
        path = path.replace("{" + var + "}", world[key])
    return f"{API}{path}"


def _detail(response: Any) -> str:
    body = response.json()
    assert isinstance(body, dict), body
    detail = body.get("detail")
    assert isinstance(detail, str) and detail.strip(), body
    return detail


@pytest.mark.parametrize("caller", CALLERS)
async def test_matrix(http, world, caller):
    checked = 0
    failures = []
    # The owner's successful writes change state: everybody else goes first.
    for row in ROWS:
        url = _fill(row, world)
        params = row.query(world)
        body = row.body(world, caller) if row.body else None
        response = await http.request(
            row.method,
            url,
            headers=world["headers"][caller],
            params=params,
            json=body,
        )
        checked += 1
        want = row.expect[caller]
        where = f"{caller} {row.method} {row.path} {params or ''}"
        if response.status_code != want:
            failures.append(
                f"{where}: {response.status_code} (want {want}) {response.text[:200]}"
            )
            continue
        if want >= 400:
            detail = _detail(response)
            if caller in LNBITS_DETAIL:
                assert detail == LNBITS_DETAIL[caller], (where, detail)
            elif caller == "invoice" and want == 403:
                assert detail == INVALID_ADMIN_KEY, (where, detail)
        # The platform's overview shows every operator's machines to the super user.
        owner = (
            caller in ("operator", "invoice")
            or (caller == "lp" and row.path.startswith("/lp"))
            or (caller == "super" and row.path.startswith("/super"))
        )
        if caller == "lp" and row.path.startswith("/lp"):
            theirs = [i for i in world["other_lp_ids"] if i in response.text]
            if theirs:
                failures.append(f"{where}: shows another LP's {theirs}")
        if not owner:
            sent = url + repr(params) + repr(body)
            shown = [i for i in world["a_ids"] if i in response.text and i not in sent]
            if shown:
                failures.append(f"{where}: shows A's {shown}: {response.text[:300]}")
    assert not failures, "\n".join(failures)
    print(f"\nmatrix: {checked} requests as {caller}")


async def test_owner_state_after_the_matrix(http, world):
    """The owner's writes in the matrix really happened (and strangers' did not)."""
    headers = world["headers"]["operator"]
    machine = (
        await http.get(f"{API}/machines/{world['machine']}", headers=headers)
    ).json()
    assert machine["name"] == "renamed"
    confirmed = await http.get(
        f"{API}/deposits", headers=headers, params={"client_id": world["client"]}
    )
    statuses = {d["id"]: d["status"] for d in confirmed.json()}
    assert statuses[world["deposit_to_confirm"]] == "confirmed"
    assert statuses[world["deposit_to_cancel"]] == "cancelled"
    manual = await http.get(
        f"{API}/settlements",
        headers=headers,
        params={"machine_id": world["machine"], "limit": 500},
    )
    refs = {s["external_id"] for s in manual.json()}
    # Only A's own POST /settlements landed; B's, the LP's and the super user's did not.
    assert "matrix-operator" in refs
    assert not refs & {"matrix-other", "matrix-lp", "matrix-super", "matrix-invoice"}
    voided = await http.get(
        f"{API}/settlements/{world['void_settlement']}", headers=headers
    )
    assert voided.json()["status"] == "voided"
    assert voided.json()["error"] == "voided by the operator: written off by operator"
