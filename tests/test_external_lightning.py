"""Sats that leave LNbits (#13): payments to another Lightning node, as they really go.

Two real LNbits processes (tests/two_nodes.py): A, the server under test, whose
funding source is LNbits' own LNbitsWallet pointed at a wallet on B; B, FakeWallet,
holds the payees (a commission partner, the LPs' Lightning addresses), reached through
a local LNURL-pay / Lightning-address host that issues invoices on B. A's payments to
them are external: LNbits A reserves the routing fee, asks its node (B), and reports
success, failure, or pending when B does not answer within LNbits' wait (5 s).

What is checked, from both LNbits' own books and the extension's:
- a leg is `completed` only when LNbits reports the payment succeeded; a pending one
  stays `pending` and in flight (visible in /legs, /legs.csv and /health), is asked
  about again, and completes or fails as LNbits later reports;
- a fresh invoice only after LNbits reports the old payment failed: never while it is
  pending, never because its invoice expired;
- every payee on B is paid exactly once, each leg records what it sent and the fee.

SATMACHINE_EXTERNAL_ROUNDS (default 1) repeats the fault scenarios that many times.
"""

import os
import time
import uuid
from collections import Counter
from typing import Any, Optional

import pytest
from two_nodes import API, TwoNodes, wait_for

RATE = 150  # sats per GTQ: the fixed BTC price A runs with
ROUNDS = int(os.environ.get("SATMACHINE_EXTERNAL_ROUNDS", "1"))
PENDING_RECHECK_SECONDS = 2
WAIT = 90.0


@pytest.fixture(scope="module")
def nodes(request: pytest.FixtureRequest):
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        pytest.skip("the Lightning-address host binds port 443, which needs root")
    try:
        two = TwoNodes(
            a_env={
                "SATMACHINE_PENDING_RECHECK_SECONDS": str(PENDING_RECHECK_SECONDS),
                "SATMACHINE_LEASE_SECONDS": "10",
                "SATMACHINE_SCHEDULER_SECONDS": "2",
            }
        )
    except PermissionError:
        pytest.skip("binding port 443 for the Lightning-address host needs root")
    failed_before = request.session.testsfailed
    try:
        yield two
    finally:
        failed = request.session.testsfailed > failed_before
        if failed:
            print(
                f"\nA log tail:\n{two.a.tail(80)}\nB log tail:\n{two.b.tail(30)}\n"
                f"(both logs and databases kept in {two.root})"
            )
        two.close(keep=failed)


@pytest.fixture
def net(nodes: TwoNodes):
    nodes.heal()
    yield nodes
    nodes.heal()


class World:
    """An operator with a machine on A: a commission partner on B (a Lightning
    address, 40 % of the operator's share), the rest to the operator's own wallet on
    A, one flow-mode LP (optionally forwarding to a Lightning address on B), and an
    ATM customer."""

    def __init__(
        self,
        net: TwoNodes,
        *,
        float_sats: int = 1_000,
        partner: bool = True,
        autoforward: bool = False,
        deposit: str = "100.00",
    ):
        self.net = net
        a = self.a = net.api_a
        self.b = net.api_b
        tag = uuid.uuid4().hex[:8]
        self.operator_id, self.machine_wallet = a.user()
        self.own = a.wallet(self.operator_id, "own")
        self.machine = a.call(
            "POST",
            f"{API}/machines",
            key=self.machine_wallet["adminkey"],
            body={
                "name": f"ATM {tag}",
                "wallet_id": self.machine_wallet["id"],
                "fiat_currency": "GTQ",
            },
        )
        if float_sats:
            a.mint(self.machine_wallet, float_sats)
        self.float_sats = float_sats
        self.partner_name = f"partner{tag}"
        self.partner_wallet: Optional[dict] = None
        legs = [{"target": self.own["id"], "percent": "100"}]
        if partner:
            self.partner_wallet, address = net.payee(self.partner_name)
            legs = [
                {"target": address, "percent": "40", "label": "partner"},
                {"target": self.own["id"], "percent": "60", "label": "own"},
            ]
        a.call(
            "PUT",
            f"{API}/commission/splits",
            key=self.machine_wallet["adminkey"],
            body={"machine_id": self.machine["id"], "legs": legs},
        )
        self.lp_name = f"lp{tag}"
        self.lp_user, self.lp_wallet = a.user()
        prefs: dict[str, Any] = {"wallet_id": self.lp_wallet["id"], "dca_mode": "flow"}
        self.forward_wallet: Optional[dict] = None
        if autoforward:
            self.forward_wallet, address = net.payee(self.lp_name)
            prefs.update(autoforward_enabled=True, autoforward_ln_address=address)
        a.call("PUT", f"{API}/lp", key=self.lp_wallet["adminkey"], body=prefs)
        self.client = a.call(
            "POST",
            f"{API}/clients",
            key=self.machine_wallet["adminkey"],
            body={
                "machine_id": self.machine["id"],
                "user_id": self.lp_user,
                "username": self.lp_name,
            },
        )
        deposit_row = a.call(
            "POST",
            f"{API}/deposits",
            key=self.machine_wallet["adminkey"],
            body={"client_id": self.client["id"], "amount": deposit},
        )
        a.call(
            "POST",
            f"{API}/deposits/{deposit_row['id']}/confirm",
            key=self.machine_wallet["adminkey"],
        )
        _, self.customer = a.user()
        a.mint(self.customer, 1_000_000)
        self.wires = 0

    @property
    def key(self) -> str:
        return self.machine_wallet["inkey"]

    @property
    def admin_key(self) -> str:
        return self.machine_wallet["adminkey"]

    def cash_out(
        self,
        fiat: str = "10.00",
        fee_percent: int = 25,
        before_paying: Optional[Any] = None,
    ) -> dict:
        """A bitSpire cash-out into the machine wallet; the settlement it lands.
        `before_paying` runs between the invoice (A asks its node, B, for it) and
        the customer's payment (inside A)."""
        principal = int(float(fiat) * RATE)
        fee = principal * fee_percent // 100
        extra = {
            "source": "bitspire",
            "type": "cash_out",
            "wire_sats": principal + fee,
            "principal_sats": principal,
            "fee_sats": fee,
            "fiat_amount": fiat,
            "currency": "GTQ",
            "exchange_rate": str(RATE),
            "txid": uuid.uuid4().hex,
        }
        invoice = self.a.call(
            "POST",
            "/api/v1/payments",
            key=self.machine_wallet["inkey"],
            body={
                "out": False,
                "amount": principal + fee,
                "memo": "bitSpire cash-out",
                "extra": extra,
            },
        )
        if before_paying is not None:
            before_paying()
        self.a.call(
            "POST",
            "/api/v1/payments",
            key=self.customer["adminkey"],
            body={"out": True, "bolt11": invoice["bolt11"]},
        )
        self.wires += principal + fee
        return wait_for(
            lambda: next(
                (
                    s
                    for s in self.a.call(
                        "GET", f"{API}/settlements", key=self.key, params={"limit": 50}
                    )
                    if s.get("external_id") == extra["txid"]
                ),
                None,
            ),
            WAIT,
            "the cash-out to land as a settlement",
        )

    def legs(self, **params: Any) -> list[dict]:
        return self.a.call(
            "GET", f"{API}/legs", key=self.key, params={"limit": 1000, **params}
        )

    def planned_leg(self, settlement: dict, label: str) -> Optional[dict]:
        """The settlement's leg of that label; None while the engine has not
        planned the settlement yet."""
        found = [
            leg
            for leg in self.legs(settlement_id=settlement["id"])
            if leg["label"] == label
        ]
        assert len(found) <= 1, found
        return found[0] if found else None

    def leg(self, settlement: dict, label: str) -> dict:
        found = self.planned_leg(settlement, label)
        assert found is not None, f"no {label} leg of {settlement['id']}"
        return found

    def settlement(self, settlement: dict) -> dict:
        return self.a.call("GET", f"{API}/settlements/{settlement['id']}", key=self.key)

    def wait_leg(self, settlement: dict, label: str, predicate: Any, what: str) -> dict:
        return wait_for(
            lambda: (lambda leg: leg if leg and predicate(leg) else None)(
                self.planned_leg(settlement, label)
            ),
            WAIT,
            what,
        )

    def wait_processed(self, settlement: dict) -> dict:
        return wait_for(
            lambda: (lambda s: s if s["status"] == "processed" else None)(
                self.settlement(settlement)
            ),
            WAIT,
            "the settlement to be processed",
        )

    def received_on_b(self, wallet: Optional[dict]) -> list[int]:
        """msat of every successful incoming payment of a payee wallet on B."""
        assert wallet is not None
        return [
            p["amount"]
            for p in self.b.payments(wallet)
            if p["amount"] > 0 and p["status"] == "success"
        ]

    def outgoing_on_a(self, wallet: dict, payment_hash: str) -> list[dict]:
        return [
            p
            for p in self.a.payments(wallet)
            if p["amount"] < 0 and p["payment_hash"] == payment_hash
        ]

    def health(self) -> dict:
        return self.a.call("GET", f"{API}/health", key=self.key)

    def csv(self, settlement: dict) -> str:
        return self.a.call(
            "GET",
            f"{API}/legs.csv",
            key=self.key,
            params={"settlement_id": settlement["id"]},
        )

    def check_conservation(self) -> None:
        """Machine wallet = float + wires - what its completed legs sent - their fees;
        every payee on B holds exactly what its completed legs sent."""
        legs = self.legs()
        machine_legs = [
            leg
            for leg in legs
            if leg["status"] == "completed" and leg["leg_type"] != "autoforward"
        ]
        sent = sum(leg["sent_sats"] or 0 for leg in machine_legs)
        fees = sum(leg["fee_msat"] or 0 for leg in machine_legs)
        assert all(leg["sent_sats"] == leg["amount_sats"] for leg in machine_legs), (
            machine_legs
        )
        balance = self.a.balance_msat(self.machine_wallet)
        assert balance == (self.float_sats + self.wires - sent) * 1000 - fees, (
            balance,
            self.float_sats,
            self.wires,
            sent,
            fees,
        )
        if self.partner_wallet is not None:
            partner = [
                leg for leg in machine_legs if leg["destination_kind"] == "lnaddress"
            ]
            assert sorted(self.received_on_b(self.partner_wallet)) == sorted(
                leg["sent_sats"] * 1000 for leg in partner
            )


def _rounds() -> list[int]:
    return list(range(ROUNDS))


def test_a_pending_payment_completes_when_the_node_answers(net: TwoNodes):
    """B paused past LNbits' wait: the commission leg to B stays pending (in flight:
    shown by /legs, /legs.csv and /health), is asked about again without a second
    invoice or payment, and completes once B, resumed, has paid it: once."""
    world = World(net)
    net.stall_b_after_next_payment()
    settlement = world.cash_out()
    leg = world.wait_leg(
        settlement, "partner", lambda leg: leg["in_flight"], "the leg to be in flight"
    )
    assert leg["status"] == "pending"
    assert "in flight" in leg["error"]
    assert leg["sent_sats"] is None
    # The other legs do not wait for it.
    world.wait_leg(
        settlement, "own", lambda leg: leg["status"] == "completed", "the own leg"
    )
    health = world.health()
    assert health["legs_in_flight"] == 1
    assert health["oldest_in_flight_since"]
    csv_rows = world.csv(settlement).splitlines()
    assert "in_flight" in csv_rows[0]
    assert any(leg["id"] in row and ",pending," in row for row in csv_rows)
    # Several passes look at it while B says nothing: no new invoice, no new payment.
    time.sleep(2 * PENDING_RECHECK_SECONDS + 5)
    assert net.host.count(world.partner_name) == 1
    assert world.leg(settlement, "partner")["status"] == "pending"

    net.resume_b()
    leg = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "completed",
        "the leg to complete",
    )
    # B's 1 % routing fee: 1.5 sats, charged to the machine wallet to the msat.
    assert (leg["sent_sats"], leg["fee_msat"], leg["in_flight"]) == (150, 1_500, False)
    world.wait_processed(settlement)
    assert net.host.count(world.partner_name) == 1
    assert world.received_on_b(world.partner_wallet) == [150_000]
    outgoing = world.outgoing_on_a(world.machine_wallet, leg["payment_hash"])
    assert [p["status"] for p in outgoing] == ["success"]
    assert world.health()["legs_in_flight"] == 0
    world.check_conservation()


def test_a_pending_payment_that_fails_gets_a_fresh_invoice_then_pays_once(
    net: TwoNodes,
):
    """B paused past the wait on an invoice it cannot pay: pending first; when B,
    resumed, fails it, LNbits A reports the failure and only then is a fresh invoice
    fetched and paid: the partner is paid once."""
    world = World(net)
    net.host.next_invoice(world.partner_name, foreign=True)
    net.stall_b_after_next_payment()
    settlement = world.cash_out()
    first = world.wait_leg(
        settlement, "partner", lambda leg: leg["in_flight"], "the leg to be in flight"
    )
    time.sleep(PENDING_RECHECK_SECONDS + 1)
    assert net.host.count(world.partner_name) == 1

    net.resume_b()
    leg = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "completed",
        "the leg to complete on a fresh invoice",
    )
    assert leg["payment_hash"] != first["payment_hash"]
    assert net.host.count(world.partner_name) == 2
    assert leg["sent_sats"] == 150
    failed = world.a.call(
        "GET", f"/api/v1/payments/{first['payment_hash']}", key=world.key
    )
    assert (failed["paid"], failed["status"]) == (False, "failed")
    paid = world.outgoing_on_a(world.machine_wallet, leg["payment_hash"])
    assert [p["status"] for p in paid] == ["success"]
    world.wait_processed(settlement)
    assert world.received_on_b(world.partner_wallet) == [150_000]
    world.check_conservation()


def test_autoforward_leaves_lnbits_less_the_fee_reserve_once(net: TwoNodes):
    """The LP's 1,500 sats land in their wallet on A and go on to their Lightning
    address on B: 1,500 less LNbits' routing-fee reserve (max(2 sats, 1 %) = 15),
    since A's LNbits refuses an external payment of the whole wallet. The node
    charges 1 % of 1,485 = 14.85 sats; the 0.15 sat left of the reserve stays in the
    LP's wallet."""
    world = World(net, partner=False, autoforward=True)
    settlement = world.cash_out()
    world.wait_processed(settlement)
    forward = wait_for(
        lambda: next(
            (
                leg
                for leg in world.legs(settlement_id=settlement["id"])
                if leg["leg_type"] == "autoforward" and leg["status"] == "completed"
            ),
            None,
        ),
        WAIT,
        "the forward to complete",
    )
    dca = next(
        leg
        for leg in world.legs(settlement_id=settlement["id"])
        if leg["leg_type"] == "dca"
    )
    assert forward["amount_sats"] == forward["sent_sats"] == 1_485
    assert forward["fee_msat"] == 14_850
    assert "less 15 sats" in forward["memo"]
    assert world.received_on_b(world.forward_wallet) == [1_485_000]
    # The LP's wallet keeps the landed leg - what was sent - the fee, to the msat.
    assert world.a.balance_msat(world.lp_wallet) == 1_500_000 - 1_485_000 - 14_850
    assert net.host.count(world.lp_name) == 1
    assert dca["sent_sats"] == 1_500
    legs = world.legs(settlement_id=settlement["id"])
    assert [leg["leg_type"] for leg in legs].count("autoforward") == 1
    world.check_conservation()


def test_an_autoforward_in_flight_completes_once(net: TwoNodes):
    """The forward's payment is pending (B stalled after paying it): the forward
    stays in flight, the sweep asks about it without paying it again, and it
    completes once B answers."""
    world = World(net, partner=False, autoforward=True)
    net.stall_b_after_next_payment()
    payments_before = net.relay.payments_seen
    settlement = world.cash_out()

    def forward() -> Optional[dict]:
        return next(
            (
                leg
                for leg in world.legs(settlement_id=settlement["id"])
                if leg["leg_type"] == "autoforward"
            ),
            None,
        )

    wait_for(lambda: (forward() or {}).get("in_flight"), WAIT, "the forward in flight")
    # The settlement does not wait for its forwards.
    world.wait_processed(settlement)
    time.sleep(2 * PENDING_RECHECK_SECONDS + 2)  # sweeps ask, none pays again
    assert net.relay.payments_seen == payments_before + 1
    net.resume_b()
    done = wait_for(
        lambda: (lambda leg: leg if leg and leg["status"] == "completed" else None)(
            forward()
        ),
        WAIT,
        "the forward to complete",
    )
    assert (done["sent_sats"], done["fee_msat"]) == (1_485, 14_850)
    assert net.host.count(world.lp_name) == 1
    assert net.relay.payments_seen == payments_before + 1
    assert world.received_on_b(world.forward_wallet) == [1_485_000]
    assert world.a.balance_msat(world.lp_wallet) == 1_500_000 - 1_485_000 - 14_850


# ------------------------------------------------ faults


def _retry_when_errored(world: World, settlement: dict) -> None:
    """The operator's retry (what the backoff would do later), once it is errored."""
    wait_for(
        lambda: world.settlement(settlement)["status"] == "errored",
        WAIT,
        "the settlement to wait errored",
    )
    world.a.call(
        "POST", f"{API}/settlements/{settlement['id']}/retry", key=world.admin_key
    )


def test_node_refusing_connections_fails_the_leg_then_pays_it_once(net: TwoNodes):
    """A's node (B) refuses connections: the leg to B fails with the reason and
    nothing is sent (LNbits would record a payment its node never saw as pending
    for good); once B is back, the retry pays the same invoice, once."""
    world = World(net)
    settlement = world.cash_out(before_paying=net.relay.refuse)
    leg = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "failed",
        "the leg to fail",
    )
    assert "did not take the payment" in leg["error"]
    assert "nothing was sent" in leg["error"]
    assert world.outgoing_on_a(world.machine_wallet, leg["payment_hash"]) == []
    assert world.leg(settlement, "own")["status"] == "completed"

    net.relay.accept()
    _retry_when_errored(world, settlement)
    paid = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "completed",
        "the leg to complete after B is back",
    )
    assert paid["payment_hash"] == leg["payment_hash"]
    assert net.host.count(world.partner_name) == 1
    world.wait_processed(settlement)
    assert world.received_on_b(world.partner_wallet) == [150_000]
    world.check_conservation()


def test_node_answering_an_error_fails_the_leg_then_a_fresh_invoice_pays_once(
    net: TwoNodes,
):
    """B answers A's payment with an error (an invoice it cannot pay): LNbits
    reports the payment failed, the leg fails with B's reason; the retry fetches a
    fresh invoice (LNbits will not try a failed one again) and pays it, once."""
    world = World(net)
    net.host.next_invoice(world.partner_name, foreign=True)
    settlement = world.cash_out()
    failed = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "failed",
        "the leg to fail",
    )
    assert "Only internal invoices can be used" in failed["error"]
    _retry_when_errored(world, settlement)
    paid = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "completed",
        "the leg to complete on a fresh invoice",
    )
    assert paid["payment_hash"] != failed["payment_hash"]
    assert net.host.count(world.partner_name) == 2
    world.wait_processed(settlement)
    assert world.received_on_b(world.partner_wallet) == [150_000]
    world.check_conservation()


def test_an_invoice_expiring_while_its_payment_is_pending_is_not_paid_again(
    net: TwoNodes,
):
    """The partner's invoice expires while A's payment of it is pending: no fresh
    invoice, no second payment; the leg completes when B's answer comes through."""
    world = World(net)
    net.host.next_invoice(world.partner_name, expiry=8)
    net.stall_b_after_next_payment()
    payments_before = net.relay.payments_seen
    settlement = world.cash_out()
    leg = world.wait_leg(
        settlement, "partner", lambda leg: leg["in_flight"], "the leg to be in flight"
    )
    # The invoice (8 s, issued before LNbits' 5 s wait) expires; passes keep asking
    # LNbits about the payment meanwhile.
    time.sleep(4 + 2 * PENDING_RECHECK_SECONDS)
    # Expired for a while, asked about several times: still the one invoice.
    assert world.leg(settlement, "partner")["in_flight"]
    assert net.host.count(world.partner_name) == 1
    assert net.relay.payments_seen == payments_before + 1

    net.resume_b()
    done = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "completed",
        "the leg to complete",
    )
    assert done["payment_hash"] == leg["payment_hash"]
    world.wait_processed(settlement)
    assert net.host.count(world.partner_name) == 1
    assert world.received_on_b(world.partner_wallet) == [150_000]
    world.check_conservation()


@pytest.mark.parametrize("round_", _rounds())
def test_a_killed_during_an_external_payment_pays_nothing_twice(
    net: TwoNodes, round_: int
):
    """A is SIGKILLed while it waits for B's answer to a payment B has made: after
    the restart LNbits A learns the outcome from B, the leg completes, and nothing
    is paid twice (B received once, one invoice, one payment)."""
    world = World(net)
    net.stall_b_after_next_payment()
    payments_before = net.relay.payments_seen
    settlement = world.cash_out()
    wait_for(
        lambda: net.b.paused and net.relay.payments_seen > payments_before,
        WAIT,
        "B to have answered A's payment",
        every=0.05,
    )
    time.sleep(0.2 + round_ % 3)  # somewhere inside LNbits' 5 s wait
    net.a.kill()
    net.resume_b()
    assert world.received_on_b(world.partner_wallet) == [150_000]
    net.a.start()

    leg = world.wait_leg(
        settlement,
        "partner",
        lambda leg: leg["status"] == "completed",
        "the leg to complete after the restart",
    )
    world.wait_processed(settlement)
    assert leg["sent_sats"] == 150
    assert net.host.count(world.partner_name) == 1
    assert net.relay.payments_seen == payments_before + 1
    assert world.received_on_b(world.partner_wallet) == [150_000]
    outgoing = world.outgoing_on_a(world.machine_wallet, leg["payment_hash"])
    assert [p["status"] for p in outgoing] == ["success"]
    legs = world.legs(settlement_id=settlement["id"])
    assert Counter(leg["status"] for leg in legs) == Counter(completed=3)
    world.check_conservation()


# ------------------------------------------------ autoforward, in this process


@pytest.fixture
async def lnaddress_host(monkeypatch):
    import asyncio

    from lnaddress_host import start_host
    from lnbits.settings import settings

    host = start_host(asyncio.get_running_loop(), monkeypatch)
    if isinstance(host, str):
        pytest.skip(host)
    # The host lives on a loopback address, which LNbits refuses for LNURL unless
    # its operator allows private addresses, as this setting does.
    monkeypatch.setattr(settings, "lnbits_lnurl_allow_private_ips", True)
    yield host
    host.close()


async def _forwarding_lp(factory, host, mode: str = "flow", **prefs: Any):
    elsewhere = await factory.user()
    name = f"fwd{uuid.uuid4().hex[:8]}"
    address = host.register(name, elsewhere.wallet.id)
    lp = await factory.lp(
        mode=mode,
        autoforward_enabled=True,
        autoforward_ln_address=address,
        **prefs,
    )
    return lp, elsewhere, name


async def _forwards(parent_ids: list[str]) -> list:
    from satmachineadmin import crud

    return [
        leg
        for leg in await crud.list_legs(leg_type="autoforward", limit=10_000)
        if leg.parent_leg_id in parent_ids
    ]


@pytest.mark.usefixtures("drained_engine")
async def test_fixed_and_settlement_legs_are_forwarded_too_once(
    http, factory, super_user, lnaddress_host
):
    """Every leg that lands in an LP's wallet goes on: a fixed-mode slot and a
    balance settlement as well as DCA; each once, less the fee reserve."""
    from satmachineadmin import crud
    from satmachineadmin.engine import payouts

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], 100_000)
    funding = await factory.wallet(operator, "funding")
    await factory.fund(funding, 100_000)
    response = await http.put(
        f"{API}/machines/{machine['id']}/fixed-schedule",
        headers=operator.admin,
        json={"times": ["00:00"], "timezone": "UTC"},
    )
    assert response.status_code == 200, response.text
    lp, elsewhere, name = await _forwarding_lp(
        factory, lnaddress_host, mode="fixed", limit="10.00"
    )
    client = await factory.enrol(operator, machine, lp, deposit="50.00")

    response = await http.post(
        f"{API}/machines/{machine['id']}/fixed-run", headers=operator.admin
    )
    assert response.status_code == 200, response.text
    response = await http.post(
        f"{API}/clients/{client['id']}/settle",
        headers=operator.admin,
        json={
            "funding_wallet_id": funding.id,
            "amount_fiat": "5.00",
            "exchange_rate": "150",
        },
    )
    assert response.status_code == 201, response.text
    landed = await crud.list_legs(client_id=client["id"], limit=100)
    parents = {leg.leg_type: leg for leg in landed if leg.leg_type != "autoforward"}
    assert {k: (v.status, v.amount_sats) for k, v in parents.items()} == {
        "fixed": ("completed", 1_500),
        "settlement": ("completed", 750),
    }
    forwards = await _forwards([leg.id for leg in parents.values()])
    by_parent = {leg.parent_leg_id: leg for leg in forwards}
    assert len(forwards) == 2
    # 1 % of 1,500 = 15; 1 % of 750 = 7.5, held as 8 (whole sats, rounded up).
    assert (
        by_parent[parents["fixed"].id].status,
        by_parent[parents["fixed"].id].amount_sats,
    ) == ("completed", 1_485)
    assert (
        by_parent[parents["settlement"].id].status,
        by_parent[parents["settlement"].id].amount_sats,
    ) == ("completed", 742)
    assert sorted(lnaddress_host.callbacks(name)) == [742_000, 1_485_000]
    assert await factory.balance(elsewhere.wallet) == 1_485 + 742
    assert await factory.balance(lp.wallet) == 15 + 8

    # The scheduler, the sweep and a second manual run forward nothing more.
    await http.post(f"{API}/machines/{machine['id']}/fixed-run", headers=operator.admin)
    await payouts.forward_sweep()
    await payouts.retry_standalone_legs()
    assert len(await _forwards([leg.id for leg in parents.values()])) == 2
    assert len(lnaddress_host.callbacks(name)) == 2
    assert await factory.balance(elsewhere.wallet) == 1_485 + 742


@pytest.mark.usefixtures("drained_engine")
@pytest.mark.parametrize("point", ["before_forward", "after_forward_written"])
async def test_a_crash_between_a_dca_leg_and_its_forward_forwards_once(
    factory, super_user, lnaddress_host, point
):
    """Killed after the LP's leg landed, before its forward was written, or after it
    was written but before any invoice: after the restart it is forwarded, once."""
    from satmachineadmin import crud, distribution
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp, elsewhere, name = await _forwarding_lp(factory, lnaddress_host)
    await factory.enrol(operator, machine, lp, deposit="50.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 10_000)
    played = await factory.cash_out(machine, customer.wallet, "10.00", 1_500, 0)
    settlement = await factory.settlement_of(played["payment_hash"])

    crash_points[point] = 0
    with pytest.raises(EngineCrash):
        await distribution.run_due_settlements()
    dca = next(
        leg
        for leg in await crud.list_settlement_legs(settlement.id)
        if leg.leg_type == "dca"
    )
    assert dca.status == "completed"
    assert await factory.balance(lp.wallet) == 1_500
    assert lnaddress_host.callbacks(name) == []

    # The restart: the dead worker's claims run out; the engine takes over.
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET claimed_until = 0 "
        "WHERE id = :id AND status = 'processing'",
        {"id": settlement.id},
    )
    await crud.db.execute(
        "UPDATE satmachineadmin.legs SET claimed_until = NULL WHERE parent_leg_id = :id",
        {"id": dca.id},
    )
    await distribution.reconcile_open_legs()
    await distribution.run_due_settlements()
    forwards = await _forwards([dca.id])
    assert [(f.status, f.amount_sats) for f in forwards] == [("completed", 1_485)]
    assert lnaddress_host.callbacks(name) == [1_485_000]
    assert await factory.balance(elsewhere.wallet) == 1_485
    assert (await crud.get_settlement(settlement.id)).status == "processed"


@pytest.mark.usefixtures("drained_engine")
async def test_a_fixed_leg_whose_forward_a_crash_lost_is_forwarded_by_the_sweep(
    http, factory, super_user, lnaddress_host
):
    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode, payouts
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], 100_000)
    response = await http.put(
        f"{API}/machines/{machine['id']}/fixed-schedule",
        headers=operator.admin,
        json={"times": ["00:00"], "timezone": "UTC"},
    )
    assert response.status_code == 200, response.text
    lp, elsewhere, name = await _forwarding_lp(
        factory, lnaddress_host, mode="fixed", limit="10.00"
    )
    client = await factory.enrol(operator, machine, lp, deposit="50.00")
    row = await crud.get_machine(machine["id"])
    assert row
    crash_points["before_forward"] = 0
    with pytest.raises(EngineCrash):
        await fixed_mode.run_slot(row)
    (fixed,) = await crud.list_legs(client_id=client["id"], leg_type="fixed")
    assert fixed.status == "completed"
    # The next tick finds the slot paid: it pays nothing and writes no forward.
    await fixed_mode.run_slot(row)
    assert await _forwards([fixed.id]) == []

    await payouts.forward_sweep()
    forwards = await _forwards([fixed.id])
    assert [(f.status, f.amount_sats) for f in forwards] == [("completed", 1_485)]
    await payouts.forward_sweep()
    assert len(await _forwards([fixed.id])) == 1
    assert lnaddress_host.callbacks(name) == [1_485_000]
    assert await factory.balance(elsewhere.wallet) == 1_485


# ------------------------------------------------ the upgrade


async def test_m004_backfills_what_completed_legs_sent(app, tmp_path):
    """m004 on a database the version before wrote: completed legs sent their
    amount with no fee; open legs have sent nothing yet; none is in flight."""
    from test_migrations import OPERATOR, fresh_database

    from satmachineadmin import migrations
    from satmachineadmin.models import Leg

    async with fresh_database(tmp_path) as db:
        await migrations.m001_initial_schema(db)
        await migrations.m002_every_sat_held_by_the_database(db)
        for leg_id, status in (("done", "completed"), ("open", "pending")):
            leg = Leg(
                id=leg_id,
                idempotency_key=f"s:v0:{leg_id}",
                settlement_id="s",
                machine_id="m",
                operator_user_id=OPERATOR,
                leg_type="dca",
                status=status,
                amount_sats=1_500,
                created_at=1,
                updated_at=1,
            )
            values = leg.dict(exclude={"sent_sats", "fee_msat", "in_flight_since"})
            await db.execute(
                f"INSERT INTO satmachineadmin.legs ({', '.join(values)}) "
                f"VALUES ({', '.join(':' + k for k in values)})",
                values,
            )
        await migrations.m004_payments_that_leave_lnbits(db)
        rows = {
            row["id"]: (row["sent_sats"], row["fee_msat"], row["in_flight_since"])
            for row in await db.fetchall(
                "SELECT id, sent_sats, fee_msat, in_flight_since "
                "FROM satmachineadmin.legs"
            )
        }
        assert rows == {"done": (1_500, 0, None), "open": (None, None, None)}
