"""The browser tests' LNbits server: start it, seed it over HTTP (see conftest.py)."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHROMIUM = os.environ.get("SATMACHINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EXT = "satmachineadmin"
API = f"/{EXT}/api/v1"
SATS_PER_UNIT = 150  # the fixed BTC price: 150 sats per unit of every currency
CUSTOMER_FUNDS = 1_000_000
COMMISSION_FUNDS = 50_000
PLATFORM_FEE = "0.30"
PASSWORD = "browser-secret-1"

LAUNCHER = f"""
import sys
import uvicorn
import lnbits.utils.exchange_rates as rates

async def fixed_btc_price(currency: str) -> float:
    return 100_000_000 / {SATS_PER_UNIT}

rates.btc_price = fixed_btc_price
sys.exit(uvicorn.main())
"""


def skip_reason() -> Optional[str]:
    wanted = os.environ.get("SATMACHINE_BROWSER_TESTS")
    if wanted == "0":
        return "browser tests switched off (SATMACHINE_BROWSER_TESTS=0)"
    if importlib.util.find_spec("playwright") is None:
        return "browser tests need the playwright package (pip install -r requirements-dev.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium)"
        )
    if os.environ.get("SATMACHINE_TEST_DB", "sqlite") != "sqlite" and wanted != "1":
        return (
            "browser tests run once, in the SQLite pass (their LNbits server is a"
            " separate SQLite instance); SATMACHINE_BROWSER_TESTS=1 runs them here too"
        )
    return None


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Account:
    username: str
    password: str
    token: str
    id: str
    wallets: list[dict]

    @property
    def wallet(self) -> dict:
        return self.wallets[0]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    accounts: dict[str, Account] = field(default_factory=dict)
    customer: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # handed from one test to the next

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_server(runtime: Path, port: int) -> tuple[subprocess.Popen, Path]:
    (runtime / "extensions").mkdir()
    (runtime / "extensions" / EXT).symlink_to(REPO)
    # the LP-facing companion, beside it (tests/browser/test_companion_page.py)
    (runtime / "extensions" / "satmachineclient").symlink_to(REPO / "companion")
    spec = importlib.util.find_spec("lnbits")
    assert spec and spec.submodule_search_locations
    (runtime / "lnbits").symlink_to(next(iter(spec.submodule_search_locations)))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LNBITS_", "SATMACHINE_"))
        and k not in ("SUPER_USER", "FIRST_INSTALL_TOKEN")
    }
    env.update(
        {
            "LNBITS_DATA_FOLDER": str(runtime / "data"),
            "LNBITS_EXTENSIONS_PATH": str(runtime),
            "LNBITS_ADMIN_UI": "true",
            "AUTH_HTTPS_ONLY": "false",
            "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
            "LNBITS_EXTENSIONS_DEFAULT_INSTALL": "",
            "LNBITS_RATE_LIMIT_NO": "1000000",
            "LNBITS_RESERVE_FEE_MIN": "0",
            "LNBITS_BASEURL": f"http://127.0.0.1:{port}/",
            "SATMACHINE_ENGINE_AUTORUN": "1",
            # alerts and live updates within seconds (test_browser_pages_live.py)
            "SATMACHINE_ALERT_DETECT_SECONDS": "2",
            "SATMACHINE_LIVE_SECONDS": "1",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "HOST": "127.0.0.1",
            "PORT": str(port),
        }
    )
    (runtime / "data").mkdir()
    log = runtime / "lnbits.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            LAUNCHER,
            "lnbits.__main__:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=runtime,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    return proc, log


def _die_with_parent() -> None:
    """In the child, before exec: if pytest dies (a CI timeout, a SIGKILL), the kernel
    sends the server SIGTERM, so no LNbits is left running (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def wait_until_up(http: Any, server: Server, limit: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"LNbits exited ({server.proc.returncode}):\n{server.log_tail()}"
            )
        try:
            http.get("/api/v1/health", follow_redirects=False)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError(
        f"LNbits did not answer within {limit:.0f} s:\n{server.log_tail()}"
    )


def call(
    http: Any,
    method: str,
    path: str,
    *,
    token: str = "",
    key: str = "",
    body: Any = None,
    ok: tuple = (200, 201),
) -> Any:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["X-Api-Key"] = key
    response = http.request(method, path, headers=headers, json=body)
    assert response.status_code in ok, (
        f"{method} {path}: {response.status_code} {response.text[:400]}"
    )
    return response.json() if response.content else None


def account(http: Any, username: str, token: str) -> Account:
    me = call(http, "GET", "/api/v1/auth", token=token)
    call(http, "PUT", f"/api/v1/extension/{EXT}/enable", token=token)
    return Account(username, PASSWORD, token, me["id"], me["wallets"])


def register(http: Any, username: str) -> Account:
    token = call(
        http,
        "POST",
        "/api/v1/auth/register",
        body={"username": username, "password": PASSWORD, "password_repeat": PASSWORD},
    )["access_token"]
    return account(http, username, token)


def new_wallet(http: Any, account: Account, name: str) -> dict:
    wallet = call(
        http, "POST", "/api/v1/wallet", token=account.token, body={"name": name}
    )
    account.wallets.append(wallet)
    return wallet


def seed(http: Any, server: Server) -> None:
    token = call(
        http,
        "PUT",
        "/api/v1/auth/first_install",
        body={"username": "admin", "password": PASSWORD, "password_repeat": PASSWORD},
    )["access_token"]
    admin = account(http, "admin", token)
    if not admin.wallets:
        new_wallet(http, admin, "Platform fees")
    server.customer = new_wallet(http, admin, "ATM customers")
    call(
        http,
        "PUT",
        "/users/api/v1/balance",
        token=token,
        body={"id": server.customer["id"], "amount": CUSTOMER_FUNDS},
    )
    call(
        http,
        "PUT",
        f"{API}/super/config",
        key=admin.wallet["adminkey"],
        body={"super_fee_fraction": PLATFORM_FEE, "fee_wallet_id": admin.wallet["id"]},
    )
    server.accounts["admin"] = admin

    for name in ("operator_one", "operator_two"):
        operator = register(http, name)
        call(
            http,
            "PATCH",
            "/api/v1/wallet",
            key=operator.wallet["adminkey"],
            body={"name": "ATM float"},
        )
        operator.wallet["name"] = "ATM float"
        commission = new_wallet(http, operator, "Commission")
        # float for settling small balances by hand
        call(
            http,
            "PUT",
            "/users/api/v1/balance",
            token=token,
            body={"id": commission["id"], "amount": COMMISSION_FUNDS},
        )
        server.accounts[name] = operator

    lp = register(http, "lp_one")
    call(
        http,
        "PUT",
        f"{API}/lp",
        key=lp.wallet["adminkey"],
        body={"wallet_id": lp.wallet["id"], "dca_mode": "flow"},
    )
    server.accounts["lp_one"] = lp
