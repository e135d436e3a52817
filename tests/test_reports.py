"""Reports an operator keeps: CSV exports without a cap, volumes by period."""

from decimal import Decimal

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

API = "/satmachineadmin/api/v1"


@pytest.fixture
async def no_platform_fee(factory, super_user):
    await factory.platform(super_user, "0", None)


async def test_csv_exports_have_no_cap(http, factory, no_platform_fee):
    """Before: the legs CSV was silently cut at 500 rows. Both exports now stream
    every matching row, oldest first, a page at a time."""
    import csv
    import io

    from lnbits.db import insert_query, model_to_dict

    from satmachineadmin import crud
    from satmachineadmin.intake import settlement_draft
    from satmachineadmin.models import Leg

    operator = await factory.operator()
    machine = await factory.machine(operator)
    row = await crud.get_machine(machine["id"])
    start = crud.now() - 86_400
    settlements = [
        settlement_draft(
            machine=row,
            super_fee_fraction=Decimal(0),
            source="manual",
            external_id=f"export-{i}",
            tx_type="cash_in",
            fiat_amount_minor=100,
            principal_sats=150,
            fee_sats=0,
            wire_sats=150,
        ).copy(update={"status": "processed", "created_at": start + i // 3})
        for i in range(1_234)
    ]
    legs = [
        Leg(
            id=crud.new_id(),
            idempotency_key=f"export:{s.id}",
            settlement_id=s.id,
            machine_id=row.id,
            operator_user_id=row.operator_user_id,
            leg_type="operator_split",
            status="completed",
            amount_sats=1,
            created_at=s.created_at,
            updated_at=s.created_at,
        )
        for s in settlements
    ]
    async with crud.transaction() as tx:
        await tx.execute_many(
            insert_query("satmachineadmin.settlements", settlements[0]),
            [model_to_dict(s) for s in settlements],
        )
        await tx.execute_many(
            insert_query("satmachineadmin.legs", legs[0]),
            [model_to_dict(leg) for leg in legs],
        )

    exported = await http.get(
        f"{API}/legs.csv",
        headers=operator.invoice,
        params={"machine_id": machine["id"], "limit": 10},
    )
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 1_234
    assert [r["leg_id"] for r in rows] == [leg.id for leg in legs]

    exported = await http.get(
        f"{API}/settlements.csv",
        headers=operator.invoice,
        params={"machine_id": machine["id"], "status": "processed"},
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["settlement_id"] for r in rows] == [s.id for s in settlements]
    assert rows[0]["fiat_amount"] == "1.00" and rows[0]["estimated"] == "no"
    # A window of time: only what it holds.
    from datetime import datetime, timezone

    def at(epoch):
        return datetime.fromtimestamp(epoch, timezone.utc).isoformat()

    exported = await http.get(
        f"{API}/settlements.csv",
        headers=operator.invoice,
        params={"since": at(start + 100), "until": at(start + 200)},
    )
    assert len(list(csv.DictReader(io.StringIO(exported.text)))) == 300
    # Another operator's machine: 404, nothing exported.
    stranger = await factory.operator()
    refused = await http.get(
        f"{API}/settlements.csv",
        headers=stranger.invoice,
        params={"machine_id": machine["id"]},
    )
    assert refused.status_code == 404


async def test_reports_by_period_add_up_per_machine_and_in_total(
    http, factory, no_platform_fee
):
    operator = await factory.operator()
    m1 = await factory.machine(operator)
    m2 = await factory.machine(operator, wallet=await factory.wallet(operator, "m2"))
    lp = await factory.lp()
    await factory.enrol(operator, m1, lp, deposit="30.00")
    customer = await factory.user()
    await factory.fund(customer.wallet, 100_000)
    for machine, fiat, principal, fee in (
        (m1, "10.00", 1_500, 100),
        (m1, "20.00", 3_000, 200),
        (m2, "5.00", 750, 50),
    ):
        played = await factory.cash_out(machine, customer.wallet, fiat, principal, fee)
        assert await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()
    await factory.run_engine()

    answer = await http.get(
        f"{API}/reports", headers=operator.invoice, params={"period": "day"}
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    assert len({r["period"] for r in rows}) == 1
    by_machine = {r["machine_id"]: r for r in rows}
    one, two, total = by_machine[m1["id"]], by_machine[m2["id"]], by_machine[None]
    assert (one["cash_outs"], one["cash_out_fiat"], one["principal_sats"]) == (
        2,
        "30.00",
        4_500,
    )
    assert (one["commission_sats"], one["lp_payout_sats"], one["lp_payout_fiat"]) == (
        300,
        4_500,
        "30.00",
    )
    # No LP at m2: its principal is a skipped leg (not orphan sats), nobody paid.
    assert (two["cash_outs"], two["orphan_sats"], two["lp_payout_sats"]) == (1, 0, 0)
    for field in ("cash_outs", "principal_sats", "commission_sats", "orphan_sats"):
        assert total[field] == one[field] + two[field], field
    assert total["cash_out_fiat"] == "35.00"
    monthly = await http.get(
        f"{API}/reports",
        headers=operator.invoice,
        params={"period": "month", "machine_id": m2["id"]},
    )
    assert [r["machine_id"] for r in monthly.json()] == [m2["id"], None]
    bad = await http.get(
        f"{API}/reports", headers=operator.invoice, params={"period": "year"}
    )
    assert bad.status_code == 400
