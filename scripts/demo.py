"""Seed the demo LNbits that scripts/run started, over its HTTP API only.

Waits for the server, then (on a fresh database) creates: the super user `admin`, an
operator with a machine wallet and a commission wallet, a GTQ machine, the platform fee,
the operator's commission split, three flow-mode LPs with confirmed cash deposits, a funded
"ATM customer" wallet, and plays a few bitSpire cash-outs (an invoice with `extra` on the
machine wallet, paid from the customer wallet). Prints the logins at the end.

The passwords are random and kept in demo-data/demo.json; when that file says the
database is already seeded, nothing is created again and the same logins are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Optional

import httpx

EXT = "satmachineadmin"
API = f"/{EXT}/api/v1"
CURRENCY = "GTQ"
RATE = 150  # sats per GTQ
FEE_FRACTION = Decimal("0.05")  # the machine's commission, on the principal
PLATFORM_FEE = "0.30"  # the super user's share of every commission
CUSTOMER_FUNDS = 500_000  # sats minted into the demo customer wallet
LPS = [("lp_ana", "690.00"), ("lp_bruno", "250.00"), ("lp_carla", "60.00")]
CASH_OUTS = ["100.00", "250.00", "40.00"]
SETTLEMENT_WAIT = 15.0
DONE_STATES = {"processed", "errored", "rejected"}


class DemoError(Exception):
    pass


class Api:
    def __init__(self, base_url: str):
        self.http = httpx.Client(base_url=base_url, timeout=30.0)

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        key: str | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["X-Api-Key"] = key
        response = self.http.request(method, path, headers=headers, json=body)
        if response.status_code not in ok:
            raise DemoError(
                f"{method} {path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def login(self, username: str, password: str) -> str:
        data = self.call(
            "POST", "/api/v1/auth", body={"username": username, "password": password}
        )
        return data["access_token"]

    def wallets(self, token: str) -> list[dict]:
        return self.call("GET", "/api/v1/auth", token=token)["wallets"]

    def user_id(self, token: str) -> str:
        return self.call("GET", "/api/v1/auth", token=token)["id"]

    def new_wallet(self, token: str, name: str) -> dict:
        return self.call("POST", "/api/v1/wallet", token=token, body={"name": name})

    def rename_wallet(self, wallet: dict, name: str) -> None:
        self.call(
            "PATCH", "/api/v1/wallet", key=wallet["adminkey"], body={"name": name}
        )
        wallet["name"] = name

    def enable_extension(self, token: str) -> None:
        self.call("PUT", f"/api/v1/extension/{EXT}/enable", token=token)

    def balance(self, wallet: dict) -> int:
        return (
            self.call("GET", "/api/v1/wallet", key=wallet["inkey"])["balance"] // 1000
        )


# ---------------------------------------------------------------- start-up


def wait_for_server(
    api: Api, server_pid: int | None, limit: float = 180.0
) -> httpx.Response:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server_pid and not _alive(server_pid):
            raise DemoError("LNbits exited before it answered (see its log above)")
        try:
            return api.http.get("/api/v1/health", follow_redirects=False)
        except httpx.TransportError:
            time.sleep(0.5)
    raise DemoError(f"LNbits did not answer within {limit:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_state(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {}


def save_state(path: Path, state: dict) -> None:
    path.write_text(json.dumps(state, indent=2) + "\n")
    path.chmod(0o600)


# ---------------------------------------------------------------- seeding


def seed(api: Api, state_path: Path) -> dict:
    passwords = {name: secrets.token_urlsafe(9) for name in ["admin", "operator"]}
    passwords.update({name: secrets.token_urlsafe(9) for name, _ in LPS})
    state: dict[str, Any] = {"seeded": False, "passwords": passwords}
    save_state(state_path, state)

    print("demo: creating the super user 'admin' (first install)")
    pw = passwords["admin"]
    admin_token = api.call(
        "PUT",
        "/api/v1/auth/first_install",
        body={"username": "admin", "password": pw, "password_repeat": pw},
    )["access_token"]
    api.enable_extension(admin_token)
    admin_wallets = api.wallets(admin_token)
    fee_wallet = (admin_wallets or [api.new_wallet(admin_token, "Platform fees")])[0]
    api.rename_wallet(fee_wallet, "Platform fees")
    customer = api.new_wallet(admin_token, "ATM customers (demo)")
    api.call(
        "PUT",
        "/users/api/v1/balance",
        token=admin_token,
        body={"id": customer["id"], "amount": CUSTOMER_FUNDS},
    )
    api.call(
        "PUT",
        f"{API}/super/config",
        key=fee_wallet["adminkey"],
        body={"super_fee_fraction": PLATFORM_FEE, "fee_wallet_id": fee_wallet["id"]},
    )

    print("demo: creating the operator, the machine and the commission split")
    operator_token = register(api, "operator", passwords["operator"])
    machine_wallet = api.wallets(operator_token)[0]
    api.rename_wallet(machine_wallet, "ATM Zona 1 (machine)")
    commission = api.new_wallet(operator_token, "Commission")
    machine = api.call(
        "POST",
        f"{API}/machines",
        key=machine_wallet["adminkey"],
        body={
            "name": "ATM Zona 1",
            "wallet_id": machine_wallet["id"],
            "fiat_currency": CURRENCY,
        },
    )
    api.call(
        "PUT",
        f"{API}/commission/splits",
        key=machine_wallet["adminkey"],
        body={
            "machine_id": None,
            "legs": [
                {"target": commission["id"], "percent": "100", "label": "operator"}
            ],
        },
    )
    state["machine_id"] = machine["id"]

    for name, amount in LPS:
        print(f"demo: LP {name}: preferences, enrolment, {amount} {CURRENCY} deposit")
        add_lp(api, name, passwords[name], amount, machine, machine_wallet)

    play_cash_outs(api, machine_wallet, customer)
    state["seeded"] = True
    save_state(state_path, state)
    return state


def register(api: Api, username: str, password: str) -> str:
    token = api.call(
        "POST",
        "/api/v1/auth/register",
        body={"username": username, "password": password, "password_repeat": password},
    )["access_token"]
    api.enable_extension(token)
    return token


def add_lp(
    api: Api,
    name: str,
    password: str,
    amount: str,
    machine: dict,
    operator_wallet: dict,
) -> None:
    token = register(api, name, password)
    wallet = api.wallets(token)[0]
    api.rename_wallet(wallet, "DCA sats")
    api.call(
        "PUT",
        f"{API}/lp",
        key=wallet["adminkey"],
        body={"wallet_id": wallet["id"], "dca_mode": "flow"},
    )

    def as_operator(path: str, body: Optional[dict] = None) -> dict:
        return api.call(
            "POST", f"{API}{path}", key=operator_wallet["adminkey"], body=body
        )

    client = as_operator(
        "/clients",
        {"machine_id": machine["id"], "user_id": api.user_id(token), "username": name},
    )
    deposit = as_operator(
        "/deposits",
        {
            "client_id": client["id"],
            "amount": amount,
            "notes": "cash handed over (demo)",
        },
    )
    as_operator(f"/deposits/{deposit['id']}/confirm")


def cash_out_extra(fiat: str) -> dict:
    principal = int(Decimal(fiat) * RATE)
    fee = int((principal * FEE_FRACTION).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return {
        "source": "bitspire",
        "type": "cash_out",
        "wire_sats": principal + fee,
        "principal_sats": principal,
        "fee_sats": fee,
        "fee_fraction": str(FEE_FRACTION),
        "fiat_amount": fiat,
        "currency": CURRENCY,
        "exchange_rate": str(RATE),
        "txid": f"demo-{uuid.uuid4().hex[:12]}",
    }


def play_cash_outs(api: Api, machine_wallet: dict, customer: dict) -> None:
    """A bitSpire cash-out: the customer's sats arrive on the machine wallet, over
    Lightning, as an invoice whose `extra` describes the transaction."""
    for fiat in CASH_OUTS:
        extra = cash_out_extra(fiat)
        invoice = api.call(
            "POST",
            "/api/v1/payments",
            key=machine_wallet["inkey"],
            body={
                "out": False,
                "amount": extra["wire_sats"],
                "memo": f"bitSpire cash-out {fiat} {CURRENCY}",
                "extra": extra,
            },
        )
        api.call(
            "POST",
            "/api/v1/payments",
            key=customer["adminkey"],
            body={"out": True, "bolt11": invoice["bolt11"]},
        )
        print(
            f"demo: ATM cash-out {fiat} {CURRENCY}: {extra['wire_sats']} sats paid to the"
            f" machine (principal {extra['principal_sats']} + fee {extra['fee_sats']}),"
            f" txid {extra['txid']}"
        )


# ---------------------------------------------------------------- report


def settlements_report(api: Api, machine_wallet: dict, expected: int) -> list[str]:
    """Poll GET /settlements (up to SETTLEMENT_WAIT s) until every settlement is done."""
    path = f"{API}/settlements"
    deadline = time.monotonic() + SETTLEMENT_WAIT
    while True:
        response = api.http.get(path, headers={"X-Api-Key": machine_wallet["inkey"]})
        if response.status_code == 404 and response.json().get("detail") == "Not Found":
            wait_until_quiet(api, machine_wallet, deadline)
            return [
                f"Settlements: the extension has no settlements API yet (GET {path} is"
                " 404). The cash-outs were played; the balances below show what the"
                " extension did with them."
            ]
        if response.status_code != 200:
            return [
                f"Settlements: GET {path} answered {response.status_code}: {response.text[:300]}"
            ]
        data = response.json()
        rows: list[dict] = data if isinstance(data, list) else data.get("data", [])
        settled = [r for r in rows if r.get("status") in DONE_STATES]
        complete = len(settled) >= expected and len(settled) == len(rows)
        if complete or time.monotonic() > deadline:
            return settlement_table(rows, complete)
        time.sleep(1)


def wait_until_quiet(api: Api, wallet: dict, deadline: float) -> None:
    """Without a settlements API: wait until the machine wallet stops moving."""
    last, steady = api.balance(wallet), 0
    while steady < 3 and time.monotonic() < deadline:
        time.sleep(1)
        now = api.balance(wallet)
        steady = steady + 1 if now == last else 0
        last = now


def settlement_table(rows: list[dict], complete: bool) -> list[str]:
    columns = [
        ("external_id", "txid"),
        ("tx_type", "type"),
        ("status", "status"),
        ("fiat_amount", "fiat"),
        ("wire_sats", "wire"),
        ("principal_sats", "principal"),
        ("fee_sats", "fee"),
        ("platform_fee_sats", "platform"),
        ("operator_fee_sats", "operator"),
    ]
    if not rows:
        return ["Settlements: none yet (the distribution engine has not recorded any)."]
    table = [[title for _, title in columns]]
    table += [
        ["" if r.get(key) is None else str(r.get(key)) for key, _ in columns]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    waited = "" if complete else f" (not all done after {SETTLEMENT_WAIT:.0f} s)"
    lines = [f"Settlements ({len(rows)}){waited}:"]
    for line in table:
        lines.append(
            "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line))
        )
    errors = [
        f"  {r.get('external_id')}: {r.get('error')}" for r in rows if r.get("error")
    ]
    return lines + errors


def report(api: Api, base_url: str, state: dict) -> None:
    passwords = state["passwords"]
    operator_token = api.login("operator", passwords["operator"])
    operator_wallets = api.wallets(operator_token)
    machines = api.call("GET", f"{API}/machines", key=operator_wallets[0]["inkey"])
    machine_wallet = next(
        (
            w
            for w in operator_wallets
            if machines and w["id"] == machines[0]["wallet_id"]
        ),
        operator_wallets[0],
    )
    lines = settlements_report(api, machine_wallet, len(CASH_OUTS))
    lines.append("")
    lines.append("Wallet balances (sats):")
    for wallet in api.wallets(api.login("admin", passwords["admin"])):
        lines.append(f"  admin     {wallet['name']:<24} {api.balance(wallet):>9}")
    for wallet in operator_wallets:
        lines.append(f"  operator  {wallet['name']:<24} {api.balance(wallet):>9}")
    for name, _ in LPS:
        for wallet in api.wallets(api.login(name, passwords[name])):
            lines.append(f"  {name:<9} {wallet['name']:<24} {api.balance(wallet):>9}")
    for line in lines:
        print(line)
    print_logins(base_url, state)


def print_logins(base_url: str, state: dict) -> None:
    passwords = state["passwords"]
    deposits = dict(LPS)
    rule = "=" * 78
    print(rule)
    print(f" Sat Machine Admin demo:  {base_url}/{EXT}/")
    print(f" (log in at {base_url}/ first; then open the extension URL above)")
    print()
    print(f"   {'role':<11} {'username':<10} password")
    print(f"   {'super user':<11} {'admin':<10} {passwords['admin']}")
    print(f"   {'operator':<11} {'operator':<10} {passwords['operator']}")
    for name, _ in LPS:
        note = f"(LP, {deposits[name]} {CURRENCY} deposited)"
        print(f"   {'LP':<11} {name:<10} {passwords[name]}   {note}")
    print()
    print(
        " Data: ./demo-data (logins in demo-data/demo.json); `scripts/run --fresh` starts over."
    )
    print(" Ctrl-C stops the server.")
    print(rule, flush=True)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--state", default="demo-data/demo.json", type=Path)
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args()
    base_url = args.url.rstrip("/")
    api = Api(base_url)
    try:
        first = wait_for_server(api, args.server_pid)
        fresh = first.status_code == 307 and "first_install" in first.headers.get(
            "location", ""
        )
        state = load_state(args.state)
        if fresh:
            state = seed(api, args.state)
        elif not state.get("seeded"):
            raise DemoError(
                "this demo-data was not seeded by a run that finished (or was set up by"
                " hand); the server runs, but to get the demo users run `scripts/run --fresh`"
            )
        else:
            print("demo: demo-data is already seeded; nothing created")
        report(api, base_url, state)
    except DemoError as exc:
        print(f"demo: ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    except httpx.HTTPError as exc:
        print(
            f"demo: ERROR: talking to LNbits failed: {exc!r}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
