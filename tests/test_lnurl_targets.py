"""Commission to an LNURL-pay target, resolved with LNbits' own helper against a local
LNURL server (the internet is the one thing that cannot exist here)."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")


@pytest.fixture(autouse=True)
def private_lnurl_servers_allowed():
    """LNbits refuses LNURL servers on private addresses unless its operator allows
    them; our LNURL server lives on 127.0.0.1, so allow it, as that setting does."""
    from lnbits.settings import settings

    before = settings.lnbits_lnurl_allow_private_ips
    settings.lnbits_lnurl_allow_private_ips = True
    yield
    settings.lnbits_lnurl_allow_private_ips = before


class LnurlPayServer:
    """LUD-06 pay endpoint whose callback issues a real invoice on an LNbits wallet."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wallet_id: str):
        self.loop = loop
        self.wallet_id = wallet_id
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                url = urlparse(self.path)
                server.requests.append(self.path)
                base = f"http://127.0.0.1:{server.port}"
                if url.path == "/lnurlp/partner":
                    body = {
                        "tag": "payRequest",
                        "callback": f"{base}/lnurlp/partner/callback",
                        "minSendable": 1_000,
                        "maxSendable": 100_000_000,
                        "metadata": json.dumps([["text/plain", "partner commission"]]),
                    }
                elif url.path == "/lnurlp/partner/callback":
                    amount_msat = int(parse_qs(url.query)["amount"][0])
                    future = asyncio.run_coroutine_threadsafe(
                        server.invoice(amount_msat), server.loop
                    )
                    body = {"pr": future.result(timeout=10), "routes": []}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    async def invoice(self, amount_msat: int) -> str:
        from lnaddress_host import invoice_on

        return await invoice_on(self.wallet_id, amount_msat, "partner")

    @property
    def lnurl(self) -> str:
        import lnurl

        return str(lnurl.encode(f"http://127.0.0.1:{self.port}/lnurlp/partner").bech32)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def _partner_split_cash_out(factory, operator, machine, target, kind):
    """A 10.00 GTQ cash-out (1,500 sats principal, 500 commission) at a machine whose
    commission goes 40 % to `target` (saved as `kind`) and 60 % to the operator's
    own wallet, run through the engine: (settlement, legs by label, own, lp)."""
    from satmachineadmin import crud

    own = await factory.wallet(operator, "own")
    rules = await factory.splits(
        operator,
        [
            {"target": target, "percent": "40", "label": "partner"},
            {"target": own.id, "percent": "60"},
        ],
        machine["id"],
    )
    assert [leg["target_kind"] for leg in rules["legs"]] == [kind, "wallet"]
    lp = await factory.lp()
    await factory.enrol(operator, machine, lp, deposit="100.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 500)
    settlement = await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    settlement = await crud.get_settlement(settlement.id)
    legs = {leg.label: leg for leg in await crud.list_settlement_legs(settlement.id)}
    return settlement, legs, own, lp


async def test_commission_to_an_lnurl_target_is_paid_through_lnurl_pay(
    factory, super_user
):
    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    partner = await factory.user()
    server = LnurlPayServer(asyncio.get_running_loop(), partner.wallet.id)
    try:
        target = server.lnurl
        assert target.lower().startswith("lnurl1")
        settlement, legs, own, _ = await _partner_split_cash_out(
            factory, operator, machine, target, "lnurl"
        )
    finally:
        server.close()

    assert settlement.status == "processed", settlement.error
    assert legs["partner"].destination_kind == "lnurl"
    assert legs["partner"].status == "completed"
    assert legs["partner"].amount_sats == 200
    assert await factory.balance(partner.wallet) == 200
    assert await factory.balance(own) == 300
    assert any("callback?amount=200000" in path for path in server.requests)


async def test_unreachable_lnurl_target_fails_the_leg_and_errors_the_settlement(
    factory, super_user
):
    import lnurl

    from satmachineadmin import crud

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    dead = str(lnurl.encode("http://127.0.0.1:9/lnurlp/nobody").bech32)
    await factory.splits(operator, [{"target": dead, "percent": "100"}], machine["id"])
    lp = await factory.lp()
    await factory.enrol(operator, machine, lp, deposit="100.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 500)
    settlement = await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "errored"
    legs = await crud.list_settlement_legs(settlement.id)
    commission = next(leg for leg in legs if leg.leg_type == "operator_split")
    assert commission.status == "failed"
    assert "could not get an invoice" in commission.error
    # The LP's leg does not wait for the broken partner: it is paid.
    assert await factory.balance(lp.wallet) == 1_500
    # Retrying later never pays the LP twice.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET next_attempt_at = 0 WHERE id = :id",
        {"id": settlement.id},
    )
    await factory.run_engine()
    assert await factory.balance(lp.wallet) == 1_500
    assert await factory.balance(machine["wallet"]) == 500


@pytest.fixture
async def lnaddress_host(monkeypatch):
    from lnaddress_host import start_host

    host = start_host(asyncio.get_running_loop(), monkeypatch)
    if isinstance(host, str):
        pytest.skip(host)
    yield host
    host.close()


async def test_autoforward_to_a_lightning_address_lands_there_once(
    factory, super_user, lnaddress_host
):
    """The LP's principal lands in their LNbits wallet, then goes on, through LNbits'
    own LNURL helper over HTTPS, to their Lightning address: once, all of it but
    LNbits' routing-fee reserve (1 % here), which stays in the LP's wallet
    (docs/money.md, "Fees of payments that leave LNbits")."""
    from lnbits.core.crud import get_payments

    from satmachineadmin import crud

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    elsewhere = await factory.user()  # where alice keeps her sats
    address = lnaddress_host.register("alice", elsewhere.wallet.id)
    lp = await factory.lp(
        autoforward_enabled=True, autoforward_ln_address=address.upper()
    )
    client = await factory.enrol(operator, machine, lp, deposit="50.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000)
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    assert (await crud.get_settlement(settlement.id)).status == "processed"
    legs = await crud.list_settlement_legs(settlement.id)
    assert sorted(leg.leg_type for leg in legs) == ["autoforward", "dca"]
    dca = next(leg for leg in legs if leg.leg_type == "dca")
    forward = next(leg for leg in legs if leg.leg_type == "autoforward")
    assert (dca.status, dca.amount_sats, dca.destination) == (
        "completed",
        1_500,
        lp.wallet.id,
    )
    assert (forward.status, forward.amount_sats, forward.error) == (
        "completed",
        1_485,
        None,
    )
    assert (forward.sent_sats, forward.fee_msat) == (1_485, 0)
    assert forward.parent_leg_id == dca.id
    assert forward.source_wallet_id == lp.wallet.id
    assert (forward.destination_kind, forward.destination) == ("lnaddress", address)
    assert lnaddress_host.callbacks("alice") == [1_485_000]
    assert await factory.balance(lp.wallet) == 15
    assert await factory.balance(elsewhere.wallet) == 1_485
    # The forward is not a purchase: the LP's balance counts the principal once.
    balance = await factory.balance_of(operator, client["id"])
    assert (balance["remaining_balance"], balance["total_sats"]) == ("40.00", 1_500)
    out_of_lp = [
        p
        for p in await get_payments(wallet_id=lp.wallet.id, outgoing=True)
        if p.success
    ]
    assert [(p.payment_hash, -p.amount) for p in out_of_lp] == [
        (forward.payment_hash, 1_485_000)
    ]

    # Another engine pass neither forwards again nor pays the LP again.
    await factory.run_engine()
    assert lnaddress_host.callbacks("alice") == [1_485_000]
    assert await factory.balance(elsewhere.wallet) == 1_485
    assert await factory.balance(lp.wallet) == 15
    assert len(await crud.list_settlement_legs(settlement.id)) == 2


async def test_commission_to_a_lightning_address_is_paid_through_it(
    factory, super_user, lnaddress_host
):
    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    partner = await factory.user()
    address = lnaddress_host.register("partner", partner.wallet.id)
    settlement, legs, own, lp = await _partner_split_cash_out(
        factory, operator, machine, address, "lnaddress"
    )

    assert settlement.status == "processed", settlement.error
    assert (legs["partner"].destination_kind, legs["partner"].destination) == (
        "lnaddress",
        address,
    )
    assert (legs["partner"].status, legs["partner"].amount_sats) == ("completed", 200)
    assert lnaddress_host.callbacks("partner") == [200_000]
    assert await factory.balance(partner.wallet) == 200
    assert await factory.balance(own) == 300
    assert await factory.balance(lp.wallet) == 1_500
