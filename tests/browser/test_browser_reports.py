"""Accounting views (issue 16) in Chromium, on a world of their own (seeded over
HTTP here, so these tests do not depend on the story in test_browser_pages.py, nor
change what it shows): an operator with a machine, an LP with a confirmed and a
pending deposit, one cash-out paid, and a settlement the float cannot pay.

The LP lands on "My DCA" with no operator tab and sees their deposits, statement
(table, CSV, printable page); the operator filters the payments table, voids the
unpayable settlement with a reason and finds it in the audit trail, and reads the
volumes by period with their chart; the super user reads the platform overview.
"""

import csv
import io
import uuid
from typing import Any

import pytest
import ui
from harness import API, SATS_PER_UNIT, Server, call, new_wallet, register

MACHINE = "ATM Norte"
LP_NAME = "Bea LP"
FIAT = "20.00"
PRINCIPAL = 20 * SATS_PER_UNIT  # 3000
FEE = 100


def _cash_out(http: Any, server: Server, wallet: dict, txid: str) -> None:
    extra = {
        "source": "bitspire",
        "type": "cash_out",
        "wire_sats": PRINCIPAL + FEE,
        "principal_sats": PRINCIPAL,
        "fee_sats": FEE,
        "fiat_amount": FIAT,
        "currency": "GTQ",
        "txid": txid,
    }
    invoice = call(
        http,
        "POST",
        "/api/v1/payments",
        key=wallet["inkey"],
        body={"out": False, "amount": PRINCIPAL + FEE, "memo": "ATM", "extra": extra},
    )
    call(
        http,
        "POST",
        "/api/v1/payments",
        key=server.customer["adminkey"],
        body={"out": True, "bolt11": invoice["bolt11"]},
    )


@pytest.fixture(scope="module")
def world(server: Server, http: Any) -> dict:
    import time

    suffix = uuid.uuid4().hex[:6]
    operator = register(http, f"acct_op_{suffix}")
    new_wallet(http, operator, "Commission")
    lp = register(http, f"acct_lp_{suffix}")
    call(
        http,
        "PUT",
        f"{API}/lp",
        key=lp.wallet["adminkey"],
        body={"wallet_id": lp.wallet["id"], "dca_mode": "flow"},
    )
    admin_key = operator.wallet["adminkey"]
    machine = call(
        http,
        "POST",
        f"{API}/machines",
        key=admin_key,
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
        key=admin_key,
        body={"machine_id": machine["id"], "user_id": lp.id, "username": LP_NAME},
    )
    for amount, confirm in (("100.00", True), ("15.00", False)):
        deposit = call(
            http,
            "POST",
            f"{API}/deposits",
            key=admin_key,
            body={"client_id": client["id"], "amount": amount},
        )
        if confirm:
            call(http, "POST", f"{API}/deposits/{deposit['id']}/confirm", key=admin_key)
    _cash_out(http, server, operator.wallet, f"acct-{suffix}")

    def wait_for(what: str, done: Any) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.5)
        raise AssertionError(f"the engine did not {what} within 60 s")

    # The engine pays the cash-out first (its principal is the LP's 20.00) ...
    wait_for(
        "pay the cash-out",
        lambda: call(
            http,
            "GET",
            f"{API}/legs?leg_type=dca&status=completed",
            key=operator.wallet["inkey"],
        ),
    )
    # ... then a settlement worth more than the float holds: errored, its LP leg
    # (the LP's remaining 80.00, 12,000 sats) failed and retried, never paid.
    unpayable = call(
        http,
        "POST",
        f"{API}/settlements",
        key=admin_key,
        body={
            "machine_id": machine["id"],
            "tx_type": "cash_out",
            "external_id": f"unpayable-{suffix}",
            "fiat_amount": "5000.00",
            "principal_sats": 5000 * SATS_PER_UNIT,
            "fee_sats": 0,
        },
    )
    wait_for(
        "error on the unpayable settlement",
        lambda: (
            call(
                http,
                "GET",
                f"{API}/settlements/{unpayable['id']}",
                key=operator.wallet["inkey"],
            )["status"]
            == "errored"
        ),
    )
    return {
        "operator": operator,
        "lp": lp,
        "machine": machine,
        "client": client,
        "unpayable": unpayable,
    }


async def test_lp_lands_on_my_dca_with_deposits_and_statement(
    server: Server, sessions: Any, world: dict, shots_dir: Any
) -> None:
    lp = world["lp"]
    page = await sessions.page(lp)
    await page.get_by_test_id("lp-summary").filter(has_text=MACHINE).wait_for()
    # only their own page: no operator tab
    assert await page.get_by_role("tab", name="My DCA").count() == 1
    for operator_tab in ("Machines", "Settlements", "Payments", "Audit trail"):
        assert await page.get_by_role("tab", name=operator_tab).count() == 0

    deposits = ui.rows(page, "lp-deposits")
    await deposits.filter(has_text="15.00 GTQ").wait_for()
    texts = sorted(await deposits.all_inner_texts())
    assert len(texts) == 2
    assert "100.00 GTQ" in texts[0] and "confirmed" in texts[0], texts
    assert "15.00 GTQ" in texts[1] and "pending" in texts[1], texts

    statement = ui.rows(page, "statement-table")
    total = statement.filter(has_text="Total")
    await total.wait_for()
    text = await total.inner_text()
    # the only LP: the whole principal is theirs, at 150 sats/GTQ
    assert "100.00 GTQ (1)" in text and "3,000" in text and "20.00 GTQ" in text, text
    assert "666,666.67 GTQ" in text, text
    await ui.shot(page, shots_dir, "my-dca-statement")

    async with page.expect_download() as download_info:
        await page.get_by_test_id("statement-csv").click()
    path = await (await download_info.value).path()
    rows = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8").read())))
    totals = [r for r in rows if r["period"] == "total"]
    assert [(r["payout_sats"], r["payout_fiat"], r["deposits"]) for r in totals] == [
        ("3000", "20.00", "100.00")
    ]

    async with page.context.expect_page() as opened:
        await page.get_by_test_id("statement-print").click()
    printable = await opened.value
    await printable.get_by_test_id("lp-statement-page").wait_for()
    body = await printable.inner_text("body")
    assert MACHINE in body and "666666.67" in body and "pending" in body, body
    await ui.shot(printable, shots_dir, "lp-statement-printable")
    await printable.close()

    # an LP who starts operating asks for the operator's tabs
    await page.get_by_test_id("show-operator-tabs").click()
    await page.get_by_role("tab", name="Machines").wait_for()
    await page.get_by_text("No machine yet").wait_for()
    assert page.errors == []


async def test_operator_payments_void_and_audit(
    server: Server, sessions: Any, http: Any, world: dict, shots_dir: Any
) -> None:
    operator = world["operator"]
    page = await sessions.page(operator, "payments")
    table = ui.rows(page, "payments-table")
    await table.filter(has_text="dca").first.wait_for()
    await ui.choose(page, "Kind", "DCA (flow)")
    await table.filter(has_text="3,000").wait_for()
    # The unfiltered rows held a 3,000-sat dca leg too: wait for the filtered page
    # (a table being reloaded shows a row without cells for a moment).
    kinds: list[str] = []
    for _ in range(100):
        texts = await table.all_inner_texts()
        kinds = [t.split("\t")[2].strip() for t in texts if t.count("\t") >= 2]
        if kinds and len(kinds) == len(texts) and set(kinds) == {"dca"}:
            break
        await page.wait_for_timeout(200)
    assert kinds and set(kinds) == {"dca"}, kinds
    await ui.choose(page, "Status", "failed")
    await table.filter(has_text="12,000").first.wait_for()  # the unpayable one
    await ui.shot(page, shots_dir, "payments")

    # void the unpayable settlement from its detail, with a reason
    await ui.tab(page, "Settlements")
    ref = world["unpayable"]["external_id"]
    row = ui.rows(page, "settlements-table").filter(has_text=ref[:10])
    await row.first.click()
    detail = page.get_by_test_id("settlement-detail")
    await detail.get_by_test_id("void-settlement").click()
    form = page.get_by_test_id("void-form")
    submit = form.get_by_role("button", name="Void settlement")
    assert await submit.is_disabled()  # a reason is required
    await form.get_by_label("Reason *").fill("test entry, never dispensed")
    await ui.shot(page, shots_dir, "void-dialog")
    await submit.click()
    await ui.notified(page, "Voided")
    await detail.locator(".q-chip").filter(has_text="voided").first.wait_for()
    shown = call(
        http,
        "GET",
        f"{API}/settlements/{world['unpayable']['id']}",
        key=operator.wallet["inkey"],
    )
    assert shown["status"] == "voided"
    assert {leg["status"] for leg in shown["legs"]} == {"voided"}
    balance = call(
        http,
        "GET",
        f"{API}/clients/{world['client']['id']}/balance",
        key=operator.wallet["inkey"],
    )
    assert balance["remaining_balance"] == "80.00"  # only the paid 20.00 is gone
    await page.keyboard.press("Escape")

    await ui.tab(page, "Audit trail")
    audit = ui.rows(page, "audit-table")
    entry = audit.filter(has_text="settlement.void")
    await entry.wait_for()
    assert "test entry, never dispensed" in await entry.inner_text()
    await ui.shot(page, shots_dir, "audit-trail")
    assert page.errors == []


async def test_operator_reads_volumes_by_period(
    server: Server, sessions: Any, world: dict, shots_dir: Any
) -> None:
    operator = world["operator"]
    page = await sessions.page(operator, "reports")
    report = page.get_by_test_id("period-report")
    rows = ui.rows(page, "period-table")
    total = rows.filter(has_text="All machines")
    await total.wait_for()
    cells = [c.strip() for c in await total.locator("td").all_inner_texts()]
    # period, machine, cash-outs, cash out, cash-ins, cash in, principal,
    # commission, platform, operator, orphan, to LPs (sats), to LPs (fiat)
    assert cells[1:4] == ["All machines", "1", "20.00 GTQ"], cells
    assert cells[6:8] == ["3,000", "100"], cells
    assert cells[11:] == ["3,000", "20.00 GTQ"], cells
    drawn = await page.evaluate(
        "() => Chart.getChart(document.querySelector('[data-testid=period-chart]'))"
        "?.data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"
    )
    assert ["to LPs", 3000] in drawn, drawn
    await report.get_by_role("button", name="Month").click()
    await rows.filter(has_text="All machines").wait_for()
    await ui.shot(page, shots_dir, "reports-by-period")
    assert page.errors == []


async def test_super_user_reads_the_platform_overview(
    server: Server, sessions: Any, world: dict, shots_dir: Any
) -> None:
    admin = server.accounts["admin"]
    page = await sessions.page(admin, "platform")
    machines = ui.rows(page, "platform-machines-table")
    mine = machines.filter(has_text=MACHINE)
    await mine.wait_for()
    assert world["operator"].username in await mine.inner_text()
    volumes = ui.rows(page, "platform-volumes").filter(has_text=MACHINE)
    await volumes.first.wait_for()
    text = await volumes.first.inner_text()
    assert "20.00 GTQ" in text and "100" in text, text
    drawn = await page.evaluate(
        "() => Chart.getChart(document.querySelector("
        "'[data-testid=platform-fee-chart]'))?.data.datasets[0].data.length"
    )
    assert drawn and drawn >= 1
    await ui.shot(page, shots_dir, "platform-overview")
    assert page.errors == []
