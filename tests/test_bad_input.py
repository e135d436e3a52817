"""Bad input on every endpoint (docs/api.md, "Errors").

Each case is a request that must be refused: a 4xx (never a 500) with the status docs/api.md
gives it, a `detail` that is a non-empty sentence naming what is wrong, and no change at
all: after every case every database row of the operator (machines, clients and their
running totals, deposits, settlements, legs, commission rules, Lamassu config), the
LPs' preferences, the platform config, the audit trail and the LNbits payments of every
wallet involved are read again and compared with what they were before.
"""

import uuid
from typing import Any

import pytest
from db_state import database_state

API = "/satmachineadmin/api/v1"
MISSING = object()  # in a case: remove this field from the valid body


# ---------------------------------------------------------------- the world


class World:
    """One operator with a GTQ and a JPY machine, LPs with and without preferences,
    deposits in every status and commission rules; and what all of it looked like."""

    baseline: dict

    async def snapshot(self) -> dict:
        people = (self.lp, self.no_prefs, self.newcomer, self.super_user)
        return await database_state(
            [self.operator.id],
            [user.id for user in people],
            [w.id for user in (self.operator, *people) for w in user.wallets],
        )

    def names(self) -> dict:
        return {
            "spare": self.operator.wallets[1].id,
            "op_wallet": self.operator.wallets[0].id,
            "lp_wallet": self.lp.wallet.id,
            "G": self.gtq["id"],
            "G_wallet": self.gtq["wallet_id"],
            "J_wallet": self.jpy["wallet_id"],
            "J": self.jpy["id"],
            "cG": self.client_gtq["id"],
            "cJ": self.client_jpy["id"],
            "cN": self.client_no_prefs["id"],
            "lp": self.lp.id,
            "newcomer": self.newcomer.id,
            "pending": self.pending["id"],
            "confirmed": self.confirmed["id"],
            "cancelled": self.cancelled["id"],
            "unknown": uuid.uuid4().hex,
        }

    def fill(self, value: Any) -> Any:
        if isinstance(value, str) and "{" in value:
            return value.format(**self.names())
        if isinstance(value, list):
            return [self.fill(item) for item in value]
        if isinstance(value, dict):
            return {key: self.fill(item) for key, item in value.items()}
        return value


async def build_world(http: Any, factory: Any, super_user: Any) -> World:
    w = World()
    w.http, w.super_user = http, super_user
    w.operator = await factory.user(wallets=3)
    w.gtq = await factory.machine(w.operator, "GTQ", w.operator.wallets[2])
    w.jpy = await factory.machine(w.operator, "JPY")
    w.lp = await factory.lp()
    w.no_prefs = await factory.user()
    w.newcomer = await factory.user()
    w.client_gtq = await factory.enrol(w.operator, w.gtq, w.lp, deposit="100.00")
    w.client_jpy = await factory.enrol(w.operator, w.jpy, w.lp, deposit="1500")
    w.client_no_prefs = await factory.enrol(w.operator, w.gtq, w.no_prefs)

    async def post(path: str, body: Any = None) -> dict:
        response = await http.post(f"{API}{path}", headers=w.operator.admin, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    cid = w.client_gtq["id"]
    w.pending = await post("/deposits", {"client_id": cid, "amount": "5.00"})
    w.cancelled = await post("/deposits", {"client_id": cid, "amount": "6.00"})
    await post(f"/deposits/{w.cancelled['id']}/cancel")
    deposits = (
        await http.get(f"{API}/deposits?client_id={cid}", headers=w.operator.admin)
    ).json()
    w.confirmed = next(d for d in deposits if d["status"] == "confirmed")
    for machine_id, legs in (
        (None, [{"target": "lps", "percent": "100"}]),
        (
            w.gtq["id"],
            [
                {"target": w.operator.wallets[0].id, "percent": "70", "label": "ops"},
                {"target": "lps", "percent": "30"},
            ],
        ),
    ):
        response = await http.put(
            f"{API}/commission/splits",
            headers=w.operator.admin,
            json={"machine_id": machine_id, "legs": legs},
        )
        assert response.status_code == 200, response.text
    w.baseline = await w.snapshot()
    return w


@pytest.fixture(scope="module")
async def world(http: Any, factory: Any, super_user: Any) -> World:
    return await build_world(http, factory, super_user)


def build(base: dict, changes: Any) -> Any:
    """The valid `base` body with `changes` applied (MISSING removes a field); a
    `changes` that is not a dict replaces the whole body."""
    if not isinstance(changes, dict):
        return changes
    body = dict(base)
    for key, value in changes.items():
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


async def assert_refused(
    world: World, response: Any, status: int, needle: str | None
) -> None:
    if response.status_code != status:
        # Whatever went through, the cases after this one compare with it.
        world.baseline = await world.snapshot()
    assert response.status_code == status, (response.status_code, response.text)
    assert 400 <= response.status_code < 500
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail, str) and detail.strip(), body
    if needle is not None:
        assert needle.lower() in detail.lower(), detail
    after = await world.snapshot()
    if after != world.baseline:
        # Fail this case only: the next ones compare with what is there now.
        before, world.baseline = world.baseline, after
        assert after == before


def cases(table: list[tuple]) -> Any:
    return pytest.mark.parametrize(
        "changes,status,needle",
        [case[1:] for case in table],
        ids=[case[0] for case in table],
    )


# Values of the wrong JSON type, for any field that takes a string.
NOT_A_STRING = [
    ("number", 5),
    ("float", 1.5),
    ("true", True),
    ("false", False),
    ("list", ["a"]),
    ("object", {"a": "b"}),
]


def wrong_types(field: str, needle: str | None = None) -> list[tuple]:
    return [
        (f"{field}-{name}", {field: value}, 400, needle or field)
        for name, value in NOT_A_STRING
    ]


# ---------------------------------------------------------------- machines

MACHINE_BASE = {"name": "New ATM", "wallet_id": "{spare}", "fiat_currency": "GTQ"}
MACHINE_CREATE = [
    ("name-missing", {"name": MISSING}, 400, "name: is required"),
    ("wallet-missing", {"wallet_id": MISSING}, 400, "wallet_id: is required"),
    ("currency-missing", {"fiat_currency": MISSING}, 400, "fiat_currency: is required"),
    (
        "empty-object",
        {"name": MISSING, "wallet_id": MISSING, "fiat_currency": MISSING},
        400,
        "name",
    ),
    ("name-empty", {"name": ""}, 400, "name"),
    ("name-blank", {"name": "   "}, 400, "name"),
    ("name-null", {"name": None}, 400, "name"),
    ("name-too-long", {"name": "x" * 101}, 400, "name"),
    ("name-nul", {"name": "a\x00b"}, 400, "name"),
    *wrong_types("name"),
    ("wallet-empty", {"wallet_id": ""}, 400, "wallet_id"),
    ("wallet-null", {"wallet_id": None}, 400, "wallet_id"),
    ("wallet-too-long", {"wallet_id": "a" * 65}, 400, "wallet_id"),
    *wrong_types("wallet_id"),
    ("wallet-unknown", {"wallet_id": "{unknown}"}, 403, "wallet_id"),
    ("wallet-of-someone-else", {"wallet_id": "{lp_wallet}"}, 403, "wallet_id"),
    # A wallet that already holds a machine is a conflict, not bad input.
    ("wallet-already-a-machine", {"wallet_id": "{J_wallet}"}, 409, "already belongs"),
    ("currency-two-letters", {"fiat_currency": "GT"}, 400, "fiat_currency"),
    ("currency-four-letters", {"fiat_currency": "GTQQ"}, 400, "fiat_currency"),
    ("currency-digit", {"fiat_currency": "G1Q"}, 400, "fiat_currency"),
    ("currency-empty", {"fiat_currency": ""}, 400, "fiat_currency"),
    ("currency-null", {"fiat_currency": None}, 400, "fiat_currency"),
    ("currency-accented", {"fiat_currency": "ÉUR"}, 400, "fiat_currency"),
    ("currency-symbol", {"fiat_currency": "€"}, 400, "fiat_currency"),
    ("currency-sql", {"fiat_currency": "GTQ'; DROP TABLE x; --"}, 400, "fiat_currency"),
    *wrong_types("fiat_currency"),
    ("device-short", {"lamassu_device_id": "ab" * 31}, 400, "lamassu_device_id"),
    ("device-long", {"lamassu_device_id": "a" * 65}, 400, "lamassu_device_id"),
    ("device-not-hex", {"lamassu_device_id": "g" * 64}, 400, "lamassu_device_id"),
    (
        "device-with-colons",
        {"lamassu_device_id": ":".join(["ab"] * 32)},
        400,
        "lamassu_device_id",
    ),
    ("device-number", {"lamassu_device_id": 12345}, 400, "lamassu_device_id"),
    ("npub-bad", {"machine_npub": "npub1xyz"}, 400, "machine_npub"),
    ("npub-number", {"machine_npub": 5}, 400, "machine_npub"),
    ("extra-field", {"colour": "red"}, 400, "colour: is not a known field"),
    ("extra-status", {"status": "active"}, 400, "status"),
    ("extra-owner", {"operator_user_id": "{newcomer}"}, 400, "operator_user_id"),
    ("extra-id", {"id": "{unknown}"}, 400, "id"),
    ("extra-sweep-cursor", {"sweep_cursor": 0}, 400, "sweep_cursor"),
]


@cases(MACHINE_CREATE)
async def test_create_machine(http, world, changes, status, needle):
    body = world.fill(build(MACHINE_BASE, changes))
    response = await http.post(
        f"{API}/machines", headers=world.operator.admin, json=body
    )
    await assert_refused(world, response, status, needle)


MACHINE_UPDATE = [
    ("name-empty", {"name": ""}, 400, "name"),
    ("name-null", {"name": None}, 400, "name"),
    ("name-nul", {"name": "\x00"}, 400, "name"),
    *wrong_types("name"),
    ("wallet-null", {"wallet_id": None}, 400, "wallet_id"),
    ("wallet-empty", {"wallet_id": ""}, 400, "wallet_id"),
    ("wallet-unknown", {"wallet_id": "{unknown}"}, 403, "wallet_id"),
    ("wallet-of-someone-else", {"wallet_id": "{lp_wallet}"}, 403, "wallet_id"),
    ("wallet-of-other-machine", {"wallet_id": "{J_wallet}"}, 409, "already belongs"),
    *wrong_types("wallet_id"),
    ("currency-null", {"fiat_currency": None}, 400, "fiat_currency"),
    ("currency-bad", {"fiat_currency": "XX"}, 400, "fiat_currency"),
    ("currency-number", {"fiat_currency": 978}, 400, "fiat_currency"),
    ("currency-change-with-lps", {"fiat_currency": "USD"}, 409, "fiat_currency"),
    ("status-null", {"status": None}, 400, "status"),
    ("status-unknown", {"status": "broken"}, 400, "status"),
    ("status-uppercase", {"status": "ACTIVE!"}, 400, "status"),
    ("status-number", {"status": 1}, 400, "status"),
    ("status-true", {"status": True}, 400, "status"),
    ("device-not-hex", {"lamassu_device_id": "z" * 64}, 400, "lamassu_device_id"),
    ("npub-bad", {"machine_npub": "npub"}, 400, "machine_npub"),
    ("extra-owner", {"operator_user_id": "{newcomer}"}, 400, "operator_user_id"),
    ("extra-sweep-cursor", {"sweep_cursor": 0}, 400, "sweep_cursor"),
    ("extra-created", {"created_at": 0}, 400, "created_at"),
    ("good-and-bad-together", {"name": "fine", "status": "broken"}, 400, "status"),
]


@cases(MACHINE_UPDATE)
async def test_update_machine(http, world, changes, status, needle):
    body = world.fill(changes)
    response = await http.put(
        f"{API}/machines/{world.gtq['id']}", headers=world.operator.admin, json=body
    )
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- LP preferences

LP_BASE = {"wallet_id": "{lp_wallet}", "dca_mode": "flow"}
FIXED = {"dca_mode": "fixed"}
LP_CASES = [
    ("wallet-missing", {"wallet_id": MISSING}, 400, "wallet_id: is required"),
    ("wallet-empty", {"wallet_id": ""}, 400, "wallet_id"),
    ("wallet-null", {"wallet_id": None}, 400, "wallet_id"),
    ("wallet-nul", {"wallet_id": "\x00"}, 400, "wallet_id"),
    *wrong_types("wallet_id"),
    ("wallet-unknown", {"wallet_id": "{unknown}"}, 403, "wallet_id"),
    ("mode-unknown", {"dca_mode": "weekly"}, 400, "dca_mode"),
    ("mode-uppercase", {"dca_mode": "FLOW"}, 400, "dca_mode"),
    ("mode-null", {"dca_mode": None}, 400, "dca_mode"),
    ("mode-number", {"dca_mode": 1}, 400, "dca_mode"),
    ("fixed-without-limit", FIXED, 400, "fixed_mode_daily_limit"),
    (
        "fixed-limit-empty",
        {**FIXED, "fixed_mode_daily_limit": ""},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-zero",
        {**FIXED, "fixed_mode_daily_limit": "0"},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-negative",
        {**FIXED, "fixed_mode_daily_limit": "-5"},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-negative-number",
        {**FIXED, "fixed_mode_daily_limit": -5},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-text",
        {**FIXED, "fixed_mode_daily_limit": "ten"},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-nan",
        {**FIXED, "fixed_mode_daily_limit": "NaN"},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-infinity",
        {**FIXED, "fixed_mode_daily_limit": "Infinity"},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-huge",
        {**FIXED, "fixed_mode_daily_limit": "1e13"},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-true",
        {**FIXED, "fixed_mode_daily_limit": True},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-list",
        {**FIXED, "fixed_mode_daily_limit": ["10"]},
        400,
        "fixed_mode_daily_limit",
    ),
    (
        "fixed-limit-object",
        {**FIXED, "fixed_mode_daily_limit": {"GTQ": "10"}},
        400,
        "fixed_mode_daily_limit",
    ),
    ("autoforward-maybe", {"autoforward_enabled": "maybe"}, 400, "autoforward_enabled"),
    ("autoforward-list", {"autoforward_enabled": [True]}, 400, "autoforward_enabled"),
    ("autoforward-object", {"autoforward_enabled": {}}, 400, "autoforward_enabled"),
    (
        "autoforward-without-address",
        {"autoforward_enabled": True},
        400,
        "autoforward_ln_address",
    ),
    (
        "address-not-an-address",
        {"autoforward_enabled": True, "autoforward_ln_address": "alice"},
        400,
        "autoforward_ln_address",
    ),
    (
        "address-no-domain",
        {"autoforward_enabled": True, "autoforward_ln_address": "alice@"},
        400,
        "autoforward_ln_address",
    ),
    (
        "address-spaces",
        {"autoforward_enabled": True, "autoforward_ln_address": "al ice@x.com"},
        400,
        "autoforward_ln_address",
    ),
    (
        "address-too-long",
        {"autoforward_enabled": True, "autoforward_ln_address": "a" * 320 + "@x.com"},
        400,
        "autoforward_ln_address",
    ),
    ("address-number", {"autoforward_ln_address": 5}, 400, "autoforward_ln_address"),
    # LUD-16 addresses are name@domain, fetched over HTTPS on 443: LNbits' helper can
    # never pay one with a port, an IP address or no top-level domain.
    *(
        (
            f"address-unpayable-{i}",
            {"autoforward_enabled": True, "autoforward_ln_address": address},
            400,
            "autoforward_ln_address",
        )
        for i, address in enumerate(
            ["alice@127.0.0.1:9", "alice@example.com:8080", "alice@10.0.0.1", "a@host"]
        )
    ),
    ("extra-user", {"user_id": "{newcomer}"}, 400, "user_id"),
    ("extra-field", {"machine_id": "{G}"}, 400, "machine_id"),
]


@cases(LP_CASES)
async def test_lp_preferences(http, world, changes, status, needle):
    body = world.fill(build(LP_BASE, changes))
    response = await http.put(f"{API}/lp", headers=world.lp.admin, json=body)
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- clients

ENROL_BASE = {"machine_id": "{G}", "user_id": "{newcomer}", "username": "newcomer"}
ENROL = [
    ("machine-missing", {"machine_id": MISSING}, 400, "machine_id: is required"),
    ("user-missing", {"user_id": MISSING}, 400, "user_id: is required"),
    ("machine-empty", {"machine_id": ""}, 400, "machine_id"),
    ("user-empty", {"user_id": ""}, 400, "user_id"),
    ("machine-null", {"machine_id": None}, 400, "machine_id"),
    ("user-null", {"user_id": None}, 400, "user_id"),
    ("machine-too-long", {"machine_id": "a" * 65}, 400, "machine_id"),
    ("user-nul", {"user_id": "a\x00b"}, 400, "user_id"),
    *wrong_types("machine_id"),
    *wrong_types("user_id"),
    *wrong_types("username"),
    ("username-too-long", {"username": "x" * 101}, 400, "username"),
    ("machine-unknown", {"machine_id": "{unknown}"}, 404, "machine"),
    ("user-unknown", {"user_id": "{unknown}"}, 404, "user"),
    ("already-enrolled", {"user_id": "{lp}"}, 409, "already enrolled"),
    ("extra-status", {"status": "active"}, 400, "status"),
    ("extra-balance", {"deposits_minor": 100000}, 400, "deposits_minor"),
    ("extra-owner", {"operator_user_id": "{newcomer}"}, 400, "operator_user_id"),
]


@cases(ENROL)
async def test_enrol_client(http, world, changes, status, needle):
    body = world.fill(build(ENROL_BASE, changes))
    response = await http.post(
        f"{API}/clients", headers=world.operator.admin, json=body
    )
    await assert_refused(world, response, status, needle)


CLIENT_UPDATE = [
    ("status-unknown", {"status": "deleted"}, 400, "status"),
    ("status-null", {"status": None}, 400, "status"),
    ("status-number", {"status": 0}, 400, "status"),
    ("status-true", {"status": True}, 400, "status"),
    ("status-list", {"status": ["active"]}, 400, "status"),
    *wrong_types("username"),
    ("username-too-long", {"username": "x" * 101}, 400, "username"),
    ("username-nul", {"username": "x\x00"}, 400, "username"),
    ("extra-machine", {"machine_id": "{J}"}, 400, "machine_id"),
    ("extra-user", {"user_id": "{newcomer}"}, 400, "user_id"),
    ("extra-deposits", {"deposits_minor": 999999}, 400, "deposits_minor"),
    ("extra-cycle", {"cycle_complete": True}, 400, "cycle_complete"),
]


@cases(CLIENT_UPDATE)
async def test_update_client(http, world, changes, status, needle):
    response = await http.put(
        f"{API}/clients/{world.client_gtq['id']}",
        headers=world.operator.admin,
        json=world.fill(changes),
    )
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- deposits

DEPOSIT_BASE = {"client_id": "{cG}", "amount": "10.00", "notes": "cash"}


def amount(value: Any, name: str, client: str = "{cG}", status: int = 400) -> tuple:
    return (name, {"amount": value, "client_id": client}, status, "amount")


DEPOSITS = [
    ("client-missing", {"client_id": MISSING}, 400, "client_id: is required"),
    ("amount-missing", {"amount": MISSING}, 400, "amount: is required"),
    ("client-empty", {"client_id": ""}, 400, "client_id"),
    ("client-null", {"client_id": None}, 400, "client_id"),
    ("client-too-long", {"client_id": "c" * 65}, 400, "client_id"),
    *wrong_types("client_id"),
    ("client-unknown", {"client_id": "{unknown}"}, 404, "client"),
    amount("", "amount-empty"),
    amount("   ", "amount-blank"),
    amount(None, "amount-null"),
    amount(True, "amount-true"),
    amount(False, "amount-false"),
    amount(["10"], "amount-list"),
    amount({"value": "10"}, "amount-object"),
    amount("ten", "amount-words"),
    amount("1,00", "amount-comma"),
    amount("1 000", "amount-space"),
    amount("1_000", "amount-underscore"),
    amount("0x10", "amount-hex"),
    amount("\uff11\uff12", "amount-fullwidth-digits"),
    amount("10.00 GTQ", "amount-with-currency"),
    amount("1.234", "amount-gtq-three-decimals"),
    amount(1.234, "amount-gtq-three-decimals-number"),
    amount("0.001", "amount-gtq-below-a-cent"),
    amount("1e-999999999", "amount-tiny-exponent"),
    amount("1.5", "amount-jpy-decimals", client="{cJ}"),
    amount(1.5, "amount-jpy-decimals-number", client="{cJ}"),
    amount("-5", "amount-negative"),
    amount(-5, "amount-negative-number"),
    amount("-0.01", "amount-negative-cent"),
    amount("0", "amount-zero"),
    amount("0.00", "amount-zero-decimals"),
    amount(0, "amount-zero-number"),
    amount("-0", "amount-negative-zero"),
    amount("NaN", "amount-nan"),
    amount("nan", "amount-nan-lower"),
    amount("sNaN", "amount-snan"),
    amount("Infinity", "amount-infinity"),
    amount("-Infinity", "amount-minus-infinity"),
    amount("inf", "amount-inf"),
    amount("1e400", "amount-1e400"),
    amount("1e999999999", "amount-huge-exponent"),
    amount("100000000001", "amount-huge"),
    amount(10**30, "amount-huge-number"),
    amount("9" * 101, "amount-too-many-digits"),
    ("notes-too-long", {"notes": "n" * 1001}, 400, "notes"),
    ("notes-nul", {"notes": "\x00"}, 400, "notes"),
    *wrong_types("notes"),
    ("extra-status", {"status": "confirmed"}, 400, "status"),
    ("extra-currency", {"currency": "USD"}, 400, "currency"),
    ("extra-machine", {"machine_id": "{J}"}, 400, "machine_id"),
    ("extra-confirmed-at", {"confirmed_at": 0}, 400, "confirmed_at"),
    ("lp-without-preferences", {"client_id": "{cN}"}, 422, "preferences"),
]


@cases(DEPOSITS)
async def test_create_deposit(http, world, changes, status, needle):
    body = world.fill(build(DEPOSIT_BASE, changes))
    response = await http.post(
        f"{API}/deposits", headers=world.operator.admin, json=body
    )
    await assert_refused(world, response, status, needle)


TRANSITIONS = [
    ("confirm-unknown", "{unknown}/confirm", 404, "not found"),
    ("cancel-unknown", "{unknown}/cancel", 404, "not found"),
    ("confirm-very-long-id", "x" * 3000 + "/confirm", 404, "not found"),
    ("confirm-nul-id", "a%00b/confirm", 400, "NUL"),
    ("confirm-confirmed", "{confirmed}/confirm", 409, "confirmed"),
    ("cancel-confirmed", "{confirmed}/cancel", 409, "confirmed"),
    ("confirm-cancelled", "{cancelled}/confirm", 409, "cancelled"),
    ("cancel-cancelled", "{cancelled}/cancel", 409, "cancelled"),
]


@cases(TRANSITIONS)
async def test_deposit_transitions(http, world, changes, status, needle):
    response = await http.post(
        f"{API}/deposits/{world.fill(changes)}", headers=world.operator.admin
    )
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- reads with bad ids

READS = [
    ("machine-unknown", "GET /machines/{unknown}", 404, "machine"),
    ("machine-nul", "GET /machines/a%00b", 400, "NUL"),
    ("machine-update-unknown", "PUT /machines/{unknown}", 404, "machine"),
    ("machine-update-nul", "PUT /machines/%00", 400, "NUL"),
    ("client-unknown", "GET /clients/{unknown}", 404, "client"),
    ("client-update-unknown", "PUT /clients/{unknown}", 404, "client"),
    ("client-update-a-machine-id", "PUT /clients/{G}", 404, "client"),
    ("client-nul", "GET /clients/%00", 400, "NUL"),
    ("balance-unknown", "GET /clients/{unknown}/balance", 404, "client"),
    ("balance-of-a-machine-id", "GET /clients/{G}/balance", 404, "client"),
    ("clients-of-unknown-machine", "GET /clients?machine_id={unknown}", 404, "machine"),
    ("clients-of-a-client-id", "GET /clients?machine_id={cG}", 404, "machine"),
    (
        "clients-machine-too-long",
        "GET /clients?machine_id=" + "m" * 65,
        400,
        "machine_id",
    ),
    ("clients-machine-nul", "GET /clients?machine_id=%00", 400, "NUL"),
    ("deposits-of-unknown-client", "GET /deposits?client_id={unknown}", 404, "client"),
    ("deposits-of-a-machine-id", "GET /deposits?client_id={G}", 404, "client"),
    (
        "deposits-client-too-long",
        "GET /deposits?client_id=" + "c" * 65,
        400,
        "client_id",
    ),
    ("deposits-client-nul", "GET /deposits?client_id=x%00", 400, "NUL"),
    (
        "splits-of-unknown-machine",
        "GET /commission/splits?machine_id={unknown}",
        404,
        "machine",
    ),
    (
        "splits-machine-too-long",
        "GET /commission/splits?machine_id=" + "m" * 65,
        400,
        "machine_id",
    ),
]


@cases(READS)
async def test_bad_ids(http, world, changes, status, needle):
    method, path = changes.split(" ", 1)
    body = None
    if method == "PUT":
        body = {"username": "x"} if path.startswith("/clients") else {"name": "x"}
    response = await http.request(
        method, f"{API}{world.fill(path)}", headers=world.operator.admin, json=body
    )
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- super user

SUPER_BASE = {"super_fee_fraction": "0.1", "fee_wallet_id": None}
FRACTION = "super_fee_fraction"
SUPER = [
    ("fraction-missing", {FRACTION: MISSING}, 400, "super_fee_fraction: is required"),
    ("fraction-empty", {FRACTION: ""}, 400, FRACTION),
    ("fraction-text", {FRACTION: "ten percent"}, 400, FRACTION),
    ("fraction-percent-sign", {FRACTION: "10%"}, 400, FRACTION),
    ("fraction-negative", {FRACTION: "-0.1"}, 400, FRACTION),
    ("fraction-over-one", {FRACTION: "1.5"}, 400, FRACTION),
    ("fraction-over-one-number", {FRACTION: 2}, 400, FRACTION),
    ("fraction-nan", {FRACTION: "NaN"}, 400, FRACTION),
    ("fraction-infinity", {FRACTION: "Infinity"}, 400, FRACTION),
    ("fraction-too-precise", {FRACTION: "0.123456789"}, 400, FRACTION),
    ("fraction-huge-exponent", {FRACTION: "1e999999999"}, 400, FRACTION),
    ("fraction-tiny-exponent", {FRACTION: "1e-999999999"}, 400, FRACTION),
    ("fraction-null", {FRACTION: None}, 400, FRACTION),
    ("fraction-true", {FRACTION: True}, 400, FRACTION),
    ("fraction-list", {FRACTION: ["0.1"]}, 400, FRACTION),
    ("fraction-object", {FRACTION: {}}, 400, FRACTION),
    ("fee-wallet-unknown", {"fee_wallet_id": "{unknown}"}, 403, "fee_wallet_id"),
    ("fee-wallet-an-operators", {"fee_wallet_id": "{op_wallet}"}, 403, "fee_wallet_id"),
    ("fee-wallet-too-long", {"fee_wallet_id": "f" * 65}, 400, "fee_wallet_id"),
    *wrong_types("fee_wallet_id"),
    ("extra-field", {"id": 2}, 400, "id"),
]


@cases(SUPER)
async def test_super_config(http, world, changes, status, needle):
    body = world.fill(build(SUPER_BASE, changes))
    response = await http.put(
        f"{API}/super/config", headers=world.super_user.admin, json=body
    )
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- commission splits


def legs(*pairs: Any) -> dict:
    return {
        "legs": [{"target": target, "percent": percent} for target, percent in pairs]
    }


SPLITS_BASE = {"machine_id": "{G}", "legs": [{"target": "lps", "percent": "100"}]}
SPLITS = [
    ("sum-under", legs(("lps", "50")), 400, "100"),
    ("sum-over", legs(("lps", "60"), ("{op_wallet}", "50")), 400, "100"),
    ("sum-off-by-a-hair", legs(("lps", "50"), ("{op_wallet}", "49.9999")), 400, "100"),
    ("zero-leg", legs(("lps", "100"), ("{op_wallet}", "0")), 400, "percent"),
    ("negative-leg", legs(("lps", "110"), ("{op_wallet}", "-10")), 400, "percent"),
    (
        "five-decimals",
        legs(("lps", "33.33333"), ("{op_wallet}", "66.66667")),
        400,
        "decimal",
    ),
    ("percent-text", legs(("lps", "all")), 400, "percent"),
    ("percent-with-sign", legs(("lps", "100%")), 400, "percent"),
    ("percent-empty", legs(("lps", "")), 400, "percent"),
    ("percent-nan", legs(("lps", "NaN")), 400, "percent"),
    ("percent-infinity", legs(("lps", "Infinity")), 400, "percent"),
    ("percent-minus-infinity", legs(("lps", "-Infinity")), 400, "percent"),
    ("percent-huge-exponent", legs(("lps", "1e999999999")), 400, "percent"),
    (
        "percent-tiny-exponent",
        legs(("lps", "100"), ("{op_wallet}", "1e-999999999")),
        400,
        "percent",
    ),
    ("percent-null", legs(("lps", None)), 400, "percent"),
    ("percent-true", legs(("lps", True)), 400, "percent"),
    ("percent-list", legs(("lps", ["100"])), 400, "percent"),
    ("percent-object", legs(("lps", {"v": 100})), 400, "percent"),
    ("percent-missing", {"legs": [{"target": "lps"}]}, 400, "percent: is required"),
    ("target-missing", {"legs": [{"percent": "100"}]}, 400, "target: is required"),
    ("target-empty", legs(("", "100")), 400, "target"),
    ("target-blank", legs(("   ", "100")), 400, "target"),
    ("target-null", legs((None, "100")), 400, "target"),
    ("target-number", legs((5, "100")), 400, "target"),
    ("target-list", legs((["lps"], "100")), 400, "target"),
    ("target-nul", legs(("lps\x00", "100")), 400, "target"),
    ("target-unknown-wallet", legs(("{unknown}", "100")), 400, "target"),
    ("target-garbage", legs(("somebody", "100")), 400, "target"),
    ("target-bad-address", legs(("alice@", "100")), 400, "target"),
    ("target-bad-address-chars", legs(("al ice@example.com", "100")), 400, "target"),
    ("target-address-port", legs(("alice@127.0.0.1:9", "100")), 400, "target"),
    ("target-address-no-tld", legs(("alice@host", "100")), 400, "target"),
    ("target-bad-lnurl", legs(("lnurl1zzzzzz", "100")), 400, "target"),
    ("target-bad-lnurl-prefixed", legs(("lightning:LNURL1ABC", "100")), 400, "target"),
    ("target-too-long", legs(("x" * 2001, "100")), 400, "target"),
    ("second-target-bad", legs(("lps", "50"), ("nowhere", "50")), 400, "nowhere"),
    (
        "label-too-long",
        {"legs": [{"target": "lps", "percent": "100", "label": "l" * 101}]},
        400,
        "label",
    ),
    (
        "label-number",
        {"legs": [{"target": "lps", "percent": "100", "label": 7}]},
        400,
        "label",
    ),
    (
        "leg-extra-field",
        {"legs": [{"target": "lps", "percent": "100", "weight": 1}]},
        400,
        "weight",
    ),
    ("leg-not-an-object", {"legs": ["lps"]}, 400, "legs"),
    ("leg-as-pairs", {"legs": [[["target", "lps"], ["percent", "100"]]]}, 400, "legs"),
    ("legs-missing", {"legs": MISSING}, 400, "legs: is required"),
    ("legs-null", {"legs": None}, 400, "legs"),
    ("legs-string", {"legs": "lps"}, 400, "legs"),
    ("legs-object", {"legs": {"target": "lps", "percent": "100"}}, 400, "legs"),
    ("too-many-legs", legs(*[("lps", "4.7619")] * 21), 400, "legs"),
    ("machine-unknown", {"machine_id": "{unknown}"}, 404, "machine"),
    ("machine-of-a-client-id", {"machine_id": "{cG}"}, 404, "machine"),
    ("machine-too-long", {"machine_id": "m" * 65}, 400, "machine_id"),
    *wrong_types("machine_id"),
    ("extra-field", {"operator_user_id": "{newcomer}"}, 400, "operator_user_id"),
]


# Each case against a machine's rules and, unless it is about the machine id, against
# the operator's default rules (machine_id null).
SPLIT_CASES = [
    (f"{scope}-{name}", changes, status, needle, scope)
    for name, changes, status, needle in SPLITS
    for scope in ("machine", "default")
    if scope == "machine" or "machine_id" not in changes
]


@pytest.mark.parametrize(
    "changes,status,needle,scope",
    [case[1:] for case in SPLIT_CASES],
    ids=[case[0] for case in SPLIT_CASES],
)
async def test_commission_splits(http, world, changes, status, needle, scope):
    body = build(SPLITS_BASE, changes)
    if scope == "default":
        body["machine_id"] = None
    response = await http.put(
        f"{API}/commission/splits",
        headers=world.operator.admin,
        json=world.fill(body),
    )
    await assert_refused(world, response, status, needle)


# ---------------------------------------------------------------- bodies that are not JSON objects

WRITE_ENDPOINTS = [
    ("POST", "/machines", "operator"),
    ("PUT", "/machines/{G}", "operator"),
    ("PUT", "/lp", "lp"),
    ("POST", "/clients", "operator"),
    ("PUT", "/clients/{cG}", "operator"),
    ("POST", "/deposits", "operator"),
    ("PUT", "/super/config", "super_user"),
    ("PUT", "/commission/splits", "operator"),
]
RAW_BODIES = [
    ("broken-json", b'{"name": ', "body: is not valid JSON"),
    ("trailing-comma", b'{"name": "x",}', "body: is not valid JSON"),
    ("single-quotes", b"{'name': 'x'}", "body: is not valid JSON"),
    ("not-utf8", b"\xff\xfe\x00{", None),
    ("deeply-nested", b"[" * 100000 + b"]" * 100000, None),
    ("empty", b"", "body: is required"),
    ("null", b"null", "body: is required"),
    ("list", b"[]", None),
    (
        "list-of-pairs",
        b'[["name", "x"], ["amount", "5"], ["status", "inactive"]]',
        None,
    ),
    ("string", b'"hello"', None),
    ("number", b"5", None),
    ("true", b"true", None),
]


@pytest.mark.parametrize(
    "method,path,caller",
    WRITE_ENDPOINTS,
    ids=[f"{m} {p}" for m, p, _ in WRITE_ENDPOINTS],
)
@pytest.mark.parametrize(
    "raw,needle", [r[1:] for r in RAW_BODIES], ids=[r[0] for r in RAW_BODIES]
)
async def test_body_is_not_a_json_object(
    http, world, method, path, caller, raw, needle
):
    headers = {**getattr(world, caller).admin, "Content-Type": "application/json"}
    response = await http.request(
        method, f"{API}{world.fill(path)}", headers=headers, content=raw
    )
    await assert_refused(world, response, 400, needle)


@pytest.mark.parametrize(
    "method,path,caller",
    WRITE_ENDPOINTS,
    ids=[f"{m} {p}" for m, p, _ in WRITE_ENDPOINTS],
)
async def test_body_that_is_not_declared_json(http, world, method, path, caller):
    # A form post or plain text is not a JSON body, whatever it contains.
    headers = {**getattr(world, caller).admin, "Content-Type": "text/plain"}
    response = await http.request(
        method, f"{API}{world.fill(path)}", headers=headers, content=b'{"name": "x"}'
    )
    await assert_refused(world, response, 400, None)
    response = await http.request(
        method,
        f"{API}{world.fill(path)}",
        headers=getattr(world, caller).admin,
        data={"name": "x", "amount": "1"},
    )
    await assert_refused(world, response, 400, None)


# ---------------------------------------------------------------- the valid bodies are valid


async def test_every_base_body_is_accepted(http, factory, super_user):
    """The tables above change one thing in a valid body: prove the bodies are valid,
    on a world of their own, so that each refusal is about the one change."""
    w = await build_world(http, factory, super_user)
    op = w.operator.admin

    async def ok(method: str, path: str, body: Any, headers: Any) -> dict:
        response = await http.request(
            method, f"{API}{w.fill(path)}", headers=headers, json=w.fill(body)
        )
        assert response.status_code in (200, 201), (path, response.text)
        return response.json()

    machine = await ok("POST", "/machines", MACHINE_BASE, op)
    assert machine["name"] == "New ATM" and machine["fiat_currency"] == "GTQ"
    await ok("PUT", "/machines/{G}", {"name": "fine"}, op)
    await ok("PUT", "/lp", LP_BASE, w.lp.admin)
    await ok(
        "PUT", "/lp", {**LP_BASE, **FIXED, "fixed_mode_daily_limit": "10"}, w.lp.admin
    )
    client = await ok("POST", "/clients", ENROL_BASE, op)
    assert client["username"] == "newcomer"
    await ok("PUT", "/clients/{cG}", {"username": "renamed", "status": "active"}, op)
    deposit = await ok("POST", "/deposits", DEPOSIT_BASE, op)
    assert deposit["amount"] == "10.00" and deposit["status"] == "pending"
    # Exactness is judged on the value: these are whole cents / whole yen.
    for client_id, value, shown in (
        ("{cG}", "1.230", "1.23"),
        ("{cG}", 12, "12.00"),
        ("{cG}", "1E+1", "10.00"),
        ("{cJ}", "1500", "1500"),
        ("{cJ}", "1.0", "1"),
    ):
        deposit = await ok(
            "POST", "/deposits", {"client_id": client_id, "amount": value}, op
        )
        assert deposit["amount"] == shown, (value, deposit)
    splits = await ok("PUT", "/commission/splits", SPLITS_BASE, op)
    assert [leg["percent"] for leg in splits["legs"]] == ["100"]
    splits = await ok(
        "PUT",
        "/commission/splits",
        {
            "machine_id": None,
            "legs": [
                {"target": "lps", "percent": 33.3333},
                {"target": "{op_wallet}", "percent": "66.6667"},
            ],
        },
        op,
    )
    assert [leg["target_kind"] for leg in splits["legs"]] == ["lps", "wallet"]
    from lnurl import encode

    good_lnurl = str(encode("https://example.com/.well-known/lnurlp/ops").bech32)
    splits = await ok(
        "PUT",
        "/commission/splits",
        {
            "machine_id": "{J}",
            "legs": [
                {"target": good_lnurl, "percent": "50"},
                {"target": "Ops@Example.com", "percent": "50"},
            ],
        },
        op,
    )
    assert [leg["target_kind"] for leg in splits["legs"]] == ["lnurl", "lnaddress"]
    original = (await http.get(f"{API}/super/config", headers=super_user.admin)).json()
    try:
        await ok("PUT", "/super/config", SUPER_BASE, super_user.admin)
    finally:
        await ok(
            "PUT",
            "/super/config",
            {
                "super_fee_fraction": original["super_fee_fraction"],
                "fee_wallet_id": original["fee_wallet_id"],
            },
            super_user.admin,
        )
