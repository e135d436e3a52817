"""Secrets stay secret: the Lamassu password and LNbits wallet keys.

The Lamassu password (a distinctive one, of a real PostgreSQL playing the Lamassu
server, tests/lamassu_fixture.py) goes in through PUT /lamassu/config and POST
/lamassu/test, works, fails (wrong password, host, port, database, user, garbage
settings), is polled by hand and by the background poller, and shows up in the
status. Through all of it every log record (loguru at TRACE, with tracebacks and
their variables; Python's `logging` at INFO), every response (status line, headers,
body) of every endpoint and of the operator page, every text kept in the extension's
tables and every error stored, must not hold the password (nor the wrong one that
was tried). No wallet admin or invoice key may appear in any log record.
"""

import logging
import secrets
from typing import Any

import pytest
from lamassu_fixture import READER_PASSWORD, start_lamassu_server

API = "/satmachineadmin/api/v1"
WRONG_PASSWORD = "Wrong-" + secrets.token_hex(12) + "-pw"


class Captured:
    """Every log record of the process, loguru and std logging alike."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def loguru_sink(self, message: Any) -> None:
        self.lines.append(str(message))
        record = message.record
        if record["exception"] is not None:
            self.lines.append(repr(record["exception"]))

    def text(self) -> str:
        return "\n".join(self.lines)


class _StdHandler(logging.Handler):
    def __init__(self, captured: Captured):
        super().__init__(level=logging.INFO)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        self.captured.lines.append(self.format(record))
        if record.exc_info:
            self.captured.lines.append(
                logging.Formatter().formatException(record.exc_info)
            )


@pytest.fixture(scope="module")
async def lamassu_pg():
    """A Lamassu-shaped PostgreSQL of this module's own (the session fixture of
    tests/lamassu_fixture.py belongs to test_lamassu.py: importing it here would
    prepare its server twice)."""
    import asyncio

    server = await asyncio.to_thread(start_lamassu_server)
    await server.prepare()
    yield server
    await server.close()
    server.cleanup()


@pytest.fixture
def captured():
    from loguru import logger

    capture = Captured()
    # diagnose=True: tracebacks with every variable's value, the most a log can leak.
    sink = logger.add(capture.loguru_sink, level="TRACE", backtrace=True, diagnose=True)
    handler = _StdHandler(capture)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    # INFO: a database driver's DEBUG trace echoes every SQL parameter (wallet rows
    # included) by design; nobody runs LNbits with it on.
    root.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        logger.remove(sink)
        root.removeHandler(handler)
        root.setLevel(old_level)


def shown(response: Any) -> str:
    head = f"{response.status_code} " + " ".join(
        f"{k}: {v}" for k, v in response.headers.items()
    )
    return head + "\n" + response.text


async def extension_texts() -> str:
    """Every text the extension keeps in its tables."""
    from satmachineadmin import db

    tables = ["lamassu_config", "audit_log", "settlements", "legs", "machines"]
    out = []
    for table in tables:
        try:
            rows = await db.fetchall(f"SELECT * FROM satmachineadmin.{table}")
        except Exception:  # a table this version does not have
            continue
        out += [repr(dict(row)) for row in rows]
    return "\n".join(out)


async def test_the_lamassu_password_and_wallet_keys_never_leak(
    http,
    factory,
    captured,
    lamassu_pg,
):
    from satmachineadmin.lamassu import poller as lamassu_poller

    operator = await factory.operator()
    lp = await factory.lp()
    database = await lamassu_pg.new_database()
    device = secrets.token_hex(32)
    await database.add_device(device)
    machine = await factory.machine(operator, lamassu_device_id=device)
    await factory.enrol(operator, machine, lp, deposit="100.00")
    # A commission target given as another user's invoice key: a secret the operator
    # typed once; kept as the wallet id, never shown or logged again.
    partner = await factory.user()
    response = await http.put(
        f"{API}/commission/splits",
        headers=operator.admin,
        json={
            "machine_id": None,
            "legs": [{"target": partner.wallet.inkey, "percent": "100"}],
        },
    )
    assert response.status_code == 200, response.text
    await database.cash_out(device)
    await database.cash_out(device, fiat="-5")  # a row the mapper rejects
    responses: list[Any] = []

    async def call(method: str, path: str, key: Any = None, **kwargs: Any) -> Any:
        response = await http.request(
            method, f"{API}{path}", headers=key or operator.admin, **kwargs
        )
        responses.append(response)
        return response

    good = database.config()
    assert good["password"] == READER_PASSWORD

    # Works.
    assert (await call("PUT", "/lamassu/config", json=good)).status_code == 200
    for path in ("/lamassu/config", "/lamassu/status"):
        assert (await call("GET", path)).status_code == 200
        assert (await call("GET", path, operator.invoice)).status_code == 200
    tested = await call("POST", "/lamassu/test")
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text
    tested = await call("POST", "/lamassu/test", json=good)
    assert tested.json()["ok"] is True, tested.text
    polled = await call("POST", "/lamassu/poll")
    assert polled.status_code == 200 and polled.json()["ok"] is True, polled.text
    assert polled.json()["new"] >= 1, polled.text

    # Fails, every way an operator can get it wrong; each failure answers with a reason.
    failing = [
        good | {"password": WRONG_PASSWORD},
        good | {"host": "127.0.0.2", "port": 9, "password": WRONG_PASSWORD},
        good | {"port": 9},
        good | {"database": "no_such_db"},
        good | {"username": "no_such_user"},
        good | {"username": "lamassu_nogrant", "password": WRONG_PASSWORD},
    ]
    for body in failing:
        tested = await call("POST", "/lamassu/test", json=body)
        assert tested.status_code == 200, tested.text
        result = tested.json()
        assert result["ok"] is False, (body, result)
        assert all(c["message"] for c in result["checks"]), result
    for sslmode in ("require", "verify-full"):  # over a unix socket: whatever it says
        await call("POST", "/lamassu/test", json=good | {"sslmode": sslmode})
    for body in failing[:3]:
        assert (await call("PUT", "/lamassu/config", json=body)).status_code == 200
        polled = await call("POST", "/lamassu/poll")
        assert polled.status_code == 200 and polled.json()["ok"] is False, polled.text
        assert polled.json()["error"], polled.text
        status = await call("GET", "/lamassu/status")
        assert status.json()["last_error"], status.text
        # The background poller's path too.
        await lamassu_poller.poll_all_due()
    # Garbage in, with the password beside it: refused with a reason, never echoed.
    garbage = [
        good | {"port": "five"},
        good | {"password": ["a", WRONG_PASSWORD]},
        good | {"password": WRONG_PASSWORD * 100},
        good | {"host": f"postgres://u:{WRONG_PASSWORD}@127.0.0.2:9/db x"},
        good | {"unknown": WRONG_PASSWORD},
        {"password": WRONG_PASSWORD},
    ]
    for body in garbage:
        for method, path in (("PUT", "/lamassu/config"), ("POST", "/lamassu/test")):
            response = await call(method, path, json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["detail"], response.text
    # Back to the good password; reads by everyone who may and may not.
    assert (await call("PUT", "/lamassu/config", json=good)).status_code == 200
    other = await factory.operator()
    for key in (operator.admin, operator.invoice, other.admin, lp.admin, {}):
        for path in ("/lamassu/config", "/lamassu/status"):
            await call("GET", path, key)
        await call("POST", "/lamassu/test", key)
        await call("POST", "/lamassu/poll", key)
    for path in (
        "/machines",
        "/health",
        "/settlements",
        "/payments",
        "/payments.csv",
        "/clients",
        "/deposits",
        "/commission/splits",
        "/audit",
    ):
        await call("GET", path)
    settlements = (await call("GET", "/settlements")).json()
    for row in settlements:
        await call("GET", f"/settlements/{row['id']}")
    assert any(s["status"] == "rejected" for s in settlements), settlements

    # The operator's page, as LNbits serves it to a logged-in user.
    pages = []
    for params in ({"usr": operator.id}, {"usr": lp.id}, {}):
        page = await http.get("/satmachineadmin/", params=params)
        responses.append(page)
        pages.append(page.status_code)

    texts = {
        "responses": "\n".join(shown(r) for r in responses),
        "logs": captured.text(),
        "extension tables": await extension_texts(),
    }
    assert captured.lines, "no log record was captured at all"
    for where, text in texts.items():
        for secret in (READER_PASSWORD, WRONG_PASSWORD):
            assert secret not in text, f"the Lamassu password is in the {where}"
    for where, text in texts.items():
        assert partner.wallet.inkey not in text, (
            f"a split target's invoice key is in the {where}"
        )
    keys = {w.adminkey for u in (operator, lp, other, partner) for w in u.wallets}
    keys |= {w.inkey for u in (operator, lp, other, partner) for w in u.wallets}
    keys |= {machine["wallet"].adminkey, machine["wallet"].inkey}
    leaked = [line for line in captured.lines if any(k in line for k in keys)]
    assert not leaked, f"wallet keys in the log output: {leaked[:3]}"
    print(
        f"\nsecrets: {len(responses)} responses, {len(captured.lines)} log records, "
        f"{len(keys)} wallet keys checked; page statuses {pages}"
    )
