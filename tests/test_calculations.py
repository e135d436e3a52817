"""Tests for calculations.py: every worked example of docs/money.md and the Lamassu
check of docs/sources.md, exactly, plus property tests of the invariants.

calculations.py is loaded by path: importing the extension package would import LNbits.
"""

import ast
import dataclasses
import importlib.util
import itertools
import math
import pathlib
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

CALCULATIONS_PATH = pathlib.Path(__file__).resolve().parent.parent / "calculations.py"
_spec = importlib.util.spec_from_file_location(
    "satmachine_calculations", CALCULATIONS_PATH
)
assert _spec is not None
assert _spec.loader is not None
calc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calc)

D = Decimal
PROPERTY = settings(max_examples=200, deadline=None)

# The field-report LPs of docs/money.md: 690.00 / 7.54 / 2.38 / 0.07 GTQ.
FIELD_REPORT_BALANCES = [69000, 754, 238, 7]

CURRENCIES = sorted(calc.CURRENCY_DECIMALS)


def _ceil_share(total: int, weight: int, weight_sum: int) -> int:
    return -(-total * weight // weight_sum)


# ------------------------------------------------------------------- currencies


@pytest.mark.parametrize(
    ("code", "decimals"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("GTQ", 2),
        ("MXN", 2),
        ("CAD", 2),
        ("GBP", 2),
        ("CHF", 2),
        ("BRL", 2),
        ("COP", 2),
        ("ARS", 2),
        ("HUF", 2),
        ("CLP", 0),
        ("JPY", 0),
        ("KRW", 0),
        ("VND", 0),
        ("ISK", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("JOD", 3),
        ("TND", 3),
        ("OMR", 3),
    ],
)
def test_currency_decimals_table(code: str, decimals: int) -> None:
    assert calc.CURRENCY_DECIMALS[code] == decimals
    assert calc.currency_decimals(code) == decimals


def test_currency_decimals_unknown_code_defaults_to_two() -> None:
    assert calc.currency_decimals("XYZ") == 2


def test_currency_decimals_is_case_insensitive() -> None:
    assert calc.currency_decimals("jpy") == 0
    assert calc.currency_decimals("gtq") == 2


@pytest.mark.parametrize("code", ["", "US", "USDT", "U$D", "ÄBC", "USD\n", "12A"])
def test_currency_decimals_rejects_malformed_codes(code: str) -> None:
    with pytest.raises(ValueError, match="3-letter"):
        calc.currency_decimals(code)


def test_currency_error_is_a_fiat_error() -> None:
    with pytest.raises(calc.FiatError):
        calc.parse_fiat("1.00", "DOLLARS")


# ------------------------------------------------------------------- parse_fiat


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        ("690.00", "GTQ", 69000),  # docs/money.md: 690.00 GTQ = 69000
        ("690", "GTQ", 69000),
        ("690.5", "GTQ", 69050),
        ("0.07", "GTQ", 7),
        ("2000.00", "GTQ", 200000),
        ("  7.54 ", "GTQ", 754),
        ("+1.5", "USD", 150),
        (".5", "USD", 50),
        ("5.", "USD", 500),
        ("6.9E2", "GTQ", 69000),
        ("1e-2", "USD", 1),
        ("690.000", "GTQ", 69000),
        ("690.0", "JPY", 690),
        ("5", "JPY", 5),
        ("1.234", "KWD", 1234),
        ("0", "GTQ", 0),
        ("0.00", "GTQ", 0),
        ("-0.00", "GTQ", 0),
        (690, "GTQ", 69000),
        (0, "USD", 0),
        (5, "JPY", 5),
        (D("690.00"), "GTQ", 69000),
        (D("1E+2"), "GTQ", 10000),
        (D("12.345"), "BHD", 12345),
        ("10000000000000.00", "GTQ", 10**15),
    ],
)
def test_parse_fiat_accepts(value: object, currency: str, minor: int) -> None:
    result = calc.parse_fiat(value, currency)
    assert result == minor
    assert type(result) is int


def test_parse_fiat_too_many_decimals_message() -> None:
    with pytest.raises(calc.FiatError) as error:
        calc.parse_fiat("1.234", "GTQ")
    assert str(error.value) == "amount 1.234 has more decimals than GTQ allows (2)"


@pytest.mark.parametrize(
    ("value", "currency", "reason"),
    [
        ("1.234", "GTQ", "more decimals than GTQ allows"),
        ("690.5", "JPY", "more decimals than JPY allows"),
        ("1.2345", "KWD", "more decimals than KWD allows"),
        ("1E-3", "USD", "more decimals"),
        ("1E-999999999", "USD", "more decimals"),
        (D("0.001"), "USD", "more decimals"),
        ("-1", "GTQ", "negative"),
        ("-0.01", "GTQ", "negative"),
        (-5, "GTQ", "negative"),
        (D("-1"), "GTQ", "negative"),
        ("", "GTQ", "empty"),
        ("   ", "GTQ", "empty"),
        ("NaN", "GTQ", "not a number"),
        ("inf", "GTQ", "not a number"),
        ("-Infinity", "GTQ", "not a number"),
        (D("NaN"), "GTQ", "not a number"),
        (D("sNaN"), "GTQ", "not a number"),
        (D("Infinity"), "GTQ", "not a number"),
        ("1,000.00", "GTQ", "not a decimal number"),
        ("1_000", "GTQ", "not a decimal number"),
        ("١٢", "GTQ", "not a decimal number"),  # Arabic-Indic digits
        ("0x10", "GTQ", "not a decimal number"),
        ("12 GTQ", "GTQ", "not a decimal number"),
        ("10000000000000.01", "GTQ", "too large"),
        ("1E+999999999", "GTQ", "too large"),
        (D("1E+99999999"), "GTQ", "too large"),
        (10**15, "GTQ", "too large"),
        ("1" * 200, "GTQ", "too long"),
        (True, "GTQ", "decimal string"),
        (False, "GTQ", "decimal string"),
        (1.5, "GTQ", "not a float"),
        (690.0, "GTQ", "not a float"),
        (None, "GTQ", "decimal string"),
        (["1"], "GTQ", "decimal string"),
    ],
)
def test_parse_fiat_rejects(value: object, currency: str, reason: str) -> None:
    with pytest.raises(calc.FiatError, match=reason):
        calc.parse_fiat(value, currency)


def test_parse_fiat_rejects_huge_int_without_printing_it() -> None:
    with pytest.raises(calc.FiatError, match="too large"):
        calc.parse_fiat(10**5000, "GTQ")
    with pytest.raises(calc.FiatError, match="negative"):
        calc.parse_fiat(-(10**5000), "GTQ")


def test_fiat_error_is_a_value_error() -> None:
    assert issubclass(calc.FiatError, ValueError)


@PROPERTY
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_parse_fiat_never_accepts_floats(value: float) -> None:
    with pytest.raises(calc.FiatError, match="decimal string"):
        calc.parse_fiat(value, "USD")


@PROPERTY
@given(
    currency=st.sampled_from(CURRENCIES),
    minor=st.integers(min_value=1, max_value=10**15),
    extra_digit=st.integers(min_value=1, max_value=9),
)
def test_parse_fiat_rejects_any_extra_decimal(
    currency: str, minor: int, extra_digit: int
) -> None:
    text = calc.format_fiat(minor, currency)
    if "." not in text:
        text += "."
    with pytest.raises(calc.FiatError, match="more decimals"):
        calc.parse_fiat(text + str(extra_digit), currency)


@PROPERTY
@given(
    currency=st.sampled_from(CURRENCIES),
    minor=st.integers(min_value=1, max_value=10**15),
)
def test_parse_fiat_rejects_every_negative_amount(currency: str, minor: int) -> None:
    with pytest.raises(calc.FiatError, match="negative"):
        calc.parse_fiat("-" + calc.format_fiat(minor, currency), currency)


# ------------------------------------------------------------------ format_fiat


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (69000, "GTQ", "690.00"),
        (7, "GTQ", "0.07"),
        (0, "GTQ", "0.00"),
        (5, "JPY", "5"),
        (-5, "JPY", "-5"),
        (-150, "USD", "-1.50"),
        (-1, "USD", "-0.01"),
        (1234, "KWD", "1.234"),
        (130001, "GTQ", "1300.01"),
    ],
)
def test_format_fiat(minor: int, currency: str, text: str) -> None:
    assert calc.format_fiat(minor, currency) == text


def test_format_fiat_refuses_non_int() -> None:
    with pytest.raises(TypeError):
        calc.format_fiat(D("1.5"), "USD")


@PROPERTY
@given(
    currency=st.sampled_from(CURRENCIES),
    minor=st.integers(min_value=0, max_value=10**15),
)
def test_parse_format_round_trip(currency: str, minor: int) -> None:
    text = calc.format_fiat(minor, currency)
    assert calc.parse_fiat(text, currency) == minor
    assert calc.parse_fiat(D(text), currency) == minor
    decimals = calc.currency_decimals(currency)
    assert text.count(".") == (1 if decimals else 0)
    if decimals:
        assert len(text.split(".")[1]) == decimals


@PROPERTY
@given(
    currency=st.sampled_from(CURRENCIES),
    minor=st.integers(min_value=1, max_value=10**18),
)
def test_format_fiat_negative_mirrors_positive(currency: str, minor: int) -> None:
    assert calc.format_fiat(-minor, currency) == "-" + calc.format_fiat(minor, currency)


# ------------------------------------------------------------ largest remainder


def test_lr_money_md_one_one_one() -> None:
    # docs/money.md: operator 100, rules 1/1/1 (each 33.33...) -> 34/33/33
    assert calc.largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert calc.largest_remainder(100, [D(1), D(1), D(1)]) == [34, 33, 33]
    assert calc.largest_remainder(100, [Fraction(100, 3)] * 3) == [34, 33, 33]


def test_lr_money_md_fifty_thirty_twenty() -> None:
    assert calc.largest_remainder(70, [D(50), D(30), D(20)]) == [35, 21, 14]


def test_lr_ties_go_to_the_earlier_part() -> None:
    assert calc.largest_remainder(2, [1, 1, 1]) == [1, 1, 0]
    assert calc.largest_remainder(1, [1, 1, 1, 1]) == [1, 0, 0, 0]
    assert calc.largest_remainder(3, [0, 1, 1, 1, 1]) == [0, 1, 1, 1, 0]


def test_lr_leftover_goes_to_the_largest_remainder_not_the_largest_weight() -> None:
    # Exact shares 3.6 / 2.7 / 0.7 -> floors 3/2/0; the 2 leftover sats go to the two
    # .7 remainders, not to the largest weight (.6).
    assert calc.largest_remainder(7, [36, 27, 7]) == [3, 3, 1]


def test_lr_mixed_weight_types() -> None:
    assert calc.largest_remainder(10, [D("0.5"), Fraction(1, 2), 1]) == [3, 2, 5]


def test_lr_zero_weight_gets_zero() -> None:
    assert calc.largest_remainder(10, [0, 1, 0, 1]) == [0, 5, 0, 5]


def test_lr_zero_weight_sum() -> None:
    assert calc.largest_remainder(0, [0, 0]) == [0, 0]
    assert calc.largest_remainder(0, []) == []
    with pytest.raises(ValueError, match="sum to zero"):
        calc.largest_remainder(5, [0, 0])
    with pytest.raises(ValueError, match="sum to zero"):
        calc.largest_remainder(5, [])


@pytest.mark.parametrize(
    ("total", "weights", "error"),
    [
        (-1, [1], ValueError),
        (10, [1, -1, 2], ValueError),
        (10, [D("-0.5"), D(1)], ValueError),
        (10, [D("NaN")], ValueError),
        (10, [0.5, 0.5], TypeError),
        (10, [True, 1], TypeError),
        (D(10), [1], TypeError),
    ],
)
def test_lr_rejects(total: object, weights: list[object], error: type) -> None:
    with pytest.raises(error):
        calc.largest_remainder(total, weights)


def test_lr_gives_the_same_parts_for_int_and_decimal_weights() -> None:
    int_weights = [(i * 7919) % 100_003 + 1 for i in range(1000)]
    decimal_weights = [D(w).scaleb(-4) for w in int_weights]
    assert calc.largest_remainder(10**12 + 7, int_weights) == calc.largest_remainder(
        10**12 + 7, decimal_weights
    )


@PROPERTY
@given(
    total=st.integers(min_value=0, max_value=10**15),
    weights=st.lists(
        st.integers(min_value=0, max_value=10**12), min_size=1, max_size=40
    ),
)
def test_lr_properties_int_weights(total: int, weights: list[int]) -> None:
    weight_sum = sum(weights)
    assume(weight_sum > 0)
    parts = calc.largest_remainder(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        assert type(part) is int
        assert total * weight // weight_sum <= part
        assert part <= _ceil_share(total, weight, weight_sum)
        if weight == 0:
            assert part == 0


@PROPERTY
@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(
        st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False),
        min_size=1,
        max_size=30,
    ),
)
def test_lr_properties_decimal_weights(total: int, weights: list[Decimal]) -> None:
    exact = [Fraction(w) for w in weights]
    weight_sum = sum(exact)
    assume(weight_sum > 0)
    parts = calc.largest_remainder(total, weights)
    assert sum(parts) == total
    for part, weight in zip(parts, exact, strict=True):
        share = total * weight / weight_sum
        assert math.floor(share) <= part <= math.ceil(share)
    # Same ratios as integers give the same split.
    scaled = [int(w.scaleb(4)) for w in weights]
    assert parts == calc.largest_remainder(total, scaled)


@PROPERTY
@given(
    total=st.integers(min_value=0, max_value=10**9),
    weights=st.lists(
        st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20
    ),
    factor=st.integers(min_value=2, max_value=1000),
)
def test_lr_depends_only_on_ratios(total: int, weights: list[int], factor: int) -> None:
    assert calc.largest_remainder(total, weights) == calc.largest_remainder(
        total, [w * factor for w in weights]
    )


# ------------------------------------------------------------------- commission


def test_split_commission_money_md_example() -> None:
    split = calc.split_commission(100, D("0.30"), [D(50), D(30), D(20)])
    assert split == calc.CommissionSplit(
        platform_fee_sats=30, operator_fee_sats=70, operator_parts=[35, 21, 14]
    )


def test_split_commission_without_rules() -> None:
    split = calc.split_commission(100, D("0.30"), [])
    assert split.platform_fee_sats == 30
    assert split.operator_fee_sats == 70
    assert split.operator_parts == []


def test_split_commission_four_decimal_percents() -> None:
    split = calc.split_commission(
        10_000, D(0), [D("33.3333"), D("33.3333"), D("33.3334")]
    )
    assert split.platform_fee_sats == 0
    assert split.operator_parts == [3333, 3333, 3334]


def test_split_commission_refuses_bad_percents() -> None:
    with pytest.raises(ValueError, match="sum to exactly 100"):
        calc.split_commission(100, D("0.30"), [D("33.33"), D("33.33"), D("33.33")])


def test_commission_split_is_frozen() -> None:
    split = calc.split_commission(100, D("0.30"), [D(100)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.platform_fee_sats = 0


@pytest.mark.parametrize(
    ("fee", "fraction", "platform"),
    [
        (100, D("0.30"), 30),
        (5, D("0.5"), 2),  # 2.5 -> 2 (half to even)
        (7, D("0.5"), 4),  # 3.5 -> 4
        (9, D("0.5"), 4),  # 4.5 -> 4
        (10, D("0.33"), 3),  # 3.3
        (10, D("0.37"), 4),  # 3.7
        (28192, D("0.1"), 2819),  # 2819.2
        (0, D("0.3"), 0),
        (1234, D(0), 0),
        (1234, D(1), 1234),
    ],
)
def test_platform_fee_sats(fee: int, fraction: Decimal, platform: int) -> None:
    assert calc.platform_fee_sats(fee, fraction) == platform


@pytest.mark.parametrize(
    ("fee", "fraction", "error"),
    [
        (100, D("1.01"), ValueError),
        (100, D("-0.01"), ValueError),
        (100, D("NaN"), ValueError),
        (-1, D("0.3"), ValueError),
        (100, 0.3, TypeError),
    ],
)
def test_platform_fee_sats_rejects(fee: int, fraction: object, error: type) -> None:
    with pytest.raises(error):
        calc.platform_fee_sats(fee, fraction)


@pytest.mark.parametrize(
    ("percents", "reason"),
    [
        ([], "no split rules"),
        ([D(50), D(50), D(0)], "greater than 0"),
        ([D(110), D(-10)], "greater than 0"),
        ([D("33.33333"), D("66.66667")], "more than 4 decimals"),
        ([D("33.33")] * 3, "sum to 99.9900"),
        ([D("50.01"), D(50)], "sum to 100.0100"),
        ([D("NaN")], "finite"),
    ],
)
def test_validate_percents_rejects(percents: list[Decimal], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        calc.validate_percents(percents)


def test_validate_percents_refuses_floats() -> None:
    with pytest.raises(TypeError):
        calc.validate_percents([50.0, 50.0])


@st.composite
def percent_lists(draw: st.DrawFn) -> list[Decimal]:
    """Positive percents with up to 4 decimals summing to exactly 100."""
    scale = 1_000_000  # 100 % in units of 0.0001 %
    cuts = draw(
        st.lists(
            st.integers(min_value=1, max_value=scale - 1),
            unique=True,
            max_size=12,
        )
    )
    bounds = [0, *sorted(cuts), scale]
    return [D(b - a).scaleb(-4) for a, b in itertools.pairwise(bounds)]


@PROPERTY
@given(
    fee=st.integers(min_value=0, max_value=10**12),
    fraction=st.decimals(min_value=0, max_value=1, places=4, allow_nan=False),
    percents=percent_lists(),
)
def test_split_commission_sums_exactly(
    fee: int, fraction: Decimal, percents: list[Decimal]
) -> None:
    split = calc.split_commission(fee, fraction, percents)
    assert split.platform_fee_sats + split.operator_fee_sats == fee
    assert 0 <= split.platform_fee_sats <= fee
    assert abs(
        split.platform_fee_sats - Fraction(fee) * Fraction(fraction)
    ) <= Fraction(1, 2)
    assert sum(split.operator_parts) == split.operator_fee_sats
    assert len(split.operator_parts) == len(percents)
    for part, percent in zip(split.operator_parts, percents, strict=True):
        share = split.operator_fee_sats * Fraction(percent) / 100
        assert math.floor(share) <= part <= math.ceil(share)


# -------------------------------------------------------------------- principal


def test_allocate_principal_money_md_short_example() -> None:
    # F = 2000.00 GTQ, P = 300,000 sats, balances 690.00 / 7.54 / 2.38 / 0.07 GTQ.
    allocation = calc.allocate_principal(300_000, 200_000, FIELD_REPORT_BALANCES)
    assert allocation == calc.PrincipalAllocation(
        fiat_parts=[69000, 754, 238, 7],
        sat_parts=[103_500, 1_131, 357, 10],
        orphan_sats=195_002,
        orphan_fiat=130_001,
        covered=False,
    )
    assert sum(allocation.sat_parts) == 104_998  # S
    assert calc.format_fiat(allocation.orphan_fiat, "GTQ") == "1300.01"
    # "all four balances end at 0.00"
    assert [
        b - f for b, f in zip(FIELD_REPORT_BALANCES, allocation.fiat_parts, strict=True)
    ] == [
        0,
        0,
        0,
        0,
    ]


def test_allocate_principal_money_md_covered_example() -> None:
    allocation = calc.allocate_principal(75_000, 50_000, FIELD_REPORT_BALANCES)
    assert allocation == calc.PrincipalAllocation(
        fiat_parts=[49286, 539, 170, 5],
        sat_parts=[73_929, 809, 255, 7],
        orphan_sats=0,
        orphan_fiat=0,
        covered=True,
    )
    assert [calc.format_fiat(f, "GTQ") for f in allocation.fiat_parts] == [
        "492.86",
        "5.39",
        "1.70",
        "0.05",
    ]


def test_allocate_principal_exactly_covered() -> None:
    allocation = calc.allocate_principal(1000, 300, [100, 200])
    assert allocation.covered is True
    assert allocation.fiat_parts == [100, 200]
    assert allocation.sat_parts == [333, 667]
    assert (allocation.orphan_sats, allocation.orphan_fiat) == (0, 0)


def test_allocate_principal_keeps_zero_balances_aligned() -> None:
    covered = calc.allocate_principal(1000, 100, [0, 100, 0, 100])
    assert covered.fiat_parts == [0, 50, 0, 50]
    assert covered.sat_parts == [0, 500, 0, 500]
    short = calc.allocate_principal(1000, 400, [0, 100, 0, 100])
    assert short.fiat_parts == [0, 100, 0, 100]
    assert short.sat_parts == [0, 250, 0, 250]
    assert (short.orphan_sats, short.orphan_fiat, short.covered) == (500, 200, False)


@pytest.mark.parametrize("balances", [[], [0], [0, 0, 0]])
def test_allocate_principal_without_balances(balances: list[int]) -> None:
    allocation = calc.allocate_principal(300_000, 200_000, balances)
    assert allocation == calc.PrincipalAllocation(
        fiat_parts=[0] * len(balances),
        sat_parts=[0] * len(balances),
        orphan_sats=300_000,
        orphan_fiat=200_000,
        covered=False,
    )


def test_allocate_principal_unknown_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate is unknown"):
        calc.allocate_principal(300_000, 0, FIELD_REPORT_BALANCES)


def test_allocate_principal_empty_settlement() -> None:
    allocation = calc.allocate_principal(0, 0, [100, 0])
    assert allocation == calc.PrincipalAllocation([0, 0], [0, 0], 0, 0, True)


@pytest.mark.parametrize(
    ("principal", "fiat", "balances", "error"),
    [
        (-1, 100, [100], ValueError),
        (100, -1, [100], ValueError),
        (100, 100, [100, -1], ValueError),
        (100, 100, [D(100)], TypeError),
        (100.0, 100, [100], TypeError),
    ],
)
def test_allocate_principal_rejects(
    principal: object, fiat: object, balances: list[object], error: type
) -> None:
    with pytest.raises(error):
        calc.allocate_principal(principal, fiat, balances)


@PROPERTY
@given(
    principal=st.integers(min_value=0, max_value=10**11),
    fiat=st.integers(min_value=1, max_value=10**10),
    balances=st.lists(st.integers(min_value=0, max_value=10**9), max_size=25),
)
def test_allocate_principal_properties(
    principal: int, fiat: int, balances: list[int]
) -> None:
    allocation = calc.allocate_principal(principal, fiat, balances)
    balance_sum = sum(balances)
    assert allocation.covered == (balance_sum >= fiat)
    assert sum(allocation.sat_parts) + allocation.orphan_sats == principal
    assert sum(allocation.fiat_parts) + allocation.orphan_fiat == fiat
    assert len(allocation.fiat_parts) == len(allocation.sat_parts) == len(balances)
    assert allocation.orphan_sats >= 0
    assert allocation.orphan_fiat >= 0
    if allocation.covered:
        assert (allocation.orphan_sats, allocation.orphan_fiat) == (0, 0)
    for balance, fiat_part, sat_part in zip(
        balances, allocation.fiat_parts, allocation.sat_parts, strict=True
    ):
        assert 0 <= fiat_part <= balance
        assert 0 <= sat_part <= _ceil_share(principal, balance, fiat)
        if balance == 0:
            assert (fiat_part, sat_part) == (0, 0)
        if not allocation.covered:
            assert fiat_part == balance


def test_principal_allocation_is_frozen() -> None:
    allocation = calc.allocate_principal(75_000, 50_000, FIELD_REPORT_BALANCES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        allocation.orphan_sats = 1


# ------------------------------------------------------------------------ rates


def test_exchange_rate_is_sats_per_major_unit() -> None:
    # 2000.00 GTQ for 300,000 sats = 150 sats per GTQ.
    assert calc.exchange_rate(300_000, 200_000, "GTQ") == D("150")
    assert str(calc.exchange_rate(300_000, 200_000, "GTQ")) == "150.00000000"
    assert str(calc.exchange_rate(1, 3, "GTQ")) == "33.33333333"
    assert str(calc.exchange_rate(2, 3, "GTQ")) == "66.66666667"
    assert str(calc.exchange_rate(1_000, 7, "JPY")) == "142.85714286"
    assert str(calc.exchange_rate(1, 1000, "KWD")) == "1.00000000"


def test_exchange_rate_rounds_half_to_even() -> None:
    assert str(calc.exchange_rate(1, 200_000_000, "JPY")) == "0E-8"  # .5e-8 -> 0
    assert str(calc.exchange_rate(3, 200_000_000, "JPY")) == "2E-8"  # 1.5e-8 -> 2


def test_exchange_rate_without_fiat() -> None:
    assert calc.exchange_rate(1000, 0, "GTQ") is None


def test_cost_basis_fiat_per_btc() -> None:
    # docs/money.md: fiat per BTC = 100,000,000 / exchange_rate (150 sats per GTQ)
    assert str(calc.cost_basis_fiat_per_btc(300_000, 200_000, "GTQ")) == "666666.67"
    assert str(calc.cost_basis_fiat_per_btc(484_208, 400_000, "GTQ")) == "826091.27"
    assert str(calc.cost_basis_fiat_per_btc(100_000, 1_000, "JPY")) == "1000000"
    assert str(calc.cost_basis_fiat_per_btc(100_000_000, 1, "KWD")) == "0.001"
    assert str(calc.cost_basis_fiat_per_btc(100_000, 0, "USD")) == "0.00"
    assert calc.cost_basis_fiat_per_btc(0, 1000, "GTQ") is None


def test_fiat_to_sats() -> None:
    # docs/money.md: Bob's 47.00 GTQ at 150 sats/GTQ -> 7,050 sats
    assert calc.fiat_to_sats(4700, D(150), "GTQ") == 7050
    assert calc.fiat_to_sats(1, D("150.99"), "GTQ") == 1  # 1.5099, rounded down
    assert calc.fiat_to_sats(99, D("1.01"), "GTQ") == 0  # 0.9999
    assert calc.fiat_to_sats(5, D("142.857"), "JPY") == 714  # 714.285
    assert calc.fiat_to_sats(0, D(150), "GTQ") == 0


@pytest.mark.parametrize(
    ("rate", "error"),
    [(D(0), ValueError), (D(-1), ValueError), (D("Infinity"), ValueError)],
)
def test_fiat_to_sats_rejects_bad_rates(rate: Decimal, error: type) -> None:
    with pytest.raises(error):
        calc.fiat_to_sats(100, rate, "GTQ")


@PROPERTY
@given(
    sats=st.integers(min_value=1, max_value=10**12),
    fiat=st.integers(min_value=1, max_value=10**12),
    currency=st.sampled_from(["GTQ", "JPY", "KWD"]),
)
def test_rate_round_trip_never_overpays(sats: int, fiat: int, currency: str) -> None:
    rate = calc.exchange_rate(sats, fiat, currency)
    assert rate is not None
    exact = Fraction(sats * 10 ** calc.currency_decimals(currency), fiat)
    assert abs(Fraction(rate) - exact) <= Fraction(1, 2 * 10**8)
    assume(rate > 0)
    # Paying the fiat back at the rounded rate gives the principal back, up to the
    # floor and the rate's rounding (half of 1e-8 sats per fiat unit).
    fiat_major = Fraction(fiat, 10 ** calc.currency_decimals(currency))
    slack = fiat_major / (2 * 10**8)
    paid = calc.fiat_to_sats(fiat, rate, currency)
    assert sats - 1 - slack <= paid <= sats + slack


# ------------------------------------------------------------------- fixed mode


@pytest.mark.parametrize(
    ("remaining", "limit", "paid", "slots", "last", "amount"),
    [
        (100_000, 10_000, 0, 3, False, 3_333),
        (100_000, 10_000, 3_333, 3, False, 3_333),
        (100_000, 10_000, 6_666, 3, True, 3_334),  # last slot catches up
        (100_000, 10_000, 0, 3, True, 10_000),  # only slot run: whole day's limit
        (1_000, 10_000, 0, 3, False, 1_000),  # balance runs out first
        (100_000, 10_000, 9_000, 3, False, 1_000),  # limit left today
        (100_000, 10_000, 12_000, 3, True, 0),  # limit lowered mid-day
        (0, 10_000, 0, 3, True, 0),
        (100_000, 0, 0, 3, True, 0),
        (100_000, 2, 0, 3, False, 0),  # floor(2 / 3) == 0
        (100_000, 2, 0, 3, True, 2),
    ],
)
def test_fixed_slot_fiat(
    remaining: int, limit: int, paid: int, slots: int, last: bool, amount: int
) -> None:
    assert calc.fixed_slot_fiat(remaining, limit, paid, slots, last) == amount


def test_fixed_slot_fiat_rejects_zero_slots() -> None:
    with pytest.raises(ValueError, match="slots_per_day must be >= 1"):
        calc.fixed_slot_fiat(100, 100, 0, 0, True)


@PROPERTY
@given(
    remaining=st.integers(min_value=0, max_value=10**9),
    limit=st.integers(min_value=0, max_value=10**8),
    slots=st.integers(min_value=1, max_value=48),
)
def test_fixed_slots_never_exceed_the_daily_limit(
    remaining: int, limit: int, slots: int
) -> None:
    paid_today = 0
    left = remaining
    for slot in range(slots):
        amount = calc.fixed_slot_fiat(
            left, limit, paid_today, slots, is_last_slot=slot == slots - 1
        )
        assert 0 <= amount <= left
        if slot < slots - 1:
            assert amount <= limit // slots
        paid_today += amount
        left -= amount
        assert paid_today <= limit
    # The last slot catches up rounding, so a full day pays the whole limit if it can.
    assert paid_today == min(limit, remaining)


# ------------------------------------------------------------ auto settlement


def test_auto_settle_money_md_example() -> None:
    # threshold 50.00 GTQ absolute; Bob is left with 47.00 GTQ -> settled
    assert calc.auto_settle_due(4700, 100_000, "absolute", D("50.00"), "GTQ") is True
    assert calc.fiat_to_sats(4700, D(150), "GTQ") == 7050


@pytest.mark.parametrize(
    ("remaining", "deposits", "kind", "threshold", "currency", "due"),
    [
        (4999, 0, "absolute", D("50.00"), "GTQ", True),
        (5000, 0, "absolute", D("50.00"), "GTQ", False),  # strictly below
        (0, 0, "absolute", D("50.00"), "GTQ", False),  # nothing left to settle
        (5000, 0, "absolute", D("50.005"), "GTQ", True),  # compared exactly
        (49, 0, "absolute", D(50), "JPY", True),
        (50, 0, "absolute", D(50), "JPY", False),
        (4, 100, "percent", D(5), "GTQ", True),
        (5, 100, "percent", D(5), "GTQ", False),
        (2, 100, "percent", D("2.5"), "GTQ", True),
        (3, 100, "percent", D("2.5"), "GTQ", False),
        (1, 0, "percent", D(5), "GTQ", False),  # no deposits: no threshold
        (0, 100, "percent", D(5), "GTQ", False),
    ],
)
def test_auto_settle_due(
    remaining: int,
    deposits: int,
    kind: str,
    threshold: Decimal,
    currency: str,
    due: bool,
) -> None:
    assert calc.auto_settle_due(remaining, deposits, kind, threshold, currency) is due


def test_auto_settle_due_rejects_unknown_threshold_type() -> None:
    with pytest.raises(ValueError, match="threshold_type"):
        calc.auto_settle_due(100, 100, "relative", D(5), "GTQ")


def test_auto_settle_due_rejects_negative_threshold() -> None:
    with pytest.raises(ValueError, match="threshold_value"):
        calc.auto_settle_due(100, 100, "absolute", D(-5), "GTQ")


# ---------------------------------------------------------------------- Lamassu


def test_lamassu_cash_out_sources_md_check() -> None:
    # fiat 4000 GTQ, crypto_atoms 512,400, commission 0.055, raw_ticker_price 826091.28
    amounts = calc.lamassu_cash_out_amounts(
        512_400, D("4000"), D("826091.28"), D("0.055"), 0
    )
    assert amounts == calc.LamassuAmounts(
        principal_sats=484_208, fee_sats=28_192, estimated=False
    )


def test_lamassu_cash_out_reads_numeric_columns() -> None:
    # numeric(14,5) columns arrive with 5 decimals.
    amounts = calc.lamassu_cash_out_amounts(
        512_400, D("4000.00000"), D("826091.28000"), D("0.05500"), None
    )
    assert (amounts.principal_sats, amounts.fee_sats) == (484_208, 28_192)


def test_lamassu_cash_out_principal_rounds_half_to_even() -> None:
    # 1 * 1e8 / 40_000_000 = 2.5 -> 2; 3 * 1e8 / 40_000_000 = 7.5 -> 8
    assert calc.lamassu_cash_out_amounts(10, D(1), D(40_000_000), None, None) == (
        calc.LamassuAmounts(2, 8, False)
    )
    assert calc.lamassu_cash_out_amounts(10, D(3), D(40_000_000), None, None) == (
        calc.LamassuAmounts(8, 2, False)
    )


@pytest.mark.parametrize("ticker", [None, D(0)])
def test_lamassu_cash_out_estimated_without_ticker(ticker: Decimal | None) -> None:
    amounts = calc.lamassu_cash_out_amounts(512_400, D("4000"), ticker, D("0.055"), 0)
    # 512,400 * 0.945 = 484,218 exactly
    assert amounts == calc.LamassuAmounts(484_218, 28_182, True)


def test_lamassu_cash_out_estimate_applies_discount() -> None:
    # c_eff = 0.055 * (1 - 50/100) = 0.0275; 512,400 * 0.9725 = 498,309
    amounts = calc.lamassu_cash_out_amounts(512_400, D("4000"), None, D("0.055"), 50)
    assert amounts == calc.LamassuAmounts(498_309, 14_091, True)
    full_discount = calc.lamassu_cash_out_amounts(1000, D(1), None, D("0.055"), 100)
    assert full_discount == calc.LamassuAmounts(1000, 0, True)


def test_lamassu_cash_out_estimate_rounds_half_to_even() -> None:
    assert calc.lamassu_cash_out_amounts(10, D(1), None, D("0.05"), None) == (
        calc.LamassuAmounts(10, 0, True)  # 9.5 -> 10
    )
    assert calc.lamassu_cash_out_amounts(30, D(1), None, D("0.05"), None) == (
        calc.LamassuAmounts(28, 2, True)  # 28.5 -> 28
    )


def test_lamassu_cash_out_negative_fee_is_refused() -> None:
    with pytest.raises(ValueError, match="fee would be negative"):
        calc.lamassu_cash_out_amounts(484_000, D("4000"), D("826091.28"), D("0.055"), 0)


@pytest.mark.parametrize(
    ("atoms", "fiat", "ticker", "commission", "discount", "reason"),
    [
        (1000, D(1), None, None, None, "neither raw_ticker_price nor commission"),
        (1000, D(1), None, D("1.2"), None, "commission_percentage must be"),
        (1000, D(1), None, D("-0.1"), None, "commission_percentage must be"),
        (1000, D(1), None, D("0.05"), 101, "discount must be"),
        (1000, D(1), None, D("0.05"), -1, "discount must be"),
        (1000, D(-1), D(100), None, None, "fiat must be"),
        (1000, D(1), D(-100), None, None, "raw_ticker_price must be"),
        (-1, D(1), D(100), None, None, "crypto_atoms must be"),
    ],
)
def test_lamassu_cash_out_rejects_bad_rows(
    atoms: int,
    fiat: Decimal,
    ticker: Decimal | None,
    commission: Decimal | None,
    discount: int | None,
    reason: str,
) -> None:
    with pytest.raises(ValueError, match=reason):
        calc.lamassu_cash_out_amounts(atoms, fiat, ticker, commission, discount)


def test_lamassu_cash_in_with_ticker() -> None:
    # market value of 4000 GTQ at 826091.28 is 484,208 sats; the customer got 470,000
    amounts = calc.lamassu_cash_in_amounts(
        470_000, D("4000"), D("826091.28"), D("0.055"), 0
    )
    assert amounts == calc.LamassuAmounts(484_208, 14_208, False)


def test_lamassu_cash_in_estimated() -> None:
    # 945 / (1 - 0.055) = 1000 exactly
    amounts = calc.lamassu_cash_in_amounts(945, D(10), None, D("0.055"), None)
    assert amounts == calc.LamassuAmounts(1000, 55, True)
    # 1000 / 0.95 = 1052.63 -> 1053
    amounts = calc.lamassu_cash_in_amounts(1000, D(10), D(0), D("0.05"), 0)
    assert amounts == calc.LamassuAmounts(1053, 53, True)


def test_lamassu_cash_in_negative_fee_is_refused() -> None:
    with pytest.raises(ValueError, match="fee would be negative"):
        calc.lamassu_cash_in_amounts(500_000, D("4000"), D("826091.28"), None, None)


@PROPERTY
@given(
    atoms=st.integers(min_value=0, max_value=10**10),
    fiat=st.decimals(min_value=0, max_value=10**6, places=5, allow_nan=False),
    ticker=st.decimals(min_value=1, max_value=10**8, places=5, allow_nan=False),
)
def test_lamassu_cash_out_principal_plus_fee_is_atoms(
    atoms: int, fiat: Decimal, ticker: Decimal
) -> None:
    exact_principal = Fraction(fiat) * 100_000_000 / Fraction(ticker)
    if round(exact_principal) > atoms:  # Fraction rounds half to even
        with pytest.raises(ValueError, match="fee would be negative"):
            calc.lamassu_cash_out_amounts(atoms, fiat, ticker, None, None)
        return
    amounts = calc.lamassu_cash_out_amounts(atoms, fiat, ticker, None, None)
    assert amounts.principal_sats + amounts.fee_sats == atoms
    assert amounts.fee_sats >= 0
    assert abs(amounts.principal_sats - exact_principal) <= Fraction(1, 2)
    assert amounts.estimated is False


# ------------------------------------------------------------- partial dispense


def test_rescale_partial_dispense_example() -> None:
    # Half of 1000.00 dispensed: principal 1000 -> 500, fee 55 -> 27.5 -> 28 (even),
    # platform keeps 17/55 of the fee: 28 * 17 / 55 = 8.65 -> 9.
    rescaled = calc.rescale_partial_dispense(100_000, 1_000, 55, 17, 50_000)
    assert rescaled == calc.RescaledSettlement(
        fiat_minor=50_000,
        principal_sats=500,
        fee_sats=28,
        platform_fee_sats=9,
        operator_fee_sats=19,
        wire_sats=528,
    )


def test_rescale_full_dispense_is_identity() -> None:
    rescaled = calc.rescale_partial_dispense(200_000, 300_000, 16_500, 4_950, 200_000)
    assert rescaled == calc.RescaledSettlement(
        200_000, 300_000, 16_500, 4_950, 11_550, 316_500
    )


def test_rescale_without_fee() -> None:
    rescaled = calc.rescale_partial_dispense(1000, 999, 0, 0, 333)
    assert rescaled == calc.RescaledSettlement(333, 333, 0, 0, 0, 333)


@pytest.mark.parametrize(
    ("fiat", "principal", "fee", "platform", "dispensed", "reason"),
    [
        (1000, 100, 10, 3, 0, "dispensed_fiat_minor must be >= 1"),
        (1000, 100, 10, 3, 1001, "exceeds the settlement's fiat"),
        (0, 100, 10, 3, 0, "fiat_minor must be >= 1"),
        (1000, 100, 10, 11, 500, "platform_fee_sats 11 exceeds fee_sats 10"),
        (1000, -1, 10, 3, 500, "principal_sats must be >= 0"),
    ],
)
def test_rescale_rejects(
    fiat: int, principal: int, fee: int, platform: int, dispensed: int, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        calc.rescale_partial_dispense(fiat, principal, fee, platform, dispensed)


@st.composite
def settlements(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    fiat = draw(st.integers(min_value=1, max_value=10**9))
    principal = draw(st.integers(min_value=0, max_value=10**10))
    fee = draw(st.integers(min_value=0, max_value=10**9))
    platform = draw(st.integers(min_value=0, max_value=fee))
    dispensed = draw(st.integers(min_value=1, max_value=fiat))
    return fiat, principal, fee, platform, dispensed


@PROPERTY
@given(settlements())
def test_rescale_keeps_sums(settlement: tuple[int, int, int, int, int]) -> None:
    fiat, principal, fee, platform, dispensed = settlement
    rescaled = calc.rescale_partial_dispense(fiat, principal, fee, platform, dispensed)
    assert rescaled.fiat_minor == dispensed
    assert rescaled.platform_fee_sats + rescaled.operator_fee_sats == rescaled.fee_sats
    assert rescaled.wire_sats == rescaled.principal_sats + rescaled.fee_sats
    assert 0 <= rescaled.platform_fee_sats <= rescaled.fee_sats <= fee
    assert 0 <= rescaled.principal_sats <= principal
    share = Fraction(dispensed, fiat)
    assert abs(rescaled.principal_sats - principal * share) <= Fraction(1, 2)
    assert abs(rescaled.fee_sats - fee * share) <= Fraction(1, 2)
    if fee:
        expected_platform = Fraction(rescaled.fee_sats * platform, fee)
        assert abs(rescaled.platform_fee_sats - expected_platform) <= Fraction(1, 2)
    if dispensed == fiat:
        assert (rescaled.principal_sats, rescaled.fee_sats) == (principal, fee)
        assert rescaled.platform_fee_sats == platform


@pytest.mark.parametrize(
    ("fiat", "fraction", "dispensed"),
    [
        (100_001, D("0.5"), 50_000),
        (100_000, D(1), 100_000),
        (100, D("0.999"), 99),
        (1, D("0.5"), 0),
    ],
)
def test_dispensed_fiat_from_fraction(
    fiat: int, fraction: Decimal, dispensed: int
) -> None:
    assert calc.dispensed_fiat_from_fraction(fiat, fraction) == dispensed


@pytest.mark.parametrize("fraction", [D(0), D("-0.5"), D("1.01"), D("NaN")])
def test_dispensed_fiat_from_fraction_rejects(fraction: Decimal) -> None:
    with pytest.raises(ValueError, match="fraction"):
        calc.dispensed_fiat_from_fraction(1000, fraction)


# ------------------------------------------------------------------ no floats


def test_module_has_no_float_literals_or_calls() -> None:
    source = CALCULATIONS_PATH.read_text()
    tree = ast.parse(source)
    floats = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, float)
    ]
    float_calls = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "float"
    ]
    true_divisions_of_ints = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and all(
            isinstance(side, ast.Constant) and isinstance(side.value, int)
            for side in (node.left, node.right)
        )
    ]
    assert (floats, float_calls, true_divisions_of_ints) == ([], [], [])
    assert "import lnbits" not in source
    assert "from lnbits" not in source
