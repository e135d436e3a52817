"""API fuzzing with schemathesis against the extension's own OpenAPI schema.

The schema is the one the real LNbits app serves at /openapi.json, cut down to the
extension's /satmachineadmin/api/v1 paths. Schemathesis (hypothesis underneath)
generates requests for every operation, both schema-conforming (positive) and
schema-breaking (negative) ones; each is sent to the in-process LNbits over ASGI, on
the event loop that started LNbits (the generator runs in a worker thread and hands
each request to that loop), with a valid admin key of operator A. Half the cases have
A's real ids put into their path, query and body, so they get past the lookups into
the services.

Pass 1 (operator A): no 5xx, ever; every 4xx is JSON with a non-empty string `detail`.
Pass 2 (operator B): the same operations, B's key, A's real ids. Each case is sent twice,
with A's ids and with ids that exist nowhere: the two answers must be the same (status,
and detail once ids are blanked), so B cannot even tell A's ids exist; no body shows
anything of A's that B did not send; an id route never answers B with a 2xx.

SATMACHINE_FUZZ_EXAMPLES (default 3) sets the examples per operation and generation
mode (positive, negative), in each pass;
SATMACHINE_FUZZ_EXAMPLES=500 is the deep run (README, "Deeper runs").
"""

import asyncio
import ipaddress
import os
import re
import time
import uuid
from collections import Counter
from typing import Any

import pytest

API = "/satmachineadmin/api/v1"
EXAMPLES = int(os.environ.get("SATMACHINE_FUZZ_EXAMPLES", "3"))
ID_FIELDS = {
    "machine_id": "machine",
    "client_id": "client",
    "settlement_id": "settlement",
    "deposit_id": "deposit",
    "wallet_id": "wallet",
    "funding_wallet_id": "funding_wallet",
    "fee_wallet_id": "funding_wallet",
    "user_id": "lp_user",
}


# ---------------------------------------------------------------- network guard


def is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch):
    """Fuzzed Lamassu settings may name any host: never let one leave this machine
    (nor even reach a DNS resolver). The refusal takes the same path a refused TCP
    connection would."""
    from satmachineadmin.lamassu import connection as lamassu_connection

    real_connect = lamassu_connection.connect

    async def guarded(target):  # type: ignore[no-untyped-def]
        if not is_loopback(target.host):
            raise ConnectionRefusedError(111, "Connection refused (test network guard)")
        return await real_connect(target)

    monkeypatch.setattr(lamassu_connection, "connect", guarded)


# ---------------------------------------------------------------- the world


@pytest.fixture(scope="module")
async def fuzz_world(http, factory) -> dict:
    a = await factory.operator()
    b = await factory.operator()
    await factory.machine(b)
    machine = await factory.machine(a)
    await factory.fund(machine["wallet"], 50_000)
    lp = await factory.lp()
    client = await factory.enrol(a, machine, lp, deposit="500.00")
    funding = await factory.wallet(a, "funding")
    await factory.fund(funding, 100_000)
    await factory.splits(
        a, [{"target": a.wallet.id, "percent": "100"}], machine_id=machine["id"]
    )
    response = await http.post(
        f"{API}/settlements",
        headers=a.admin,
        json={
            "machine_id": machine["id"],
            "tx_type": "cash_out",
            "external_id": "fuzz-1",
            "fiat_amount": "10.00",
            "principal_sats": 1_500,
            "fee_sats": 100,
        },
    )
    assert response.status_code == 201, response.text
    settlement = response.json()["id"]
    await factory.run_engine()
    response = await http.post(
        f"{API}/deposits",
        headers=a.admin,
        json={"client_id": client["id"], "amount": "1.00"},
    )
    assert response.status_code == 201, response.text
    deposit = response.json()["id"]
    legs = (await http.get(f"{API}/payments", headers=a.admin)).json()
    assert legs
    ids = {
        "machine": machine["id"],
        "client": client["id"],
        "settlement": settlement,
        "deposit": deposit,
        "wallet": machine["wallet"].id,
        "funding_wallet": funding.id,
        "lp_user": lp.id,
    }
    secrets = set(ids.values()) - {lp.id} | {leg["id"] for leg in legs}
    secrets |= {
        a.wallet.id,
        a.wallet.adminkey,
        a.wallet.inkey,
        machine["wallet"].adminkey,
    }
    return {"a": a, "b": b, "ids": ids, "secrets": secrets}


# ---------------------------------------------------------------- schemathesis plumbing


async def extension_schema(http: Any) -> Any:
    import schemathesis

    spec = (await http.get("/openapi.json")).json()
    spec["paths"] = {p: v for p, v in spec["paths"].items() if p.startswith(API + "/")}
    assert len(spec["paths"]) >= 25, sorted(spec["paths"])
    return schemathesis.openapi.from_dict(spec)


def operations(schema: Any) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())  # an operation schemathesis cannot read fails here
    return found


def to_httpx(kwargs: dict) -> dict:
    """schemathesis' requests-style call kwargs -> httpx.AsyncClient.request kwargs."""
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": {k: v for k, v in dict(kwargs.get("headers") or {}).items()},
        "params": kwargs.get("params") or None,
    }
    if kwargs.get("cookies"):
        out["cookies"] = kwargs["cookies"]
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)):
        out["content"] = data
    elif data is not None:
        out["data"] = data
    if kwargs.get("files"):
        out["files"] = kwargs["files"]
    return out


def put_ids(case: Any, ids: dict[str, str]) -> None:
    """Put real ids into every path parameter, query field and body field named like one."""
    if case.path_parameters:
        for name in list(case.path_parameters):
            if name in ID_FIELDS:
                case.path_parameters[name] = ids[ID_FIELDS[name]]
    if isinstance(case.query, dict):
        for name in list(case.query):
            if name in ID_FIELDS:
                case.query[name] = ids[ID_FIELDS[name]]
    if isinstance(case.body, dict):
        for name in list(case.body):
            if name in ID_FIELDS:
                case.body[name] = ids[ID_FIELDS[name]]


def reason_check(response: Any) -> None:
    """Every refusal says why: JSON {"detail": "<non-empty text>"}."""
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(
                f"{response.status_code} without a JSON body: {response.text[:200]!r}"
            ) from None
        detail = body.get("detail") if isinstance(body, dict) else None
        assert isinstance(detail, str) and detail.strip(), (
            f"{response.status_code} without a reason: {response.text[:300]!r}"
        )


class Runner:
    """Sends cases from the generator's worker thread to the LNbits event loop."""

    def __init__(self, http: Any, loop: asyncio.AbstractEventLoop):
        self.http = http
        self.loop = loop
        self.sent: Counter = Counter()
        self.seconds = 0.0

    def send(self, case: Any, key: str) -> Any:
        kwargs = to_httpx(
            case.as_transport_kwargs(
                base_url="http://testserver", headers={"X-Api-Key": key}
            )
        )
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            self.http.request(**kwargs), self.loop
        )
        response = future.result(timeout=120)
        self.seconds += time.monotonic() - started
        self.sent[response.status_code] += 1
        return response


def fuzz_settings() -> Any:
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        print_blob=True,
    )


# ---------------------------------------------------------------- pass 1: operator A


async def test_fuzz_as_the_operator(http, fuzz_world, loopback_only):
    import schemathesis
    from hypothesis import given
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error

    schema = await extension_schema(http)
    runner = Runner(http, asyncio.get_running_loop())
    key = fuzz_world["a"].wallet.adminkey
    ids = fuzz_world["ids"]
    ops = operations(schema)

    def run() -> None:
        for operation in ops:
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):

                @given(
                    case=operation.as_strategy(generation_mode=mode), real=st.booleans()
                )
                @fuzz_settings()
                def fuzz(case: Any, real: bool) -> None:
                    if real:
                        put_ids(case, ids)
                    response = runner.send(case, key)
                    assert response.status_code < 500, (
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{response.text[:500]}\n{case.as_curl_command()}"
                    )
                    case.validate_response(response, checks=[not_a_server_error])
                    reason_check(response)

                fuzz()

    started = time.monotonic()
    await asyncio.to_thread(run)
    total = sum(runner.sent.values())
    print(
        f"\nfuzz as operator: {len(ops)} operations, {total} requests in "
        f"{time.monotonic() - started:.1f} s ({runner.seconds:.1f} s answering), "
        f"statuses {dict(sorted(runner.sent.items()))}"
    )
    assert total >= len(ops) * 2
    assert not [s for s in runner.sent if s >= 500]


# ---------------------------------------------------------------- pass 2: operator B


def _blank(text: str, ids: list[str]) -> str:
    for value in ids:
        text = text.replace(value, "<id>")
    return re.sub(r"[0-9a-f]{32}", "<id>", text)


async def test_fuzz_as_another_operator_finds_nothing(http, fuzz_world, loopback_only):
    import schemathesis
    from hypothesis import given

    schema = await extension_schema(http)
    runner = Runner(http, asyncio.get_running_loop())
    key = fuzz_world["b"].wallet.adminkey
    ids = fuzz_world["ids"]
    secrets = fuzz_world["secrets"]
    ops = operations(schema)
    id_routes = 0

    def run() -> None:
        nonlocal id_routes
        for operation in ops:
            has_path_id = "{" in operation.path
            id_routes += has_path_id
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):

                @given(case=operation.as_strategy(generation_mode=mode))
                @fuzz_settings()
                def fuzz(case: Any) -> None:
                    put_ids(case, ids)
                    sent_text = repr((case.path_parameters, case.query, case.body))
                    with_a = runner.send(case, key)
                    where = f"{case.method} {case.formatted_path}"
                    assert with_a.status_code < 500, (where, with_a.text[:300])
                    reason_check(with_a)
                    shown = [
                        s for s in secrets if s in with_a.text and s not in sent_text
                    ]
                    assert not shown, f"{where} showed A's {shown}: {with_a.text[:300]}"
                    if has_path_id:  # noqa: B023 (fuzz() is called at once)
                        assert not 200 <= with_a.status_code < 300, (
                            f"{where}: B was answered {with_a.status_code} on A's id: "
                            f"{with_a.text[:300]}"
                        )
                    # The same request with ids that exist nowhere: the same answer.
                    nowhere = {k: uuid.uuid4().hex for k in ids}
                    put_ids(case, nowhere)
                    with_nothing = runner.send(case, key)
                    assert with_nothing.status_code == with_a.status_code, (
                        f"{where}: {with_a.status_code} with A's ids but "
                        f"{with_nothing.status_code} with unknown ids: "
                        f"{with_a.text[:200]} / {with_nothing.text[:200]}"
                    )
                    if with_a.status_code >= 400:
                        a_ids = list(ids.values())
                        assert _blank(with_a.text, a_ids) == _blank(
                            with_nothing.text, list(nowhere.values())
                        ), (where, with_a.text[:300], with_nothing.text[:300])

                fuzz()

    started = time.monotonic()
    await asyncio.to_thread(run)
    total = sum(runner.sent.values())
    print(
        f"\nfuzz as another operator: {len(ops)} operations ({id_routes} with an id in "
        f"the path), {total} requests in {time.monotonic() - started:.1f} s, "
        f"statuses {dict(sorted(runner.sent.items()))}"
    )
    assert not [s for s in runner.sent if s >= 500]
