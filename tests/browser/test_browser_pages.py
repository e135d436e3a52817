"""The operator, LP and super-user pages, in Chromium, against a real LNbits server.

One story, in order (each test builds on the one before, through `server.state`):
an operator creates a machine and its commission split (a bad total cannot be saved,
a bad target is refused with the server's reason), enrols an LP who set their
preferences, records and confirms a deposit; a passer-by sells bitcoin at the ATM
(a bitSpire cash-out: an invoice with `extra` on the machine wallet, paid from a
customer wallet); the settlement and its legs appear with the right amounts; the CSV
export holds those legs; the LP sees their sats; a second operator sees none of it.
"""

import csv
import io
import re
import uuid
from datetime import date, timedelta
from typing import Any

import ui
from harness import API, SATS_PER_UNIT, Server, call

# A 30.00 GTQ cash-out at 150 sats/GTQ with a 5 % commission; the platform takes 30 %
# of the commission (rounded half to even), the operator's rule sends the rest to
# their Commission wallet, the LP (the only one, 100.00 GTQ deposited) gets the
# principal.
FIAT = "30.00"
PRINCIPAL = 30 * SATS_PER_UNIT  # 4500
FEE = 225
PLATFORM = 68  # 225 * 0.30 = 67.5 -> 68
OPERATOR = FEE - PLATFORM  # 157
MACHINE = "ATM Centro"
LP_NAME = "Ana LP"


async def test_operator_creates_machine_and_commission_rules(
    server: Server, sessions: Any, http: Any, shots_dir: Any
) -> None:
    operator = server.accounts["operator_one"]
    page = await sessions.page(operator)
    await page.get_by_text("No machine yet").wait_for()

    await page.get_by_test_id("new-machine").click()
    form = page.get_by_test_id("machine-form")
    await form.get_by_label("Name *").fill(MACHINE)
    await ui.choose(page, "Machine wallet *", "ATM float", scope=form)
    await ui.shot(page, shots_dir, "machine-dialog")
    await form.get_by_role("button", name="Create machine").click()
    await ui.notified(page, f"Machine {MACHINE} created")
    await ui.rows(page, "machines-table").filter(has_text=MACHINE).wait_for()

    machines = call(http, "GET", f"{API}/machines", key=operator.wallet["inkey"])
    assert [(m["name"], m["wallet_id"], m["fiat_currency"]) for m in machines] == [
        (MACHINE, operator.wallet["id"], "GTQ")
    ]
    server.state["machine"] = machines[0]

    # commission rules: default for every machine
    await ui.tab(page, "Commission")
    await page.get_by_text("No leg:").wait_for()
    save = page.get_by_test_id("save-splits")
    await page.get_by_test_id("add-split-leg").click()
    legs = page.get_by_test_id("split-leg")
    await ui.choose(page, "Wallet", "Commission", scope=legs.nth(0))
    await legs.nth(0).get_by_label("Percent").fill("70")
    await legs.nth(0).get_by_label("Label").fill("operator")
    await page.get_by_test_id("add-split-leg").click()
    await legs.nth(1).get_by_role("button", name="Lightning address").click()
    await (
        legs.nth(1)
        .get_by_label("Lightning address (name@domain)")
        .fill("bad address@@example.com")
    )
    await legs.nth(1).get_by_label("Percent").fill("40")

    # the page's live check is exact (integer 1/10000 %), as the server's is
    checks = await page.evaluate(
        """cases => cases.map(c => SatMachine.checkPercents(c))""",
        [
            ["33.3333", "33.3333", "33.3334"],
            ["0.1", "0.2", "99.7"],
            ["50", "50.00001"],
            ["100", "0"],
            ["abc"],
        ],
    )
    assert [(c["valid"], c["total"]) for c in checks] == [
        (True, "100"),
        (True, "100"),
        (False, "50"),
        (False, "100"),
        (False, "0"),
    ]

    # a bad total: the page says so and will not save
    assert await page.get_by_test_id("split-total").inner_text() == "Total: 110 %"
    await page.get_by_text("the percents add up to 110 %, not 100 %").wait_for()
    assert await save.is_disabled()
    await ui.shot(page, shots_dir, "commission-bad-total")

    # a good total with a bad target: the server refuses, the page shows its reason
    await legs.nth(1).get_by_label("Percent").fill("30")
    assert await page.get_by_test_id("split-total").inner_text() == "Total: 100 %"
    assert await save.is_enabled()
    await save.click()
    error = page.get_by_test_id("split-server-error")
    await error.wait_for()
    assert "not a valid Lightning address" in await error.inner_text()
    splits = call(http, "GET", f"{API}/commission/splits", key=operator.wallet["inkey"])
    assert splits["legs"] == []  # nothing was saved

    # fixed: one leg, 100 % to the Commission wallet
    await legs.nth(1).get_by_role("button", name="Remove this leg").click()
    await legs.nth(0).get_by_label("Percent").fill("100")
    await save.click()
    await ui.notified(page, "Commission rules saved")
    splits = call(http, "GET", f"{API}/commission/splits", key=operator.wallet["inkey"])
    commission_wallet = operator.wallets[1]["id"]
    assert splits["legs"] == [
        {
            "target": commission_wallet,
            "target_kind": "wallet",
            "percent": "100",
            "label": "operator",
        }
    ]
    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "commission")
    assert page.errors == []


async def test_operator_enrols_lp_and_confirms_deposit(
    server: Server, sessions: Any, http: Any, shots_dir: Any
) -> None:
    operator = server.accounts["operator_one"]
    lp = server.accounts["lp_one"]
    page = await sessions.page(operator)
    await page.get_by_test_id("machine-panel").wait_for()

    await page.get_by_test_id("add-lp").click()
    form = page.get_by_test_id("client-form")
    await form.get_by_label("LNbits user id *").fill(lp.id)
    await form.get_by_label("Name shown here").fill(LP_NAME)
    await form.get_by_role("button", name="Enrol LP").click()
    await ui.notified(page, f"LP {LP_NAME} enrolled")
    row = ui.rows(page, "lps-table").filter(has_text=LP_NAME)
    await row.wait_for()
    assert "flow" in await row.inner_text()

    await row.get_by_role("button", name="Deposits").click()
    dialog = page.get_by_test_id("deposits-dialog")
    await dialog.get_by_label("Amount (GTQ)").fill("100.00")
    await dialog.get_by_label("Notes").fill("cash counted at the shop")
    await dialog.get_by_role("button", name="Record deposit").click()
    await ui.notified(page, "Deposit of 100.00 GTQ recorded")
    deposit = ui.rows(page, "deposits-table").filter(has_text="100.00 GTQ")
    await deposit.filter(has_text="pending").wait_for()
    await deposit.get_by_role("button", name="Confirm").click()
    await ui.notified(page, "Deposit of 100.00 GTQ confirmed")
    await deposit.filter(has_text="confirmed").wait_for()
    await ui.shot(page, shots_dir, "deposits-dialog")
    await dialog.get_by_role("button", name="Close").click()

    await row.filter(has_text="100.00 GTQ").first.wait_for()
    clients = call(http, "GET", f"{API}/clients", key=operator.wallet["inkey"])
    assert [(c["user_id"], c["username"]) for c in clients] == [(lp.id, LP_NAME)]
    server.state["client"] = clients[0]
    balance = call(
        http,
        "GET",
        f"{API}/clients/{clients[0]['id']}/balance",
        key=operator.wallet["inkey"],
    )
    assert (balance["total_deposits"], balance["remaining_balance"]) == (
        "100.00",
        "100.00",
    )
    assert page.errors == []


async def test_cash_out_shows_settlement_and_legs(
    server: Server, sessions: Any, http: Any, shots_dir: Any
) -> None:
    operator = server.accounts["operator_one"]
    machine_wallet = operator.wallet
    txid = f"browser-{uuid.uuid4().hex[:10]}"
    extra = {
        "source": "bitspire",
        "type": "cash_out",
        "wire_sats": PRINCIPAL + FEE,
        "principal_sats": PRINCIPAL,
        "fee_sats": FEE,
        "fee_fraction": "0.05",
        "fiat_amount": FIAT,
        "currency": "GTQ",
        "exchange_rate": str(SATS_PER_UNIT),
        "txid": txid,
    }
    invoice = call(
        http,
        "POST",
        "/api/v1/payments",
        key=machine_wallet["inkey"],
        body={
            "out": False,
            "amount": PRINCIPAL + FEE,
            "memo": "ATM cash-out",
            "extra": extra,
        },
    )
    call(
        http,
        "POST",
        "/api/v1/payments",
        key=server.customer["adminkey"],
        body={"out": True, "bolt11": invoice["bolt11"]},
    )
    server.state["txid"] = txid

    page = await sessions.page(operator)
    await ui.tab(page, "Settlements")
    row = ui.rows(page, "settlements-table").filter(has_text=txid[:10])
    for _ in range(40):  # the engine pays within seconds; the operator reloads
        await page.get_by_test_id("reload-settlements").click()
        await page.wait_for_timeout(500)
        if await row.count() and "processed" in await row.inner_text():
            break
    cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
    assert cells[1:] == [
        MACHINE,
        "bitspire",
        "cash_out",
        "processed",
        f"{FIAT} GTQ",
        "4,725",
        "4,500",
        "225",
        f"{PLATFORM}",
        f"{OPERATOR}",
        "0",
        txid,
    ], cells
    await ui.shot(page, shots_dir, "settlements")

    await row.click()
    detail = page.get_by_test_id("settlement-detail")
    legs = ui.rows(page, "legs-table")
    await legs.filter(has_text="dca").wait_for()
    table = sorted(
        tuple(c.strip() for c in cells)
        for cells in [await r.locator("td").all_inner_texts() for r in await legs.all()]
    )
    assert table == sorted(
        [
            ("dca", "completed", "4,500", f"{FIAT} GTQ", f"LP {LP_NAME}", ""),
            ("operator_split", "completed", f"{OPERATOR}", "", "Commission", ""),
            (
                "super_fee",
                "completed",
                f"{PLATFORM}",
                "",
                short_id(server.accounts["admin"].wallet["id"]),
                "",
            ),
        ]
    ), table

    await detail.get_by_label("Add a note (kept, never edited)").fill(
        "customer counted the notes twice"
    )
    await detail.get_by_role("button", name="Add note").click()
    await ui.notified(page, "Note added")
    await detail.get_by_text("customer counted the notes twice").wait_for()
    assert await detail.get_by_role("button", name="Retry failed legs").is_disabled()
    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "settlement-detail")

    api_legs = call(
        http,
        "GET",
        f"{API}/payments?settlement_id={await settlement_id(http, operator, txid)}",
        key=operator.wallet["inkey"],
    )
    assert sorted(
        (leg["leg_type"], leg["status"], leg["amount_sats"]) for leg in api_legs
    ) == [
        ("dca", "completed", PRINCIPAL),
        ("operator_split", "completed", OPERATOR),
        ("super_fee", "completed", PLATFORM),
    ]
    assert page.errors == []


def short_id(wallet_id: str) -> str:
    """A wallet that is not the operator's (the platform's fee wallet), as shown."""
    return f"{wallet_id[:8]}…{wallet_id[-4:]}"


async def settlement_id(http: Any, operator: Any, txid: str) -> str:
    rows = call(http, "GET", f"{API}/settlements", key=operator.wallet["inkey"])
    return next(r["id"] for r in rows if r["external_id"] == txid)


async def test_held_settlement_is_rejected_from_its_detail(
    server: Server, sessions: Any, http: Any, shots_dir: Any
) -> None:
    """A manual entry whose rate is far off the market lands held; the operator
    rejects it in the settlement's detail, with a reason: never paid, still shown.
    (Approving is tested through the API; here it would pay the LP and change the
    balances the later pages show.)"""
    operator = server.accounts["operator_one"]
    reference = f"held-{uuid.uuid4().hex[:8]}"
    entered = call(
        http,
        "POST",
        f"{API}/settlements",
        key=operator.wallet["adminkey"],
        body={
            "machine_id": server.state["machine"]["id"],
            "tx_type": "cash_out",
            "external_id": reference,
            "fiat_amount": "1.00",
            "principal_sats": 300,  # 300 sats per GTQ against a market of 150
            "fee_sats": 0,
        },
    )
    assert entered["status"] == "held", entered

    page = await sessions.page(operator)
    await ui.tab(page, "Settlements")
    row = ui.rows(page, "settlements-table").filter(has_text=reference[:10])
    await row.first.wait_for()
    assert "held" in await row.first.inner_text()
    await row.first.click()
    decision = page.get_by_test_id("held-decision")
    await decision.wait_for()
    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "held-settlement")
    assert await decision.get_by_role("button", name="Approve and pay").is_enabled()
    await decision.get_by_label("Reason to reject").fill("typed 300 for 150")
    await decision.get_by_role("button", name="Reject").click()
    await ui.notified(page, "Rejected")
    shown = call(
        http, "GET", f"{API}/settlements/{entered['id']}", key=operator.wallet["inkey"]
    )
    assert shown["status"] == "rejected", shown
    assert "typed 300 for 150" in shown["error"]
    audit = call(
        http,
        "GET",
        f"{API}/audit?entity_id={entered['id']}",
        key=operator.wallet["inkey"],
    )
    assert "settlement.reject" in [a["action"] for a in audit]
    assert page.errors == []


async def test_csv_export_and_health(
    server: Server, sessions: Any, shots_dir: Any
) -> None:
    operator = server.accounts["operator_one"]
    page = await sessions.page(operator)
    await ui.tab(page, "Health & reports")
    health = page.get_by_test_id("health-panel")
    await health.get_by_text(MACHINE).wait_for()
    await health.get_by_text("processed: 1").wait_for()
    # every payment of this world settled: none in flight
    await health.get_by_text("in flight: 0", exact=True).wait_for()

    today = date.today()
    await page.get_by_label("From", exact=True).fill(
        (today - timedelta(days=1)).isoformat()
    )
    await page.get_by_label("Until", exact=True).fill(
        (today + timedelta(days=1)).isoformat()
    )
    async with page.expect_download() as download_info:
        await page.get_by_test_id("export-csv").click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".csv")
    text = open(await download.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(
        (r["leg_type"], r["status"], r["amount_sats"], r["amount_fiat"]) for r in rows
    ) == [
        ("dca", "completed", str(PRINCIPAL), FIAT),
        ("operator_split", "completed", str(OPERATOR), ""),
        ("super_fee", "completed", str(PLATFORM), ""),
    ]
    assert {r["machine_id"] for r in rows} == {server.state["machine"]["id"]}
    assert {r["client_id"] for r in rows if r["leg_type"] == "dca"} == {
        server.state["client"]["id"]
    }

    # an empty range exports the header only
    await page.get_by_label("From", exact=True).fill(
        (today + timedelta(days=5)).isoformat()
    )
    await page.get_by_label("Until", exact=True).fill(
        (today + timedelta(days=6)).isoformat()
    )
    async with page.expect_download() as download_info:
        await page.get_by_test_id("export-csv").click()
    empty = open(await (await download_info.value).path(), encoding="utf-8").read()
    assert len(empty.strip().splitlines()) == 1 and empty.startswith("created_at,")

    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "health-and-reports")

    # the other tabs, for the README
    await ui.tab(page, "Machines")
    await ui.rows(page, "lps-table").filter(has_text=LP_NAME).wait_for()
    await ui.shot(page, shots_dir, "machines")
    await ui.tab(page, "Lamassu")
    await page.get_by_text("Not configured.").wait_for()
    await ui.shot(page, shots_dir, "lamassu")
    assert page.errors == []


async def test_lamassu_password_is_write_only(
    server: Server, sessions: Any, http: Any
) -> None:
    operator = server.accounts["operator_one"]
    page = await sessions.page(operator)
    await ui.tab(page, "Lamassu")
    await page.get_by_label("Host", exact=True).fill("127.0.0.1")
    await page.get_by_label("Port", exact=True).fill("1")  # nothing listens there
    await page.get_by_label("Username", exact=True).fill("lamassu_ro")
    await page.get_by_label("Password", exact=True).fill("s3cret-pw")
    await page.get_by_role("button", name="Test connection").click()
    await page.get_by_text("Connection test:").wait_for()
    assert "failed" in await page.get_by_text("Connection test:").inner_text()

    await page.get_by_role("button", name="Save", exact=True).click()
    await ui.notified(page, "Lamassu connection saved")
    assert await page.get_by_label("Password", exact=True).input_value() == ""
    await page.get_by_text("A password is stored (never shown)").wait_for()
    config = call(http, "GET", f"{API}/lamassu/config", key=operator.wallet["inkey"])
    assert config["password_set"] is True
    assert "s3cret-pw" not in str(config)


async def test_lp_sees_their_dca(server: Server, sessions: Any, shots_dir: Any) -> None:
    lp = server.accounts["lp_one"]
    page = await sessions.page(lp)
    # no machine of their own: the page opens on "My DCA"
    summary = page.get_by_test_id("lp-summary")
    await summary.filter(has_text=MACHINE).wait_for()
    text = await summary.inner_text()
    assert "70.00 GTQ" in text and "4,500" in text, text
    assert "30.00 / 100.00" in text, text
    payouts = ui.rows(page, "lp-payments")
    await payouts.filter(has_text="4,500").wait_for()
    assert await payouts.count() == 1
    assert re.search(
        r"dca\s+completed\s+4,500\s+30\.00 GTQ", await payouts.first.inner_text()
    )
    await ui.shot(page, shots_dir, "my-dca")
    assert page.errors == []


async def test_settle_balance_fixed_schedule_and_auto_settlement(
    server: Server, sessions: Any, http: Any, shots_dir: Any
) -> None:
    operator = server.accounts["operator_one"]
    machine_id = server.state["machine"]["id"]
    client_id = server.state["client"]["id"]
    page = await sessions.page(operator)
    row = ui.rows(page, "lps-table").filter(has_text=LP_NAME)
    await row.filter(has_text="70.00 GTQ").wait_for()

    # settle part of the LP's balance from the Commission wallet, at a stated rate
    await row.get_by_role("button", name="Settle").click()
    form = page.get_by_test_id("settle-form")
    await ui.choose(page, "Funding wallet *", "Commission", scope=form)
    await form.get_by_label("Amount (fiat, empty = all)").fill("1000.00")
    await form.get_by_label("Rate (sats per fiat unit, empty = market)").fill("150")
    await form.get_by_role("button", name="Settle", exact=True).click()
    error = page.get_by_test_id("settle-error")
    await error.wait_for()
    assert "more than the remaining balance 70.00" in await error.inner_text()
    await form.get_by_label("Amount (fiat, empty = all)").fill("10.00")
    await form.get_by_role("button", name="Settle", exact=True).click()
    await ui.notified(page, f"Settled: 1,500 sats to {LP_NAME}")
    result = page.get_by_test_id("settle-result")
    assert await result.inner_text() == "Paid 1,500 sats (10.00 GTQ), completed"
    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "settle-dialog")
    await form.get_by_role("button", name="Close").click()
    await row.filter(has_text="60.00 GTQ").wait_for()
    balance = call(
        http, "GET", f"{API}/clients/{client_id}/balance", key=operator.wallet["inkey"]
    )
    assert balance["remaining_balance"] == "60.00"
    legs = call(
        http, "GET", f"{API}/payments?leg_type=settlement", key=operator.wallet["inkey"]
    )
    assert [
        (leg["status"], leg["amount_sats"], leg["amount_fiat"]) for leg in legs
    ] == [("completed", 1500, "10.00")]

    # fixed-mode schedule: a time of day in the operator's time zone, and a run now
    await page.get_by_role("tab", name="Fixed mode").click()
    await page.get_by_label("Add a time (HH:MM)").fill("09:00")
    await page.get_by_role("button", name="Add", exact=True).click()
    await page.locator(".q-chip").filter(has_text="09:00").wait_for()
    await page.get_by_label("Time zone", exact=True).fill("Guatemala")
    await page.get_by_role("option", name="America/Guatemala").click()
    await page.get_by_role("button", name="Save schedule").click()
    await ui.notified(page, "Fixed-mode schedule saved")
    machine = call(
        http, "GET", f"{API}/machines/{machine_id}", key=operator.wallet["inkey"]
    )
    assert (machine["fixed_times"], machine["fixed_timezone"]) == (
        ["09:00"],
        "America/Guatemala",
    )
    await page.get_by_role("button", name="Run the current slot now").click()
    await ui.notified(
        page, "Fixed-mode run done: 0 leg(s)"
    )  # the only LP is in flow mode
    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "fixed-mode")

    # auto-settlement under 5 % of the deposits, from the Commission wallet
    await page.get_by_role("tab", name="Auto-settlement").click()
    await page.get_by_label("Settle small balances automatically").click()
    await page.get_by_role("button", name="Percent of deposits").click()
    await page.get_by_label("Threshold (%)").fill("5")
    await ui.choose(page, "Funding wallet", "Commission")
    await page.get_by_role("button", name="Save auto-settlement").click()
    await ui.notified(page, "Auto-settlement saved")
    machine = call(
        http, "GET", f"{API}/machines/{machine_id}", key=operator.wallet["inkey"]
    )
    assert machine["auto_settlement"] == {
        "enabled": True,
        "threshold_type": "percent",
        "threshold_value": "5",
        "funding_wallet_id": operator.wallets[1]["id"],
    }
    assert page.errors == []


async def test_second_operator_sees_none_of_the_first(
    server: Server, sessions: Any, http: Any
) -> None:
    other = server.accounts["operator_two"]
    first = server.accounts["operator_one"]
    page = await sessions.page(other)
    await page.get_by_text("No machine yet").wait_for()
    assert await ui.rows(page, "machines-table").filter(has_text=MACHINE).count() == 0

    await ui.tab(page, "Settlements")
    await page.get_by_text("No settlement matches").wait_for()
    await ui.tab(page, "Commission")
    await page.get_by_text("No leg:").wait_for()
    await ui.tab(page, "Health & reports")
    await page.get_by_text("Last sweep").wait_for()
    assert await page.get_by_test_id("health-panel").get_by_text(MACHINE).count() == 0

    # the first operator's ids, asked for with this operator's key, from this page
    sid = await settlement_id(http, first, server.state["txid"])
    statuses = await page.evaluate(
        """async ([api, ids]) => {
            const key = window.g.user.wallets[0].inkey
            const out = []
            for (const path of ids) {
                const r = await fetch(api + path, {headers: {'X-Api-Key': key}})
                out.push([r.status, await r.text()])
            }
            return out
        }""",
        [
            API,
            [
                f"/settlements/{sid}",
                f"/machines/{server.state['machine']['id']}",
                f"/clients/{server.state['client']['id']}/balance",
                "/settlements",
                "/payments",
            ],
        ],
    )
    assert [s for s, _ in statuses] == [404, 404, 404, 200, 200], statuses
    assert statuses[3][1] == "[]" and statuses[4][1] == "[]"
    assert page.errors == []


async def test_super_user_platform_fee(
    server: Server, sessions: Any, shots_dir: Any
) -> None:
    admin = server.accounts["admin"]
    page = await sessions.page(admin)
    await ui.tab(page, "Platform")
    fraction = page.get_by_label("Fee fraction (0 to 1)")
    await page.get_by_text("30.00 % of every commission").wait_for()
    assert await fraction.input_value() == "0.30"
    await fraction.fill("1.5")
    await page.get_by_role("button", name="Save", exact=True).click()
    await (
        page.locator(".q-notification")
        .filter(has_text="between 0 and 1")
        .first.wait_for()
    )
    await fraction.fill("0.30")
    await page.get_by_role("button", name="Save", exact=True).click()
    await ui.notified(page, "Platform fee saved")
    await ui.dismiss_notifications(page)
    await ui.shot(page, shots_dir, "platform")
    assert page.errors == []


async def test_v1_import_is_listed_on_the_machines_tab(
    server: Server, sessions: Any
) -> None:
    """After an upgrade in place from v1, m005's summary (its `v1.import` audit row,
    written here as m005 writes it) is a line on the Machines tab, with its notes."""
    import json
    import sqlite3
    from datetime import datetime, timezone

    other = server.accounts["operator_two"]
    detail = {
        "lps": 3,
        "deposits": 4,
        "payments": 5,
        "settlements": 2,
        "machines": ["v1-cfg"],
        "lamassu_config": True,
        "sources": ["satmachineadmin"],
        "remaining_minor": 95_000,
        "notes": ["v1 reached Lamassu through an SSH tunnel (lamassu@atm:22)"],
    }
    moment = int(datetime(2025, 6, 9, 12, tzinfo=timezone.utc).timestamp())
    database = server.log.parent / "data" / "ext_satmachineadmin.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT INTO audit_log (id, actor_user_id, operator_user_id, action, "
            "entity_type, entity_id, detail, created_at) "
            "VALUES (?, 'migration:m005', ?, 'v1.import', 'operator', ?, ?, ?)",
            (uuid.uuid4().hex, other.id, other.id, json.dumps(detail), moment),
        )
    page = await sessions.page(other)
    banner = page.get_by_test_id("v1-import")
    await banner.wait_for()
    text = await banner.inner_text()
    assert (
        "Imported from v1 on 2025-06-09: 3 LPs, 4 deposits, 5 payments (as paid "
        "legs), 2 Lamassu transactions (settled, never paid again); LP balances "
        "remaining 950.00 GTQ." in text
    ), text
    assert "SSH tunnel (lamassu@atm:22)" in text
    # Another operator sees no such line.
    page = await sessions.page(server.accounts["operator_one"])
    await page.get_by_test_id("machines-table").wait_for()
    assert await page.get_by_test_id("v1-import").count() == 0
    assert page.errors == []
