"""Live updates and alert settings, in Chromium (after test_browser_pages.py's story).

An operator and an LP of their own (registered here: the story's balances stay as
they are) keep the page open; what the API changes reaches the page over LNbits'
websocket without a reload: the LP's balance after a deposit is confirmed, a new
settlement in the operator's list, the alert it raises in the history on the
Health & reports tab. Then each chooses their alerts on the page.
"""

import uuid
from typing import Any

import ui
from harness import API, Server, call, register

MACHINE = "ATM Live"


def live_world(server: Server, http: Any) -> dict:
    if "live" in server.state:
        return server.state["live"]
    operator = register(http, f"op_live_{uuid.uuid4().hex[:6]}")
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
    lp = register(http, f"lp_live_{uuid.uuid4().hex[:6]}")
    call(
        http,
        "PUT",
        f"{API}/lp",
        key=lp.wallet["adminkey"],
        body={"wallet_id": lp.wallet["id"], "dca_mode": "flow"},
    )
    client = call(
        http,
        "POST",
        f"{API}/clients",
        key=operator.wallet["adminkey"],
        body={"machine_id": machine["id"], "user_id": lp.id, "username": "Live LP"},
    )
    world = {"operator": operator, "machine": machine, "lp": lp, "client": client}
    server.state["live"] = world
    return world


async def test_page_updates_live(server: Server, sessions: Any, http: Any) -> None:
    world = live_world(server, http)
    operator, lp = world["operator"], world["lp"]

    lp_page = await sessions.page(lp, "lp")
    summary = lp_page.get_by_test_id("lp-summary")
    await summary.filter(has_text=MACHINE).wait_for()
    assert "12.50 GTQ" not in await summary.inner_text()
    deposit = call(
        http,
        "POST",
        f"{API}/deposits",
        key=operator.wallet["adminkey"],
        body={"client_id": world["client"]["id"], "amount": "12.50"},
    )
    call(
        http,
        "POST",
        f"{API}/deposits/{deposit['id']}/confirm",
        key=operator.wallet["adminkey"],
    )
    # No reload: the LP's remaining balance follows the confirmation.
    await summary.filter(has_text="12.50 GTQ").wait_for()
    # ... and their notification history shows it.
    await (
        lp_page.get_by_test_id("lp-alert-history")
        .filter(has_text="deposit of 12.50 GTQ confirmed")
        .wait_for()
    )
    assert lp_page.errors == []

    page = await sessions.page(operator, "settlements")
    table = page.get_by_test_id("settlements-table")
    await table.wait_for()
    reference = f"live-{uuid.uuid4().hex[:8]}"
    entered = call(
        http,
        "POST",
        f"{API}/settlements",
        key=operator.wallet["adminkey"],
        body={
            "machine_id": world["machine"]["id"],
            "tx_type": "cash_out",
            "external_id": reference,
            "fiat_amount": "1.00",
            "principal_sats": 300,  # twice the market rate: held for the operator
            "fee_sats": 0,
        },
    )
    assert entered["status"] == "held", entered
    row = ui.rows(page, "settlements-table").filter(has_text=reference)
    await row.first.wait_for()  # nobody pressed reload
    assert "held" in await row.first.inner_text()

    await ui.tab(page, "Health & reports")
    history = ui.rows(page, "alert-history")
    await history.filter(has_text=f"payment held at {MACHINE}").first.wait_for()
    # Rejected through the API: the incident resolves on the open page.
    call(
        http,
        "POST",
        f"{API}/settlements/{entered['id']}/reject",
        key=operator.wallet["adminkey"],
        body={"reason": "live test"},
    )
    resolved = history.filter(has_text=f"payment held at {MACHINE}").first
    for _ in range(40):
        cells = await resolved.locator("td").all_inner_texts()
        if cells[2].strip():
            break
        await page.wait_for_timeout(250)
    assert cells[2].strip(), cells  # its "Resolved" time
    assert page.errors == []


async def test_alert_settings_on_the_page(
    server: Server, sessions: Any, http: Any
) -> None:
    world = live_world(server, http)
    operator, lp, machine = world["operator"], world["lp"], world["machine"]

    page = await sessions.page(operator, "reports")
    await page.get_by_test_id("alert-settings-open").click()
    dialog = page.get_by_test_id("alert-settings")
    await dialog.wait_for()
    await dialog.get_by_label("Stuck after (min)").fill("45")
    held = dialog.get_by_test_id("alert-kind-payment_held")
    assert await held.get_attribute("aria-checked") == "true"
    await held.click()  # off for every machine ...
    await ui.choose(page, "For", MACHINE, dialog)
    assert await held.get_attribute("aria-checked") == "false"
    await held.click()  # ... but on for this one
    assert await held.get_attribute("aria-checked") == "true"
    await dialog.get_by_test_id("alert-settings-save").click()
    await ui.notified(page, "Alert settings saved")
    saved = call(http, "GET", f"{API}/alerts/settings", key=operator.wallet["inkey"])
    assert saved["kinds"]["payment_held"] is False
    assert saved["machines"] == {machine["id"]: {"payment_held": True}}
    assert saved["stuck_minutes"] == 45
    channels = await page.get_by_test_id("alert-channels").inner_text()
    assert "No channel" in channels
    assert page.errors == []

    lp_page = await sessions.page(lp, "lp")
    panel = lp_page.get_by_test_id("lp-alerts")
    await panel.get_by_test_id("lp-alert-deposit_confirmed").click()
    await ui.choose(lp_page, "Payout summary", "at most weekly", panel)
    await panel.get_by_test_id("lp-alerts-save").click()
    await ui.notified(lp_page, "Notification settings saved")
    mine = call(http, "GET", f"{API}/lp/alerts/settings", key=lp.wallet["inkey"])
    assert mine["deposit_confirmed"] is False and mine["digest_period"] == "week"
    assert mine["payout_digest"] is True
    assert lp_page.errors == []
