"""The LP-facing companion `satmachineclient` (companion/, docs/companion.md), loaded
beside satmachineadmin in the same real LNbits.

An LP who enabled only the companion sees and sets their DCA while satmachineadmin is
admin-only (LNbits refuses its pages and API to them); nobody sees another's data.
"""

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

CLIENT = "/satmachineclient/api/v1"
ADMIN = "/satmachineadmin/api/v1"
READS = ["/overview", "/deposits", "/payouts", "/history", "/statement.csv"]


@contextmanager
def admin_only(*extensions: str, admins: tuple = ()) -> Iterator[None]:
    """LNbits' admin-extensions setting for the length of a test (and the users it
    counts as admins), restored after: the tests share one server."""
    from lnbits.settings import settings

    saved = (list(settings.lnbits_admin_extensions), list(settings.lnbits_admin_users))
    settings.lnbits_admin_extensions = [*saved[0], *extensions]
    settings.lnbits_admin_users = [*saved[1], *admins]
    try:
        yield
    finally:
        settings.lnbits_admin_extensions, settings.lnbits_admin_users = saved


async def companion_user(factory, wallets: int = 1):
    """A user who enabled the companion only."""
    from lnbits.core.services.users import update_user_extensions

    user = await factory.user(wallets=wallets, enable=False)
    await update_user_extensions(user.id, ["satmachineclient"])
    return user


async def enable_companion(user) -> None:
    from lnbits.core.services.users import update_user_extensions

    await update_user_extensions(user.id, ["satmachineadmin", "satmachineclient"])


async def funded_lp_story(http, factory, lp, operator):
    """The operator enrols the LP at a GTQ machine, 100.00 GTQ deposited and
    confirmed; a passer-by sells 30.00 GTQ (4,500 sats at 150 sats/GTQ)."""
    machine = await factory.machine(operator)
    client = await factory.enrol(operator, machine, lp, deposit="100.00")
    customer = await factory.user(enable=False)
    await factory.fund(customer.wallet, 10_000)
    played = await factory.cash_out(machine, customer.wallet, "30.00", 4500, 0)
    assert await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    return machine, client


async def test_lp_with_only_the_companion_while_satmachineadmin_is_admin_only(
    http, factory, super_user
):
    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    lp = await companion_user(factory)
    with admin_only("satmachineadmin", admins=(operator.id,)):
        # the operator extension refuses the LP, whatever they enabled
        refused = await http.get(f"{ADMIN}/lp", headers=lp.invoice)
        assert refused.status_code == 403, refused.text
        assert "satmachineadmin" in refused.json()["detail"]

        empty = await http.get(f"{CLIENT}/overview", headers=lp.invoice)
        assert empty.status_code == 200, empty.text
        assert empty.json() == {
            "preferences": None,
            "positions": [],
            "totals": {"sats_stacked": 0, "currencies": []},
        }

        prefs = {"wallet_id": lp.wallet.id, "dca_mode": "fixed"}
        bad = await http.put(f"{CLIENT}/preferences", headers=lp.admin, json=prefs)
        assert (bad.status_code, bad.json()["detail"]) == (
            400,
            "fixed_mode_daily_limit: required in fixed mode",
        )
        typo = await http.put(
            f"{CLIENT}/preferences",
            headers=lp.admin,
            json={**prefs, "fixed_mode_daily_limit": "abc", "colour": "red"},
        )
        assert typo.status_code == 400, typo.text
        assert "colour: is not a known field" in typo.json()["detail"]
        assert "fixed_mode_daily_limit" in typo.json()["detail"]
        not_json_object = await http.put(
            f"{CLIENT}/preferences", headers=lp.admin, json=["wallet_id"]
        )
        assert not_json_object.status_code == 400, not_json_object.text
        saved = await http.put(
            f"{CLIENT}/preferences",
            headers=lp.admin,
            json={
                "wallet_id": lp.wallet.id,
                "dca_mode": "flow",
                "autoforward_enabled": False,
            },
        )
        assert saved.status_code == 200, saved.text
        assert (saved.json()["user_id"], saved.json()["dca_mode"]) == (lp.id, "flow")

        # the operator (an LNbits admin here) runs the ATM as usual
        machine, client = await funded_lp_story(http, factory, lp, operator)

        overview = (await http.get(f"{CLIENT}/overview", headers=lp.invoice)).json()
        assert overview["preferences"]["wallet_id"] == lp.wallet.id
        [position] = overview["positions"]
        assert {k: position[k] for k in position if k != "operator_name"} == {
            "client_id": client["id"],
            "machine_id": machine["id"],
            "machine_name": machine["name"],
            "currency": "GTQ",
            "status": "active",
            "dca_mode": "flow",
            "total_deposits": "100.00",
            "pending_deposits": "0.00",
            "total_distributed": "30.00",
            "remaining_balance": "70.00",
            "total_converted": "30.00",
            "sats_stacked": 4500,
            "average_cost_fiat_per_btc": "666666.67",
            "cycle_complete": False,
        }
        assert overview["totals"] == {
            "sats_stacked": 4500,
            "currencies": [
                {
                    "currency": "GTQ",
                    "total_deposits": "100.00",
                    "remaining_balance": "70.00",
                    "total_converted": "30.00",
                    "sats_stacked": 4500,
                    "average_cost_fiat_per_btc": "666666.67",
                }
            ],
        }
        assert await factory.balance(lp.wallet) == 4500

        deposits = (await http.get(f"{CLIENT}/deposits", headers=lp.invoice)).json()
        assert [(d["amount"], d["status"], d["machine_name"]) for d in deposits] == [
            ("100.00", "confirmed", machine["name"])
        ]
        payouts = (await http.get(f"{CLIENT}/payouts", headers=lp.invoice)).json()
        assert [
            (
                p["leg_type"],
                p["status"],
                p["amount_sats"],
                p["amount_fiat"],
                p["exchange_rate"],
                p["fiat_per_btc"],
                p["machine_name"],
            )
            for p in payouts
        ] == [
            (
                "dca",
                "completed",
                4500,
                "30.00",
                "150.00000000",
                "666666.67",
                machine["name"],
            )
        ]
        [series] = (await http.get(f"{CLIENT}/history", headers=lp.invoice)).json()
        assert series["client_id"] == client["id"]
        assert [(p["balance"], p["sats_stacked"]) for p in series["points"]] == [
            ("100.00", 0),
            ("70.00", 4500),
        ]

        statement = await http.get(f"{CLIENT}/statement.csv", headers=lp.invoice)
        assert statement.status_code == 200
        assert statement.headers["content-type"].startswith("text/csv")
        assert "attachment" in statement.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(statement.text)))
        assert [
            (r["kind"], r["status"], r["fiat"], r["sats"], r["fiat_per_btc"])
            for r in rows
        ] == [
            ("deposit", "confirmed", "100.00", "", ""),
            ("dca", "completed", "30.00", "4500", "666666.67"),
            ("total_deposited", "", "100.00", "", ""),
            ("total_converted", "", "30.00", "4500", "666666.67"),
            ("remaining_balance", "", "70.00", "", ""),
        ]
        assert {r["machine"] for r in rows} == {machine["name"]}

        # fixed mode with a daily limit, payouts forwarded: what the LP saves here
        # is what the operator's engine reads
        second = await factory.wallet(lp, "savings")
        fixed = await http.put(
            f"{CLIENT}/preferences",
            headers=lp.admin,
            json={
                "wallet_id": second.id,
                "dca_mode": "fixed",
                "fixed_mode_daily_limit": "25.50",
                "autoforward_enabled": True,
                "autoforward_ln_address": "Bea@Example.com",
            },
        )
        assert fixed.status_code == 200, fixed.text
        from satmachineadmin import crud

        stored = await crud.get_lp_preferences(lp.id)
        assert stored is not None
        assert (
            stored.wallet_id,
            stored.dca_mode,
            stored.fixed_mode_daily_limit,
            stored.autoforward_enabled,
            stored.autoforward_ln_address,
        ) == (second.id, "fixed", "25.50", True, "bea@example.com")
        shown = (await http.get(f"{CLIENT}/overview", headers=lp.invoice)).json()
        assert shown["positions"][0]["dca_mode"] == "fixed"
        audit = await crud.db.fetchall(
            "SELECT action FROM satmachineadmin.audit_log "
            "WHERE actor_user_id = :user AND entity_id = :user",
            {"user": lp.id},
        )
        assert [row["action"] for row in audit] == ["lp.preferences"] * 2


async def test_companion_authorization(http, factory, super_user):
    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    lp = await companion_user(factory)
    other_lp = await companion_user(factory)
    for who in (lp, other_lp):
        response = await http.put(
            f"{CLIENT}/preferences",
            headers=who.admin,
            json={"wallet_id": who.wallet.id, "dca_mode": "flow"},
        )
        assert response.status_code == 200, response.text
    machine, _ = await funded_lp_story(http, factory, lp, operator)

    # no key; a key of no wallet (LNbits answers that one "Wallet not found")
    for path in READS:
        assert (await http.get(CLIENT + path)).status_code == 401, path
        wrong = {"X-Api-Key": "0" * 32}
        assert (await http.get(CLIENT + path, headers=wrong)).status_code == 404
    no_key = await http.put(f"{CLIENT}/preferences", json={"wallet_id": "x"})
    assert no_key.status_code == 401
    # reading takes an invoice key, writing an admin key
    read_only = await http.put(
        f"{CLIENT}/preferences",
        headers=lp.invoice,
        json={"wallet_id": lp.wallet.id, "dca_mode": "flow"},
    )
    assert read_only.status_code == 403, read_only.text

    # the operator has not enabled the companion: LNbits refuses them
    refused = await http.get(f"{CLIENT}/overview", headers=operator.invoice)
    assert refused.status_code == 403, refused.text
    assert "satmachineclient" in refused.json()["detail"]
    # once they enable it, they see their own LP data (none), not their LPs'
    await enable_companion(operator)
    for path in ("/deposits", "/payouts", "/history"):
        answer = await http.get(CLIENT + path, headers=operator.invoice)
        assert (answer.status_code, answer.json()) == (200, []), path
    mine = (await http.get(f"{CLIENT}/overview", headers=operator.invoice)).json()
    assert (mine["preferences"], mine["positions"]) == (None, [])
    statement = await http.get(f"{CLIENT}/statement.csv", headers=operator.invoice)
    assert len(list(csv.reader(io.StringIO(statement.text)))) == 1  # the header

    # another LP at the same machine sees only their own deposit and position
    await factory.enrol(operator, machine, other_lp, deposit="50.00")
    theirs = (await http.get(f"{CLIENT}/overview", headers=other_lp.invoice)).json()
    assert theirs["preferences"]["user_id"] == other_lp.id
    assert [
        (p["machine_id"], p["total_deposits"], p["sats_stacked"])
        for p in theirs["positions"]
    ] == [(machine["id"], "50.00", 0)]
    deposits = (await http.get(f"{CLIENT}/deposits", headers=other_lp.invoice)).json()
    assert [d["amount"] for d in deposits] == ["50.00"]
    payouts = (await http.get(f"{CLIENT}/payouts", headers=other_lp.invoice)).json()
    assert payouts == []
    [series] = (await http.get(f"{CLIENT}/history", headers=other_lp.invoice)).json()
    assert [(p["balance"], p["sats_stacked"]) for p in series["points"]] == [
        ("50.00", 0)
    ]
    statement = await http.get(f"{CLIENT}/statement.csv", headers=other_lp.invoice)
    assert lp.id not in statement.text and "4500" not in statement.text
    # and cannot point their DCA at the first LP's wallet
    stolen = await http.put(
        f"{CLIENT}/preferences",
        headers=other_lp.admin,
        json={"wallet_id": lp.wallet.id, "dca_mode": "flow"},
    )
    assert stolen.status_code == 403, stolen.text
    assert (await factory.balance(lp.wallet)) == 4500

    # the companion itself admin-only: LNbits refuses the LP there too
    with admin_only("satmachineclient"):
        closed = await http.get(f"{CLIENT}/overview", headers=lp.invoice)
        assert closed.status_code == 403, closed.text


async def test_companion_without_the_operator_extension_says_so(http, factory):
    from lnbits.settings import settings

    lp = await companion_user(factory)
    settings.lnbits_deactivated_extensions.add("satmachineadmin")
    try:
        answer = await http.get(f"{CLIENT}/overview", headers=lp.invoice)
        no_key = await http.get(f"{CLIENT}/overview")
    finally:
        settings.lnbits_deactivated_extensions.discard("satmachineadmin")
    assert answer.status_code == 503, answer.text
    assert "satmachineadmin is not installed and active" in answer.json()["detail"]
    assert no_key.status_code == 401, no_key.text  # LNbits' answer, not a 503
    again = await http.get(f"{CLIENT}/overview", headers=lp.invoice)
    assert again.status_code == 200, again.text


async def test_companion_page_is_served_to_an_lp_with_only_the_companion(http, factory):
    """The page itself: LNbits serves it to a logged-in LP who enabled only the
    companion, and refuses the operator extension's page to them."""
    from time import time

    from lnbits.core.models.users import AccessTokenPayload
    from lnbits.helpers import create_access_token

    lp = await companion_user(factory)
    payload = AccessTokenPayload(sub="", usr=lp.id, auth_time=int(time()))
    headers = {"Authorization": f"Bearer {create_access_token(payload.dict())}"}
    page = await http.get("/satmachineclient/", headers=headers)
    assert page.status_code == 200, page.text[:300]
    assert 'data-testid="satmachineclient-page"' in page.text
    operator_page = await http.get("/satmachineadmin/", headers=headers)
    assert operator_page.status_code == 403
    tile = await http.get("/satmachineclient/static/image/satmachineclient.png")
    assert (tile.status_code, tile.headers["content-type"]) == (200, "image/png")


async def test_positions_across_operators_and_currencies(http, factory, super_user):
    """Two operators enrolled one LP, at a GTQ and a USD machine: one position each,
    sats added up, fiat totals kept per currency, both in the history and statement."""
    await factory.platform(super_user, "0", None)
    lp = await companion_user(factory)
    response = await http.put(
        f"{CLIENT}/preferences",
        headers=lp.admin,
        json={"wallet_id": lp.wallet.id, "dca_mode": "flow"},
    )
    assert response.status_code == 200, response.text
    gtq, _ = await funded_lp_story(http, factory, lp, await factory.operator())
    usd_operator = await factory.operator()
    usd = await factory.machine(usd_operator, currency="USD")
    await factory.enrol(usd_operator, usd, lp, deposit="20.00")
    customer = await factory.user(enable=False)
    await factory.fund(customer.wallet, 10_000)
    played = await factory.cash_out(usd, customer.wallet, "10.00", 1500, 0)
    assert await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    overview = (await http.get(f"{CLIENT}/overview", headers=lp.invoice)).json()
    assert sorted(
        (p["currency"], p["remaining_balance"], p["sats_stacked"])
        for p in overview["positions"]
    ) == [("GTQ", "70.00", 4500), ("USD", "10.00", 1500)]
    assert overview["totals"]["sats_stacked"] == 6000
    assert [
        (c["currency"], c["total_deposits"], c["average_cost_fiat_per_btc"])
        for c in overview["totals"]["currencies"]
    ] == [("GTQ", "100.00", "666666.67"), ("USD", "20.00", "666666.67")]
    history = (await http.get(f"{CLIENT}/history", headers=lp.invoice)).json()
    assert {s["machine_id"]: s["points"][-1]["sats_stacked"] for s in history} == {
        gtq["id"]: 4500,
        usd["id"]: 1500,
    }
    statement = await http.get(f"{CLIENT}/statement.csv", headers=lp.invoice)
    rows = list(csv.DictReader(io.StringIO(statement.text)))
    payouts = [(r["currency"], r["sats"]) for r in rows if r["kind"] == "dca"]
    assert sorted(payouts) == [("GTQ", "4500"), ("USD", "1500")]
    # rows are in time order, totals last
    dated = [r["date"] for r in rows if r["date"]]
    assert dated == sorted(dated)
    assert [r["kind"] for r in rows[-6:]].count("total_converted") == 2


def test_bridge_names_the_operator_extension_as_lnbits_does():
    """LNbits imports an extension as its id with a custom extensions path and as
    lnbits.extensions.<id> with the default one (lnbits/core/models/extensions.py)."""
    import sys

    from lnbits.settings import settings
    from satmachineclient import bridge

    assert bridge.operator_package() == "satmachineadmin"
    assert (
        bridge.operator_module("services.lp_view")
        is sys.modules["satmachineadmin.services.lp_view"]
    )
    saved = settings.lnbits_extensions_path
    settings.lnbits_extensions_path = "lnbits"
    try:
        assert bridge.operator_package() == "lnbits.extensions.satmachineadmin"
    finally:
        settings.lnbits_extensions_path = saved


def test_the_companion_reaches_satmachineadmin_only_through_its_bridge():
    """companion/ is another extension: its relative imports stay inside it, it never
    imports satmachineadmin by name, and each module it asks the bridge for exists
    (a rename in satmachineadmin fails here, not on an LP's page)."""
    import ast
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    companion = repo / "companion"
    asked = set()
    for path in companion.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name} imports outside companion/"
                assert "satmachineadmin" not in (node.module or ""), path.name
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
                assert not any("satmachineadmin" in n for n in names), path.name
        asked |= set(re.findall(r'operator_module\("([\w.]+)"\)', path.read_text()))
    assert asked == {"api.route", "errors", "models", "services.lp_view"}
    for name in asked:
        assert (repo / (name.replace(".", "/") + ".py")).is_file(), name


async def test_two_first_saves_at_once_keep_one_row(http, factory):
    """Two first saves of one LP's preferences racing: both answer (200, or 409
    for the one a unique key refused), one row is stored, never a 500."""
    import asyncio

    lp = await companion_user(factory, wallets=2)
    bodies = [{"wallet_id": w.id, "dca_mode": "flow"} for w in lp.wallets]
    answers = await asyncio.gather(
        *(http.put(f"{CLIENT}/preferences", headers=lp.admin, json=b) for b in bodies)
    )
    assert sorted(a.status_code for a in answers) in ([200, 200], [200, 409])
    from satmachineadmin import crud

    rows = await crud.db.fetchall(
        "SELECT wallet_id FROM satmachineadmin.lp_preferences WHERE user_id = :u",
        {"u": lp.id},
    )
    assert len(rows) == 1 and rows[0]["wallet_id"] in {w.id for w in lp.wallets}
