"""The companion page (satmachineclient), in Chromium, against the browser tests' real
LNbits server, on an instance where satmachineadmin is admin-only.

An LP registers and enables only the companion; the LNbits admin makes
satmachineadmin admin-only (its operator an LNbits admin). The LP is refused the
operator extension, sets their preferences on the companion page, an operator of
their own enrols them and records a deposit, a passer-by sells bitcoin, and the LP
sees their position, payout, deposit and history chart, and downloads their
statement. The admin settings are put back at the end (the server is shared); the
story uses accounts of its own and a customer wallet it funds itself.
"""

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import ui
from harness import API, PASSWORD, SATS_PER_UNIT, Account, Server, call

CLIENT_API = "/satmachineclient/api/v1"
MACHINE = "ATM Mercado"
FIAT = "30.00"
PRINCIPAL = 30 * SATS_PER_UNIT  # 4500


def register_with(http: Any, username: str, extension: str) -> Account:
    token = call(
        http,
        "POST",
        "/api/v1/auth/register",
        body={"username": username, "password": PASSWORD, "password_repeat": PASSWORD},
    )["access_token"]
    call(http, "PUT", f"/api/v1/extension/{extension}/enable", token=token)
    me = call(http, "GET", "/api/v1/auth", token=token)
    return Account(username, PASSWORD, token, me["id"], me["wallets"])


def admin_settings(http: Any, admin: Account, **changes: Any) -> dict:
    """Change LNbits' admin settings; returns the previous values of those changed."""
    current = call(http, "GET", "/admin/api/v1/settings", token=admin.token)
    before = {name: current[name] for name in changes}
    call(http, "PATCH", "/admin/api/v1/settings", token=admin.token, body=changes)
    return before


def play_cash_out(http: Any, server: Server, operator: Account) -> None:
    """An operator of the story: machine, LP enrolled, 100.00 GTQ deposited and
    confirmed; a passer-by (a wallet of the story, funded by the admin) sells
    30.00 GTQ of bitcoin. The engine of the server pays the LP."""
    lp_id = server.state["companion_lp"].id
    machine = call(
        http,
        "POST",
        f"{API}/machines",
        key=operator.wallet["adminkey"],
        body={
            "name": MACHINE,
            "wallet_id": operator.wallet["id"],
            "fiat_currency": "GTQ",
        },
    )
    client = call(
        http,
        "POST",
        f"{API}/clients",
        key=operator.wallet["adminkey"],
        body={"machine_id": machine["id"], "user_id": lp_id, "username": "Bea"},
    )
    deposit = call(
        http,
        "POST",
        f"{API}/deposits",
        key=operator.wallet["adminkey"],
        body={"client_id": client["id"], "amount": "100.00"},
    )
    call(
        http,
        "POST",
        f"{API}/deposits/{deposit['id']}/confirm",
        key=operator.wallet["adminkey"],
    )
    admin = server.accounts["admin"]
    customer = call(
        http, "POST", "/api/v1/wallet", token=operator.token, body={"name": "Buyer"}
    )
    call(
        http,
        "PUT",
        "/users/api/v1/balance",
        token=admin.token,
        body={"id": customer["id"], "amount": 10_000},
    )
    invoice = call(
        http,
        "POST",
        "/api/v1/payments",
        key=operator.wallet["inkey"],
        body={
            "out": False,
            "amount": PRINCIPAL,
            "memo": "ATM cash-out",
            "extra": {
                "source": "bitspire",
                "type": "cash_out",
                "wire_sats": PRINCIPAL,
                "principal_sats": PRINCIPAL,
                "fee_sats": 0,
                "fiat_amount": FIAT,
                "currency": "GTQ",
                "txid": f"companion-{uuid.uuid4().hex[:10]}",
            },
        },
    )
    call(
        http,
        "POST",
        "/api/v1/payments",
        key=customer["adminkey"],
        body={"out": True, "bolt11": invoice["bolt11"]},
    )


async def test_lp_uses_the_companion_while_satmachineadmin_is_admin_only(
    server: Server, sessions: Any, http: Any, shots_dir: Any, tmp_path: Path
) -> None:
    admin = server.accounts["admin"]
    suffix = uuid.uuid4().hex[:6]
    lp = register_with(http, f"companion_lp_{suffix}", "satmachineclient")
    operator = register_with(http, f"companion_op_{suffix}", "satmachineadmin")
    server.state["companion_lp"] = lp
    before = admin_settings(
        http,
        admin,
        lnbits_admin_extensions=["satmachineadmin"],
        lnbits_admin_users=[operator.id],
    )
    try:
        refused = http.get(f"{API}/lp", headers={"X-Api-Key": lp.wallet["inkey"]})
        assert refused.status_code == 403, refused.text

        page = await sessions._login(lp.username, lp.password)
        sessions.pages[lp.username] = page
        await page.goto(f"{server.url}/satmachineclient/")
        await page.get_by_role("button", name="I understand").click()
        await page.get_by_test_id("prefs-unset").wait_for()
        await page.get_by_text("No machine has enrolled you yet").wait_for()
        await page.get_by_role("button", name="Save preferences").click()
        await ui.notified(page, "Your DCA preferences are saved")
        await page.get_by_test_id("prefs-unset").wait_for(state="detached")
        prefs = call(http, "GET", f"{CLIENT_API}/overview", key=lp.wallet["inkey"])[
            "preferences"
        ]
        assert (prefs["wallet_id"], prefs["dca_mode"]) == (lp.wallet["id"], "flow")

        play_cash_out(http, server, operator)
        position = page.get_by_test_id("position").filter(has_text=MACHINE)
        for _ in range(40):  # the engine pays within seconds; the LP reloads
            await page.get_by_test_id("reload").click()
            await page.wait_for_timeout(500)
            if await position.count() and "4,500" in await position.inner_text():
                break
        text = await position.inner_text()
        for figure in ("70.00 GTQ", "4,500", "666,666.67 GTQ/BTC", "100.00 GTQ"):
            assert figure in text, text
        assert f"operated by {operator.username}" in text, text
        totals = await page.get_by_test_id("totals").inner_text()
        assert "4,500" in totals and "666,666.67 GTQ/BTC" in totals, totals

        payouts = ui.rows(page, "payouts")
        assert await payouts.count() == 1
        cells = [c.strip() for c in await payouts.first.locator("td").all_inner_texts()]
        assert cells[1:8] == [
            MACHINE,
            "dca (flow)",
            "completed",
            "4,500",
            f"{FIAT} GTQ",
            "150.00000000",
            "666,666.67",
        ], cells
        deposits = ui.rows(page, "deposits")
        assert "100.00 GTQ" in await deposits.first.inner_text()
        drawn = await page.evaluate(
            "() => { const c = document.querySelector('[data-testid=history] canvas');"
            " return !!(c && Chart.getChart(c)) }"
        )
        assert drawn, "the history chart was not drawn"

        async with page.expect_download() as download_info:
            await page.get_by_test_id("download-statement").click()
        download = await download_info.value
        saved = tmp_path / "statement.csv"
        await download.save_as(saved)
        rows = list(csv.DictReader(io.StringIO(saved.read_text())))
        assert [(r["kind"], r["fiat"], r["sats"]) for r in rows] == [
            ("deposit", "100.00", ""),
            ("dca", FIAT, str(PRINCIPAL)),
            ("total_deposited", "100.00", ""),
            ("total_converted", FIAT, str(PRINCIPAL)),
            ("remaining_balance", "70.00", ""),
        ]
        await ui.shot(page, shots_dir, "companion")

        # the operator's page stays closed to the LP
        answer = await page.goto(f"{server.url}/satmachineadmin/")
        assert answer is not None and answer.status == 403
        assert page.errors == []
    finally:
        admin_settings(http, admin, **before)
