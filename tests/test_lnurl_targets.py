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
        from lnbits.core.services import create_invoice

        payment = await create_invoice(
            wallet_id=self.wallet_id,
            amount=amount_msat // 1000,
            memo="partner",
            internal=True,
        )
        return payment.bolt11

    @property
    def lnurl(self) -> str:
        import lnurl

        return str(lnurl.encode(f"http://127.0.0.1:{self.port}/lnurlp/partner").bech32)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_commission_to_an_lnurl_target_is_paid_through_lnurl_pay(
    factory, super_user
):
    from satmachineadmin import crud

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    partner = await factory.user()
    server = LnurlPayServer(asyncio.get_running_loop(), partner.wallet.id)
    try:
        target = server.lnurl
        assert target.lower().startswith("lnurl1")
        own = await factory.wallet(operator, "own")
        rules = await factory.splits(
            operator,
            [
                {"target": target, "percent": "40", "label": "partner"},
                {"target": own.id, "percent": "60"},
            ],
            machine["id"],
        )
        assert [leg["target_kind"] for leg in rules["legs"]] == ["lnurl", "wallet"]
        lp = await factory.lp()
        await factory.enrol(operator, machine, lp, deposit="100.00")
        customer = await factory.user()
        await factory.fund(customer.wallet, 100_000)
        played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 500)
        settlement = await factory.settlement_of(played["payment_hash"])
        await factory.run_engine()
    finally:
        server.close()

    settlement = await crud.get_settlement(settlement.id)
    assert settlement.status == "processed", settlement.error
    legs = {leg.label: leg for leg in await crud.list_settlement_legs(settlement.id)}
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
