"""Fixed mode on a schedule and small balances settled, in a real LNbits."""

import asyncio
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.usefixtures("drained_engine")

API = "/satmachineadmin/api/v1"


@pytest.fixture
async def no_platform_fee(factory, super_user):
    await factory.platform(super_user, "0", None)


async def _funded_operator(factory, sats=1_000_000):
    operator = await factory.operator()
    funding = await factory.wallet(operator, "funding")
    await factory.fund(funding, sats)
    return operator, funding


# ---------------------------------------------------------------- small balances


async def test_manual_settle_bob_47_gtq_at_150_is_7050_sats(
    http, factory, no_platform_fee
):
    operator, funding = await _funded_operator(factory)
    machine = await factory.machine(operator)
    bob = await factory.lp()
    client = await factory.enrol(operator, machine, bob, deposit="47.00")

    response = await http.post(
        f"{API}/clients/{client['id']}/settle",
        headers=operator.admin,
        json={"funding_wallet_id": funding.id, "exchange_rate": "150"},
    )
    assert response.status_code == 201, response.text
    leg = response.json()
    assert leg["leg_type"] == "settlement"
    assert leg["status"] == "completed"
    assert leg["amount_sats"] == 7_050
    assert leg["amount_fiat"] == "47.00"
    assert "cycle complete" in leg["memo"]
    assert await factory.balance(bob.wallet) == 7_050
    assert await factory.balance(funding) == 1_000_000 - 7_050
    balance = await factory.balance_of(operator, client["id"])
    assert balance["remaining_balance"] == "0.00"
    assert balance["cycle_complete"] is True
    summary = (await http.get(f"{API}/lp/summary", headers=bob.invoice)).json()
    assert summary[0]["cycle_complete"] is True
    assert summary[0]["sats_received"] == 7_050


async def test_partial_settle_at_the_current_rate(http, factory, no_platform_fee):
    operator, funding = await _funded_operator(factory)
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="100.00")
    # No stated rate: the exchange-rate service (fixed at 150 sats/GTQ in tests).
    response = await http.post(
        f"{API}/clients/{client['id']}/settle",
        headers=operator.admin,
        json={"funding_wallet_id": funding.id, "amount_fiat": "20.00"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["amount_sats"] == 3_000
    balance = await factory.balance_of(operator, client["id"])
    assert balance["remaining_balance"] == "80.00"
    assert balance["cycle_complete"] is False


async def test_settle_refusals_change_nothing(http, factory, no_platform_fee):
    operator, funding = await _funded_operator(factory)
    other, other_funding = await _funded_operator(factory)
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="10.00")
    empty_lp = await factory.lp()
    empty_client = await factory.enrol(operator, machine, empty_lp)

    cases = [
        (
            client["id"],
            {"funding_wallet_id": other_funding.id, "exchange_rate": "150"},
            403,
        ),
        (client["id"], {"funding_wallet_id": funding.id, "amount_fiat": "10.01"}, 422),
        (client["id"], {"funding_wallet_id": funding.id, "amount_fiat": "1.001"}, 400),
        (client["id"], {"funding_wallet_id": funding.id, "exchange_rate": "-5"}, 400),
        (empty_client["id"], {"funding_wallet_id": funding.id}, 422),
    ]
    for client_id, body, status in cases:
        response = await http.post(
            f"{API}/clients/{client_id}/settle", headers=operator.admin, json=body
        )
        assert response.status_code == status, (body, response.text)
        assert response.json()["detail"]
    # Another operator cannot settle this LP at all.
    response = await http.post(
        f"{API}/clients/{client['id']}/settle",
        headers=other.admin,
        json={"funding_wallet_id": other_funding.id},
    )
    assert response.status_code == 404
    assert (await factory.balance_of(operator, client["id"]))[
        "remaining_balance"
    ] == "10.00"
    assert await factory.balance(lp.wallet) == 0
    assert await factory.balance(funding) == 1_000_000
    assert await factory.balance(other_funding) == 1_000_000


async def test_empty_funding_wallet_fails_visibly_and_retries_later(
    http, factory, no_platform_fee
):
    from satmachineadmin import crud
    from satmachineadmin.engine import payouts

    operator = await factory.operator()
    funding = await factory.wallet(operator, "funding")
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="10.00")
    response = await http.post(
        f"{API}/clients/{client['id']}/settle",
        headers=operator.admin,
        json={"funding_wallet_id": funding.id, "exchange_rate": "150"},
    )
    assert response.status_code == 201
    leg = response.json()
    assert leg["status"] == "failed"
    assert "insufficient" in leg["error"]
    # The balance stays reserved for this owed leg: it cannot be settled twice.
    assert (await factory.balance_of(operator, client["id"]))[
        "remaining_balance"
    ] == "0.00"
    await factory.fund(funding, 5_000)
    await crud.db.execute(
        "UPDATE satmachineadmin.legs SET updated_at = 0 WHERE id = :id",
        {"id": leg["id"]},
    )
    assert await payouts.retry_standalone_legs() == 1
    assert await factory.balance(lp.wallet) == 1_500
    assert (await crud.get_leg(leg["id"])).status == "completed"


@pytest.mark.parametrize(
    "threshold_type,threshold_value,deposit,cash_out_fiat,expected_sats",
    [
        ("absolute", "50.00", "100.00", "53.00", 7_050),  # Bob left with 47.00 GTQ
        ("percent", "5", "1000.00", "960.00", 6_000),  # 40.00 left is 4 % < 5 %
    ],
)
async def test_auto_settlement_after_distribution(
    http,
    factory,
    no_platform_fee,
    threshold_type,
    threshold_value,
    deposit,
    cash_out_fiat,
    expected_sats,
):
    operator, funding = await _funded_operator(factory)
    machine = await factory.machine(operator)
    response = await http.put(
        f"{API}/machines/{machine['id']}/auto-settlement",
        headers=operator.admin,
        json={
            "enabled": True,
            "threshold_type": threshold_type,
            "threshold_value": threshold_value,
            "funding_wallet_id": funding.id,
        },
    )
    assert response.status_code == 200, response.text
    bob = await factory.lp()
    client = await factory.enrol(operator, machine, bob, deposit=deposit)
    customer = await factory.user()
    await factory.fund(customer.wallet, 1_000_000)
    fiat_minor = int(cash_out_fiat.replace(".", ""))
    principal = fiat_minor * 150 // 100
    played = await factory.cash_out(
        machine, customer.wallet, cash_out_fiat, principal, 0
    )
    await factory.settlement_of(played["payment_hash"])
    await factory.run_engine()

    assert await factory.balance(bob.wallet) == principal + expected_sats
    assert await factory.balance(funding) == 1_000_000 - expected_sats
    balance = await factory.balance_of(operator, client["id"])
    assert balance["remaining_balance"] == "0.00"
    assert balance["cycle_complete"] is True
    legs = (
        await http.get(
            f"{API}/payments?client_id={client['id']}", headers=operator.invoice
        )
    ).json()
    assert sorted((leg["leg_type"], leg["amount_sats"]) for leg in legs) == sorted(
        [("dca", principal), ("settlement", expected_sats)]
    )


async def test_auto_settlement_config_refusals(http, factory):
    operator, funding = await _funded_operator(factory)
    other, other_funding = await _funded_operator(factory)
    machine = await factory.machine(operator)
    url = f"{API}/machines/{machine['id']}/auto-settlement"
    cases = [
        (
            {
                "enabled": True,
                "threshold_type": "absolute",
                "threshold_value": "50",
                "funding_wallet_id": other_funding.id,
            },
            403,
        ),
        (
            {
                "enabled": True,
                "threshold_type": "weird",
                "threshold_value": "50",
                "funding_wallet_id": funding.id,
            },
            400,
        ),
        (
            {
                "enabled": True,
                "threshold_type": "percent",
                "threshold_value": "150",
                "funding_wallet_id": funding.id,
            },
            400,
        ),
        (
            {
                "enabled": True,
                "threshold_type": "absolute",
                "threshold_value": "-1",
                "funding_wallet_id": funding.id,
            },
            400,
        ),
        (
            {
                "enabled": True,
                "threshold_type": "absolute",
                "threshold_value": "1.001",
                "funding_wallet_id": funding.id,
            },
            400,
        ),
        ({"enabled": True, "threshold_type": "absolute", "threshold_value": "50"}, 400),
        ({"enabled": "yes"}, 400),
    ]
    for body, status in cases:
        response = await http.put(url, headers=operator.admin, json=body)
        assert response.status_code == status, (body, response.text)
    response = await http.put(url, headers=other.admin, json=cases[0][0])
    assert response.status_code == 404
    machine_now = (
        await http.get(f"{API}/machines/{machine['id']}", headers=operator.invoice)
    ).json()
    assert machine_now["auto_settlement"]["enabled"] is False


# ---------------------------------------------------------------- fixed mode


async def _fixed_setup(
    http, factory, times, zone, limit="30.00", deposit="1000.00", float_sats=10_000_000
):
    operator = await factory.operator()
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], float_sats)
    response = await http.put(
        f"{API}/machines/{machine['id']}/fixed-schedule",
        headers=operator.admin,
        json={"times": times, "timezone": zone},
    )
    assert response.status_code == 200, response.text
    lp = await factory.lp(mode="fixed", limit=limit)
    client = await factory.enrol(operator, machine, lp, deposit=deposit)
    flow_lp = await factory.lp()
    await factory.enrol(operator, machine, flow_lp, deposit="100.00")
    return operator, machine, lp, client, flow_lp


async def _machine_row(machine_id):
    from satmachineadmin import crud

    return await crud.get_machine(machine_id)


async def test_a_week_of_slots_across_a_dst_change_pays_each_slot_once(
    http, factory, no_platform_fee
):
    """America/New_York falls back on 2026-11-01: 01:30 happens twice that night."""
    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode
    from satmachineadmin.engine.faults import EngineCrash, crash_points

    zone = ZoneInfo("America/New_York")
    operator, machine, lp, client, flow_lp = await _fixed_setup(
        http, factory, ["18:00", "01:30", "09:00"], "America/New_York"
    )
    row = await _machine_row(machine["id"])
    start = datetime(2026, 10, 29, 0, 0, tzinfo=zone).astimezone(timezone.utc)
    tick = start
    crashed = False
    while tick < start + timedelta(days=7):
        if (
            not crashed
            and tick.astimezone(zone).hour == 9
            and tick.astimezone(zone).day == 31
        ):
            # A restart in the middle of a slot: killed after the invoice, before paying.
            crash_points["after_invoice"] = 0
            with pytest.raises(EngineCrash):
                await fixed_mode.run_slot(row, tick)
            crashed = True
            await crud.db.execute(
                "UPDATE satmachineadmin.legs SET claimed_until = NULL"
            )
        await fixed_mode.run_slot(row, tick)
        tick += timedelta(minutes=30)

    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=1000)
    keys = [(leg.slot_date, leg.slot_index) for leg in legs]
    assert len(keys) == len(set(keys))
    assert all(leg.status == "completed" for leg in legs)
    per_day = defaultdict(int)
    for leg in legs:
        per_day[leg.slot_date] += leg.amount_fiat_minor
    assert sorted(per_day) == [
        f"2026-{d}"
        for d in ("10-29", "10-30", "10-31", "11-01", "11-02", "11-03", "11-04")
    ]
    assert all(total == 3_000 for total in per_day.values()), per_day
    assert len(legs) == 21
    assert all(leg.amount_sats == 1_500 for leg in legs)
    assert await factory.balance(lp.wallet) == 21 * 1_500
    assert await factory.balance(flow_lp.wallet) == 0
    assert (await factory.balance_of(operator, client["id"]))[
        "remaining_balance"
    ] == "790.00"


async def test_spring_forward_slot_in_the_missing_hour_still_pays_once(
    http, factory, no_platform_fee
):
    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode

    zone = ZoneInfo("America/New_York")
    operator, machine, lp, client, _ = await _fixed_setup(
        http, factory, ["02:30"], "America/New_York"
    )
    row = await _machine_row(machine["id"])
    tick = datetime(2027, 3, 14, 0, 0, tzinfo=zone).astimezone(timezone.utc)
    for _ in range(12):
        await fixed_mode.run_slot(row, tick)
        tick += timedelta(minutes=30)
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert [(leg.slot_date, leg.amount_fiat_minor) for leg in legs] == [
        ("2027-03-14", 3_000)
    ]


async def test_last_slot_pays_the_rest_of_the_day_and_never_more(
    http, factory, no_platform_fee
):
    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode

    operator, machine, lp, client, _ = await _fixed_setup(
        http,
        factory,
        ["08:00", "12:00", "16:00"],
        "UTC",
        limit="10.00",
        deposit="25.00",
    )
    row = await _machine_row(machine["id"])
    day = datetime(2026, 11, 20, tzinfo=timezone.utc)
    # The scheduler was down for the first two slots: the last one pays the day's rest.
    await fixed_mode.run_slot(row, day.replace(hour=17))
    await fixed_mode.run_slot(row, day.replace(hour=23))
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert [(leg.slot_index, leg.amount_fiat_minor) for leg in legs] == [(2, 1_000)]
    next_day = day + timedelta(days=1)
    for hour in (8, 12, 16):
        await fixed_mode.run_slot(row, next_day.replace(hour=hour))
    day_three = day + timedelta(days=2)
    for hour in (8, 12, 16):
        await fixed_mode.run_slot(row, day_three.replace(hour=hour))
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert (
        sum(leg.amount_fiat_minor for leg in legs) == 2_500
    )  # never more than deposited
    balance = await factory.balance_of(operator, client["id"])
    assert balance["remaining_balance"] == "0.00"
    assert balance["cycle_complete"] is True


async def test_manual_run_racing_the_scheduler_pays_once(
    http, factory, no_platform_fee
):
    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode

    operator, machine, lp, client, _ = await _fixed_setup(
        http, factory, ["00:00"], "UTC"
    )
    row = await _machine_row(machine["id"])
    results = await asyncio.gather(
        fixed_mode.run_slot(row),
        fixed_mode.run_slot(row),
        fixed_mode.run_due_slots(),
        http.post(f"{API}/machines/{machine['id']}/fixed-run", headers=operator.admin),
    )
    assert results[3].status_code == 200
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert len(legs) == 1
    assert legs[0].status == "completed"
    assert await factory.balance(lp.wallet) == 30_00 * 150 // 100


async def test_no_rate_skips_the_slot_with_the_reason_and_pays_nothing(
    http, factory, no_platform_fee
):
    from satmachineadmin import crud
    from satmachineadmin.engine import rates

    operator, machine, lp, client, _ = await _fixed_setup(
        http, factory, ["00:00"], "UTC"
    )
    working = rates.service_rate

    async def offline(currency: str) -> float:
        raise ValueError("offline")

    rates.service_rate = offline
    try:
        response = await http.post(
            f"{API}/machines/{machine['id']}/fixed-run", headers=operator.admin
        )
    finally:
        rates.service_rate = working
    assert response.status_code == 200, response.text
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert [leg.status for leg in legs] == ["skipped"]
    assert "no exchange rate" in legs[0].error
    assert await factory.balance(lp.wallet) == 0
    assert (await factory.balance_of(operator, client["id"]))[
        "remaining_balance"
    ] == "1000.00"


async def test_fixed_schedule_refusals(http, factory):
    operator = await factory.operator()
    machine = await factory.machine(operator)
    url = f"{API}/machines/{machine['id']}/fixed-schedule"
    for body in (
        {"times": ["25:00"], "timezone": "UTC"},
        {"times": ["9:00"], "timezone": "UTC"},
        {"times": ["09:00", "09:00"], "timezone": "UTC"},
        {"times": ["09:00"], "timezone": "Mars/Olympus"},
        {"times": [9], "timezone": "UTC"},
        {"times": "09:00", "timezone": "UTC"},
    ):
        response = await http.put(url, headers=operator.admin, json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["detail"]
    response = await http.post(
        f"{API}/machines/{machine['id']}/fixed-run", headers=operator.admin
    )
    assert response.status_code == 409


async def test_two_slots_of_a_day_planned_at_once_never_pass_the_daily_limit(
    http, factory, no_platform_fee
):
    """Two slots of one day run at the same moment (two LNbits processes either side
    of a slot's time, or a manual run as the schedule changes): both read what the
    LP was paid that day before either wrote. The day's total is checked again
    inside each leg's transaction: the LP is paid at most their daily limit, and the
    slot that waited is paid the day's rest on the next tick."""
    from satmachineadmin import crud
    from satmachineadmin.engine import fixed_mode

    operator, machine, lp, client, _ = await _fixed_setup(
        http, factory, ["08:00", "12:00"], "UTC", limit="10.00", deposit="100.00"
    )
    row = await _machine_row(machine["id"])
    day = datetime(2026, 11, 24, tzinfo=timezone.utc)
    await asyncio.gather(
        fixed_mode.run_slot(row, day.replace(hour=9)),
        fixed_mode.run_slot(row, day.replace(hour=13)),
    )
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert sum(leg.amount_fiat_minor for leg in legs) <= 1_000
    await fixed_mode.run_slot(row, day.replace(hour=13))
    await fixed_mode.run_slot(row, day.replace(hour=23))
    legs = await crud.list_legs(client_id=client["id"], leg_type="fixed", limit=100)
    assert sum(leg.amount_fiat_minor for leg in legs) == 1_000
    assert {leg.status for leg in legs} == {"completed"}
    assert await factory.balance(lp.wallet) == 1_000 * 150 // 100
