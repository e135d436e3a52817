"""Payload fuzzing: whatever an ATM or a Lamassu database hands us.

Hypothesis drives three things:
1. `lamassu_mapping.map_amounts`, the Lamassu row mapper, over any row (every column the poller
   selects, each value of the type asyncpg gives, out of range, NaN, infinite, huge,
   or of a wrong type): it returns amounts that keep docs/money.md's invariants, or raises
   one of the errors the poller turns into a `rejected` settlement with the reason.
2. The poller's landing step (`lamassu_mapping.draft_row`, `_land_drafts`) over any row, against the real
   database: it never raises; the row becomes a pending settlement that keeps the
   invariants or a `rejected` one with a reason.
3. `bitspire.ingest_payment` through the real listener, with real payments: any
   `extra` on a real invoice paid into a machine wallet becomes a pending settlement
   that matches the payment and keeps the invariants, or a `rejected` one with a
   reason; then the engine distributes them all and every settlement's legs account
   for its sats exactly.
(tests/test_bitspire.py has its own property test over bitspire.validate.)

SATMACHINE_FUZZ_EXAMPLES scales every example count here as in test_fuzz_api.py
(default 6: 1,200 rows for the pure mapper, 60 landed rows, 30 real payments).
"""

import asyncio
import os
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

SCALE = int(os.environ.get("SATMACHINE_FUZZ_EXAMPLES", "6"))
MAX_SATS = 2_100_000_000_000_000
CAUGHT = (
    ValueError,
    TypeError,
    ArithmeticError,
)  # what lamassu_mapping.draft_row rejects

# ---------------------------------------------------------------- any Lamassu row

decimals = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-(10**6), max_value=10**7, places=5),
    st.integers(min_value=-(10**31), max_value=10**31).map(Decimal),
    st.sampled_from(
        [
            Decimal("0"),
            Decimal("-0"),
            Decimal("1E+999999"),
            Decimal("1E-999999"),
            Decimal("826091.28"),
            Decimal("4000"),
            Decimal("0.055"),
            Decimal("sNaN"),
        ]
    ),
)
odd = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(),
)
numeric = st.one_of(st.none(), decimals, decimals, decimals, odd)
atoms = st.one_of(
    st.integers(min_value=-5, max_value=10**31).map(Decimal),
    st.integers(min_value=1, max_value=2_000_000).map(Decimal),
    numeric,
)


@st.composite
def plausible(draw: Any, tx_type: str) -> dict:
    """A row a healthy Lamassu writes: GTQ, a ticker, a commission, consistent atoms."""
    fiat = Decimal(draw(st.integers(1, 500_000))) / 100
    ticker = Decimal(draw(st.integers(10_000_000, 200_000_000))) / 100
    commission = Decimal(draw(st.integers(0, 150))) / 1000
    principal = int(fiat * 100_000_000 / ticker)
    fee = int(principal * commission)
    atoms = principal + fee if tx_type == "cash_out" else max(1, principal - fee)
    row = {
        "crypto_atoms": Decimal(atoms),
        "fiat": fiat,
        "fiat_code": "GTQ",
        "raw_ticker_price": ticker,
        "commission_percentage": commission,
        "discount": draw(st.sampled_from([None, 0, 10])),
    }
    if draw(st.booleans()):
        row.pop("raw_ticker_price")  # the estimated path
    return row


@st.composite
def lamassu_rows(draw: Any, tx_type: str) -> dict:
    """Any row the poller may select: plausible ones, then 0-3 columns broken."""
    row: dict = {
        "id": uuid.uuid4(),
        "device_id": draw(st.sampled_from(["a" * 64, "B" * 64, ""])),
        "crypto_code": draw(st.sampled_from(["BTC", "LN"])),
        "error": None,
        "created": datetime.now(timezone.utc)
        - timedelta(seconds=draw(st.integers(0, 10**6))),
        **draw(plausible(tx_type)),
    }
    if tx_type == "cash_out":
        row.update(status="confirmed", dispense_confirmed=True)
        fee_column = "fixed_fee"
    else:
        row.update(send_confirmed=True)
        fee_column = "cash_in_fee"
    broken = {
        "crypto_atoms": atoms,
        "fiat": numeric,
        "fiat_code": st.one_of(
            st.sampled_from(["gtq", "USD", "", "GTQ "]), st.none(), st.text(max_size=4)
        ),
        "raw_ticker_price": numeric,
        "commission_percentage": numeric,
        "discount": st.one_of(st.none(), st.integers(-32768, 32767), odd),
        fee_column: numeric,
    }
    for name in draw(
        st.lists(st.sampled_from(sorted(broken)), max_size=3, unique=True)
    ):
        row[name] = draw(broken[name])
    return row


def machine(currency: str = "GTQ") -> Any:
    from satmachineadmin.models import Machine

    return Machine(
        id=uuid.uuid4().hex,
        operator_user_id=uuid.uuid4().hex,
        name="ATM",
        wallet_id=uuid.uuid4().hex,
        fiat_currency=currency,
        sweep_cursor=0,
        created_at=0,
        updated_at=0,
    )


def check_mapped(tx_type: str, row: dict, mapped: Any) -> None:
    """docs/money.md for what the mapper lets through."""
    amounts = mapped.amounts
    for name, value in (
        ("fiat_minor", mapped.fiat_minor),
        ("crypto_atoms", mapped.crypto_atoms),
        ("principal_sats", amounts.principal_sats),
        ("fee_sats", amounts.fee_sats),
    ):
        assert type(value) is int, (name, value, row)
    assert mapped.fiat_minor > 0, row
    assert 0 < mapped.crypto_atoms <= MAX_SATS, row
    assert amounts.principal_sats >= 0 and amounts.fee_sats >= 0, (amounts, row)
    if tx_type == "cash_out":
        assert amounts.principal_sats + amounts.fee_sats == mapped.crypto_atoms, (
            amounts,
            row,
        )
    else:
        assert amounts.principal_sats - amounts.fee_sats == mapped.crypto_atoms, (
            amounts,
            row,
        )
    assert amounts.principal_sats <= MAX_SATS, (amounts, row)


def map_or_reject(tx_type: str, row: dict, target: Any) -> Any:
    from satmachineadmin.lamassu import mapping as lamassu_mapping

    try:
        mapped = lamassu_mapping.map_amounts(tx_type, row, target)
    except CAUGHT as exc:
        assert str(exc).strip(), f"a rejection without a reason for {row}"
        return None
    check_mapped(tx_type, row, mapped)
    return mapped


async def test_lamassu_row_mapper_over_any_row(app):
    target = machine()
    counted = {"cash_out": [0, 0], "cash_in": [0, 0]}

    def run() -> None:
        for tx_type in ("cash_out", "cash_in"):

            @settings(
                max_examples=100 * SCALE,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(row=lamassu_rows(tx_type))
            def fuzz(row: dict) -> None:
                mapped = map_or_reject(tx_type, row, target)  # noqa: B023 (called at once)
                counted[tx_type][mapped is None] += 1  # noqa: B023

            fuzz()

    await asyncio.to_thread(run)
    total = sum(sum(v) for v in counted.values())
    print(f"\nLamassu rows mapped: {total} ({counted}: [settlements, rejections])")
    assert all(v[0] and v[1] for v in counted.values()), counted


async def test_lamassu_known_rows_map_exactly(app):
    """The worked example of docs/sources.md, and rows a broken Lamassu could hold."""
    from satmachineadmin.lamassu import mapping as lamassu_mapping

    target = machine()
    row = {
        "id": uuid.uuid4(),
        "device_id": "a" * 64,
        "crypto_atoms": Decimal(512400),
        "crypto_code": "BTC",
        "fiat": Decimal("4000.00000"),
        "fiat_code": "GTQ",
        "error": None,
        "created": datetime.now(timezone.utc),
        "commission_percentage": Decimal("0.055"),
        "raw_ticker_price": Decimal("826091.28"),
    }
    mapped = lamassu_mapping.map_amounts("cash_out", row, target)
    assert (mapped.amounts.principal_sats, mapped.amounts.fee_sats) == (484_208, 28_192)
    for broken in (
        {"crypto_atoms": Decimal(10) ** 29},
        {"raw_ticker_price": Decimal("1E-20")},
        {"fiat": Decimal("1E+20")},
        {"crypto_atoms": Decimal("NaN")},
        {"raw_ticker_price": Decimal("-1")},
        {"discount": 500, "raw_ticker_price": None},
        {"commission_percentage": Decimal("1E+999999"), "raw_ticker_price": None},
    ):
        assert map_or_reject("cash_out", {**row, **broken}, target) is None, broken


# ---------------------------------------------------------------- landing rows for real


async def check_settlement(settlement: Any) -> None:
    """A landed settlement: rejected with a reason, or one that keeps docs/money.md."""
    if settlement.status == "rejected":
        assert settlement.error and settlement.error.strip()
        return
    assert settlement.status in ("pending", "processing", "processed", "errored")
    for value in (
        settlement.wire_sats,
        settlement.principal_sats,
        settlement.fee_sats,
        settlement.platform_fee_sats,
        settlement.operator_fee_sats,
        settlement.fiat_amount_minor,
    ):
        assert type(value) is int, settlement
    assert settlement.fiat_amount_minor > 0
    assert 0 <= settlement.principal_sats <= MAX_SATS
    assert 0 <= settlement.fee_sats <= MAX_SATS
    assert (
        settlement.platform_fee_sats + settlement.operator_fee_sats
        == settlement.fee_sats
    )
    assert min(settlement.platform_fee_sats, settlement.operator_fee_sats) >= 0
    if settlement.tx_type == "cash_out":
        assert settlement.principal_sats + settlement.fee_sats == settlement.wire_sats
    else:
        assert settlement.principal_sats - settlement.fee_sats == settlement.wire_sats
    if settlement.exchange_rate is not None:
        rate = Decimal(settlement.exchange_rate)
        from satmachineadmin.calculations import currency_decimals

        units = Fraction(
            settlement.fiat_amount_minor, 10 ** currency_decimals(settlement.currency)
        )
        assert abs(
            Fraction(rate) - Fraction(settlement.principal_sats) / units
        ) < Fraction(1, 10**7)


async def test_lamassu_rows_land_as_settlements_or_rejections(http, factory):
    from satmachineadmin import crud
    from satmachineadmin.lamassu import mapping as lamassu_mapping
    from satmachineadmin.lamassu import poller as lamassu_poller

    operator = await factory.operator()
    device = uuid.uuid4().hex * 2
    made = await factory.machine(operator, lamassu_device_id=device)
    target = await crud.get_machine(made["id"])
    loop = asyncio.get_running_loop()
    outcomes: dict = {"pending": 0, "rejected": 0}

    fraction = Decimal((await crud.get_platform_config()).super_fee_fraction)

    async def land(tx_type: str, row: dict) -> None:
        result = lamassu_poller.PollResult(ok=True)
        draft = lamassu_mapping.draft_row(
            tx_type, row, target, fraction
        )  # must not raise
        await lamassu_poller._land_drafts([draft], result)  # nor this
        assert result.new == 1, result
        settlement = await crud.find_settlement(target.id, "lamassu", str(row["id"]))
        assert settlement is not None, row
        await check_settlement(settlement)
        mapped = map_or_reject(tx_type, row, target)
        assert (settlement.status == "rejected") == (mapped is None), (settlement, row)
        if mapped is not None:
            assert settlement.wire_sats == mapped.crypto_atoms
        outcomes[settlement.status] += 1

    def run() -> None:
        for tx_type in ("cash_out", "cash_in"):

            @settings(
                max_examples=5 * SCALE,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(row=lamassu_rows(tx_type))
            def fuzz(row: dict) -> None:
                row["device_id"] = device
                coroutine = land(tx_type, row)  # noqa: B023 (called at once)
                asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)

            fuzz()

    await asyncio.to_thread(run)
    print(f"\nLamassu rows landed through the real database: {outcomes}")
    assert outcomes["pending"] and outcomes["rejected"], outcomes


# ---------------------------------------------------------------- bitSpire, real payments

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    ),
    max_leaves=6,
)


GOOD_EXTRA = {
    "source": "bitspire",
    "type": "cash_out",
    "wire_sats": 1_575,
    "principal_sats": 1_500,
    "fee_sats": 75,
    "fiat_amount": "10.00",
    "currency": "GTQ",
    "txid": uuid.uuid4().hex,
}


@st.composite
def bitspire_extras(draw: Any) -> tuple[dict, int]:
    """(extra, sats the payment really carries): mostly well-formed, often not."""
    tx_type = "cash_out"
    fiat_units = draw(st.integers(1, 500))
    principal = fiat_units * 150 + draw(st.integers(-2, 2))
    fee = draw(st.integers(0, principal // 10))
    wire = principal + fee
    extra: dict = {
        "source": "bitspire",
        "type": tx_type,
        "wire_sats": wire,
        "principal_sats": principal,
        "fee_sats": fee,
        "fiat_amount": f"{fiat_units}.00",
        "currency": "GTQ",
        "txid": uuid.uuid4().hex,
    }
    if draw(st.booleans()):
        extra["exchange_rate"] = draw(
            st.sampled_from(["150", "150.0", "149", "1E+9", "x"])
        )
    if draw(st.booleans()):
        extra["fee_fraction"] = draw(st.sampled_from(["0.05", "1.5", "-1", "NaN", 0]))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*sorted(extra), "machine_npub", "extra_field"]))
        if name == "source":
            continue
        extra[name] = draw(
            st.one_of(
                json_value,
                st.sampled_from(
                    [
                        "cash_in",
                        "CASH_OUT",
                        "",
                        "1E+999999",
                        "NaN",
                        "-1",
                        "12.345",
                        "USD",
                    ]
                ),
            )
        )
    carried = wire if isinstance(wire, int) else 1000
    if isinstance(extra.get("wire_sats"), int) and 0 < extra["wire_sats"] <= 200_000:
        carried = extra["wire_sats"]
    if draw(st.integers(0, 9)) == 0:
        carried = max(1, carried + draw(st.sampled_from([-1, 1, 1000])))
    return extra, carried


async def test_bitspire_payments_land_and_distribute_within_the_rules(
    http, factory, super_user
):
    from satmachineadmin import crud

    operator = await factory.operator()
    made = await factory.machine(operator)
    lp = await factory.lp()
    await factory.enrol(operator, made, lp, deposit="300.00")
    await factory.splits(
        operator,
        [{"target": operator.wallet.id, "percent": "100"}],
        machine_id=made["id"],
    )
    customer = await factory.wallet(await factory.user(), "customer")
    await factory.fund(customer, 9_000_000)
    loop = asyncio.get_running_loop()
    landed: list[str] = []

    async def pay(extra: dict, carried: int) -> None:
        from lnbits.core.services import create_invoice, pay_invoice

        invoice = await create_invoice(
            wallet_id=made["wallet"].id,
            amount=carried,
            memo="fuzzed ATM",
            extra=extra,
            internal=True,
        )
        await pay_invoice(wallet_id=customer.id, payment_request=invoice.bolt11)
        settlement = await factory.settlement_of(invoice.payment_hash, timeout=10)
        assert settlement is not None, f"the payment landed as nothing: {extra}"
        await check_settlement(settlement)
        if settlement.status != "rejected":
            assert settlement.wire_sats == carried, (settlement, extra)
        landed.append(settlement.id)

    def run() -> None:
        @settings(
            max_examples=5 * SCALE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=bitspire_extras())
        @example(case=(GOOD_EXTRA, 1_575))  # one of each, whatever is drawn
        @example(
            case=({**GOOD_EXTRA, "txid": uuid.uuid4().hex, "wire_sats": 1_576}, 1_576)
        )
        def fuzz(case: tuple[dict, int]) -> None:
            asyncio.run_coroutine_threadsafe(pay(*case), loop).result(60)

        fuzz()

    await asyncio.to_thread(run)
    await factory.run_engine()
    statuses: dict = {}
    reasons: list = []
    for settlement_id in landed:
        settlement = await crud.get_settlement(settlement_id)
        statuses[settlement.status] = statuses.get(settlement.status, 0) + 1
        legs = await crud.list_settlement_legs(settlement_id)
        if settlement.status == "rejected":
            assert not legs
            reasons.append(settlement.error)
            continue
        assert settlement.status == "processed", settlement
        accounted = sum(
            leg.amount_sats for leg in legs if leg.status in ("completed", "skipped")
        )
        assert accounted == settlement.wire_sats, (settlement, legs)
    print(f"\nbitSpire payments fuzzed (real payments): {len(landed)} -> {statuses}")
    assert statuses.get("rejected") and statuses.get("processed"), (
        statuses,
        reasons[:5],
    )
