"""Browser tests: a real LNbits 1.6.2 server in a subprocess, driven through Chromium.

The server is started the way scripts/run starts it (uvicorn serving
`lnbits.__main__:app`, FakeWallet, SQLite in a temporary data folder, this repository
linked in as the extension, a fixed BTC price) on a free port, with the distribution
engine running (SATMACHINE_ENGINE_AUTORUN=1). It is seeded over HTTP only: first
install (super user), registered operators and an LP with passwords, the extension
enabled for each, a customer wallet funded by the super user. The browser logs in
through LNbits' own login form.

Skipped, with the reason, when the `playwright` package or a Chromium binary is
missing (Debian: `apt-get install -y chromium`; no browser download is needed), and in
the PostgreSQL pass of scripts/test (the server they drive runs SQLite anyway; set
SATMACHINE_BROWSER_TESTS=1 to run them there too, =0 to skip them everywhere).

SATMACHINE_SCREENSHOTS=<folder> saves a screenshot of every page and tab there
(`SATMACHINE_SCREENSHOTS=docs/screenshots` makes the README's); unset, none is taken.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytest
from harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    HERE,
    REPO,
    Server,
    free_port,
    seed,
    skip_reason,
    start_server,
    wait_until_up,
)


def pytest_collection_modifyitems(config: Any, items: list) -> None:
    reason = skip_reason()
    if not reason:
        return
    marker = pytest.mark.skip(reason=reason)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """A failed browser test shows the end of the LNbits server's log."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("server")
    if report.when == "call" and report.failed and isinstance(server, Server):
        report.sections.append(("LNbits server log (last lines)", server.log_tail(40)))


@pytest.fixture(scope="session")
def server() -> Any:
    import httpx

    runtime = Path(tempfile.mkdtemp(prefix="satmachine-browser-"))
    port = free_port()
    proc, log = start_server(runtime, port)
    srv = Server(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    try:
        with httpx.Client(base_url=srv.url, timeout=30.0) as http:
            wait_until_up(http, srv)
            seed(http, srv)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="session")
def http(server: Server) -> Any:
    import httpx

    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
async def browser() -> Any:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
async def sessions(browser: Any, server: Server) -> Any:
    from ui import Sessions

    logged_in = Sessions(browser, server.url)
    yield logged_in
    await logged_in.close()


@pytest.fixture(scope="session")
def shots_dir() -> Optional[Path]:
    folder = os.environ.get("SATMACHINE_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    if not path.is_absolute():
        path = REPO / path
    path.mkdir(parents=True, exist_ok=True)
    return path
