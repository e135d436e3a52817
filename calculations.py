"""Money arithmetic for satmachineadmin: numbers in, numbers out.

This module is the executable form of docs/money.md and of the "Principal of a
Lamassu cash-out" rules of docs/sources.md. It does no I/O and imports nothing from
LNbits so that it can be tested (and reasoned about) in isolation.

Conventions:
- Sats are ``int``.
- Fiat is ``int`` minor units of its currency (690.00 GTQ == 69000) unless a name or
  docstring says "major units".
- Rates, fractions and percents are ``decimal.Decimal``; intermediate arithmetic is done
  with ``int`` or ``fractions.Fraction`` so that nothing is rounded before the single,
  documented rounding step of each rule. ``float`` is refused wherever a value enters.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

SATS_PER_BTC: Final = 100_000_000

# Every bitcoin there will ever be: no amount of sats anywhere may exceed it.
MAX_SATS: Final = 21_000_000 * SATS_PER_BTC

# The parser's bound, far beyond any real ATM amount; it exists so that a typo or a
# hostile request cannot push absurd numbers through the payout engine.
MAX_FIAT_MINOR: Final = 10**15

# The most cash one deposit or one ATM transaction may carry (10^11 major units):
# stricter than the parser, so that totals of many of them stay far inside it.
MAX_CASH_MINOR: Final = 10**13

# A rate an operator states (sats per one fiat unit): 10 BTC per unit of any currency
# is far beyond any real one, and at most 18 decimals, far below a sat.
MAX_STATED_RATE: Final = 10**9
STATED_RATE_PLACES: Final = 18

# Decimals of a commission percent and of the platform's fraction of a commission
# (docs/money.md, "Commission"), and of a dispensed fraction (a partial dispense).
PERCENT_PLACES: Final = 4
PLATFORM_FRACTION_PLACES: Final = 8
DISPENSED_FRACTION_PLACES: Final = 18

# No Decimal whose digits or exponent exceed this enters exact arithmetic: as a
# Fraction, 1E-4000000 is a four-million-digit integer that would take seconds to
# build. Every input is bounded far below it (inputs.py); this is the last guard.
MAX_EXACT_DIGITS: Final = 1000

# Retries (failed legs, errored settlements, an unreachable Lamassu server) wait
# base * 2^(attempts - 1), capped.
RETRY_BASE_SECONDS: Final = 30
RETRY_MAX_SECONDS: Final = 3600

# Longer strings are refused before parsing: no legitimate amount needs them, and
# converting huge digit strings costs time an attacker could exploit.
_MAX_AMOUNT_TEXT: Final = 100

# ISO 4217 minor units. Currencies not listed fall back to 2 decimals, the most common
# case, so a machine in a rarely used currency still works.
CURRENCY_DECIMALS: dict[str, int] = {
    # 2 decimals
    "USD": 2,
    "EUR": 2,
    "GTQ": 2,
    "MXN": 2,
    "CAD": 2,
    "GBP": 2,
    "CHF": 2,
    "BRL": 2,
    "COP": 2,
    "ARS": 2,
    "HUF": 2,
    "AUD": 2,
    "NZD": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "RON": 2,
    "BGN": 2,
    "TRY": 2,
    "ILS": 2,
    "ZAR": 2,
    "NGN": 2,
    "KES": 2,
    "GHS": 2,
    "EGP": 2,
    "MAD": 2,
    "AED": 2,
    "SAR": 2,
    "QAR": 2,
    "INR": 2,
    "PKR": 2,
    "CNY": 2,
    "HKD": 2,
    "SGD": 2,
    "TWD": 2,
    "THB": 2,
    "PHP": 2,
    "MYR": 2,
    "IDR": 2,
    "PEN": 2,
    "BOB": 2,
    "UYU": 2,
    "CRC": 2,
    "HNL": 2,
    "NIO": 2,
    "PAB": 2,
    "DOP": 2,
    "SVC": 2,
    "BZD": 2,
    "JMD": 2,
    "TTD": 2,
    "VES": 2,
    "UAH": 2,
    "RSD": 2,
    "GEL": 2,
    # 0 decimals
    "CLP": 0,
    "JPY": 0,
    "KRW": 0,
    "VND": 0,
    "ISK": 0,
    "PYG": 0,
    "UGX": 0,
    "RWF": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    "BIF": 0,
    "DJF": 0,
    "GNF": 0,
    "KMF": 0,
    "VUV": 0,
    # 3 decimals
    "KWD": 3,
    "BHD": 3,
    "JOD": 3,
    "TND": 3,
    "OMR": 3,
    "IQD": 3,
    "LYD": 3,
}

_DEFAULT_DECIMALS: Final = 2


def retry_delay(
    attempts: int, base: int = RETRY_BASE_SECONDS, cap: int = RETRY_MAX_SECONDS
) -> int:
    """Seconds to wait before attempt `attempts + 1`: base * 2^(attempts - 1), at most
    `cap` (never less than `base`). The exponent is bounded so that a counter that ran
    for years still costs nothing to compute."""
    exponent = min(max(0, attempts - 1), 30)
    return min(base * 2**exponent, max(cap, base))


_CURRENCY_CODE = re.compile(r"[A-Za-z]{3}")
# Only ASCII digits: Decimal() would also accept other scripts' digits and underscores,
# which an operator would never mean to send as an amount.
_DECIMAL_TEXT = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # digits with an optional point
    r"(?:[eE][+-]?[0-9]+)?"  # optional exponent
)


class FiatError(ValueError):
    """A fiat amount or currency that cannot be used; the message is for people."""


# --------------------------------------------------------------------------- helpers


def _require_int(value: object, name: str, minimum: int | None = 0) -> int:
    # bool is an int subclass; True as "1 sat" is always a bug upstream.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _exact(value: object, name: str) -> Fraction:
    """Exact rational value of an int, Decimal or Fraction; floats are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a Decimal, got bool")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{name} must be a finite number, got {value}")
        _, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)  # finite, checked above
        if len(digits) > MAX_EXACT_DIGITS or abs(exponent) > MAX_EXACT_DIGITS:
            raise ValueError(
                f"{name} is out of range ({len(digits)} digits, exponent {exponent})"
            )
        return Fraction(value)
    if isinstance(value, Fraction):
        return value
    raise TypeError(
        f"{name} must be a Decimal (or int/Fraction), got {type(value).__name__}"
    )


def _ratio(value: object, name: str) -> tuple[int, int]:
    # Decimal.as_integer_ratio is exact and much cheaper than building a Fraction,
    # which matters when splitting over many Decimal weights.
    if isinstance(value, Decimal) and value.is_finite():
        return value.as_integer_ratio()
    exact = _exact(value, name)
    return exact.numerator, exact.denominator


def _round_half_even(value: Fraction) -> int:
    quotient, remainder = divmod(value.numerator, value.denominator)
    twice = 2 * remainder
    if twice > value.denominator or (twice == value.denominator and quotient % 2):
        quotient += 1
    return quotient


def _floor(value: Fraction) -> int:
    return value.numerator // value.denominator


def _scaled_decimal(scaled: int, places: int) -> Decimal:
    # Built from a string so that no decimal context (precision 28) can round it.
    return Decimal(f"{scaled}E-{places}") if places else Decimal(scaled)


def _fixed_places(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half to even to exactly ``places`` decimals."""
    return _scaled_decimal(_round_half_even(value * 10**places), places)


# -------------------------------------------------------------------- currencies


def currency_decimals(code: str) -> int:
    """Minor-unit digits of an ISO 4217 code; unknown well-formed codes get 2."""
    if not isinstance(code, str) or not _CURRENCY_CODE.fullmatch(code):
        raise FiatError(f"currency {code!r} is not a 3-letter ISO 4217 code")
    return CURRENCY_DECIMALS.get(code.upper(), _DEFAULT_DECIMALS)


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _decimal_to_minor(amount: Decimal, shown: str, currency: str) -> int:
    decimals = currency_decimals(currency)
    code = currency.upper()
    if not amount.is_finite():
        raise FiatError(f"amount {shown} is not a number")
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    significant = list(digits)
    # Trailing zeros carry no value: "690.000" is exactly 690.00 and loses nothing.
    while len(significant) > 1 and significant[-1] == 0:
        significant.pop()
        exponent += 1
    if significant == [0]:
        return 0
    if sign:
        raise FiatError(f"amount {shown} is negative; amounts must be zero or more")
    shift = exponent + decimals
    if shift < 0:
        raise FiatError(
            f"amount {shown} has more decimals than {code} allows ({decimals})"
        )
    too_large = FiatError(
        f"amount {shown} is too large (at most "
        f"{format_fiat(MAX_FIAT_MINOR, currency)} {code})"
    )
    # Digit count first so that an exponent like 1E999999 is refused without building
    # the number.
    if len(significant) + shift > len(str(MAX_FIAT_MINOR)):
        raise too_large
    minor = int("".join(map(str, significant)) + "0" * shift)
    if minor > MAX_FIAT_MINOR:
        raise too_large
    return minor


def parse_fiat(value: str | int | Decimal, currency: str) -> int:
    """Integer minor units of a fiat amount given in major units.

    ``"690.00"``, ``"690"``, ``690`` and ``Decimal("690.0")`` are all 69000 for GTQ.
    ``value`` is in major units whatever its type (an int 690 is 690.00, not 6.90).
    Exactness is judged on the value, not the spelling: ``"690.000"`` and ``"6.9E2"``
    are accepted for GTQ, ``"690.001"`` is not. Zero is accepted; whether an amount
    must be positive is the caller's rule.
    """
    currency_decimals(currency)
    if isinstance(value, bool):
        raise FiatError(
            f"amount must be a decimal string such as '690.00', not {value}"
        )
    if isinstance(value, float):
        raise FiatError(
            "amount must be a decimal string such as '690.00', not a float "
            "(floats cannot hold money exactly)"
        )
    if isinstance(value, int):
        # str() of a huge int raises (int max str digits), so do not print it.
        shown = str(value) if abs(value) <= 10**40 else "(a huge integer)"
        return _decimal_to_minor(Decimal(value), shown, currency)
    if isinstance(value, Decimal):
        return _decimal_to_minor(value, _shown(str(value)), currency)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise FiatError("amount is empty; send a decimal string such as '690.00'")
        if len(text) > _MAX_AMOUNT_TEXT:
            raise FiatError(
                f"amount {_shown(text)} is too long ({len(text)} characters)"
            )
        if text.lower().lstrip("+-") in {"nan", "snan", "inf", "infinity"}:
            raise FiatError(f"amount {text} is not a number")
        if not _DECIMAL_TEXT.fullmatch(text):
            raise FiatError(
                f"amount {_shown(text)!r} is not a decimal number; "
                "send something like '690.00'"
            )
        try:
            amount = Decimal(text)
        except InvalidOperation:  # an exponent beyond what Decimal can hold
            raise FiatError(f"amount {_shown(text)} is out of range") from None
        return _decimal_to_minor(amount, text, currency)
    raise FiatError(
        f"amount must be a decimal string such as '690.00', not {type(value).__name__}"
    )


def format_fiat(minor: int, currency: str) -> str:
    """Minor units as a major-unit decimal string: (69000, "GTQ") -> "690.00"."""
    _require_int(minor, "minor", minimum=None)
    decimals = currency_decimals(currency)
    if decimals == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**decimals)
    return f"{sign}{whole}.{fraction:0{decimals}d}"


# ------------------------------------------------------- largest-remainder split


def _integer_weights(weights: Sequence[int | Decimal | Fraction]) -> list[int]:
    """Weights scaled to integers with the same ratios (common denominator)."""
    integer_weights: list[int]
    if all(type(weight) is int for weight in weights):
        # The common case (balances, fiat parts) needs no rational arithmetic at all.
        integer_weights = [int(weight) for weight in weights]
    else:
        ratios = [_ratio(weight, f"weights[{i}]") for i, weight in enumerate(weights)]
        denominator = math.lcm(*(ratio[1] for ratio in ratios))
        integer_weights = [
            numerator * (denominator // ratio_denominator)
            for numerator, ratio_denominator in ratios
        ]
    for i, weight in enumerate(integer_weights):
        if weight < 0:
            raise ValueError(f"weights[{i}] is negative ({weights[i]})")
    return integer_weights


def largest_remainder(
    total: int, weights: Sequence[int | Decimal | Fraction]
) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``
    (docs/money.md, "Largest-remainder allocation").

    Each part is floor(total * w / Σw); what is left goes one each to the parts with the
    largest fractional remainder, ties to the earlier index (callers order parts by
    creation time, then id). Parts sum to exactly ``total``, each lies between the
    floor and the ceiling of its exact share, and a zero weight always gets 0.
    """
    _require_int(total, "total")
    integer_weights = _integer_weights(weights)
    weight_sum = sum(integer_weights)
    if weight_sum == 0:
        if total == 0:
            return [0] * len(integer_weights)
        raise ValueError(f"cannot split {total} over weights that sum to zero")
    parts: list[int] = []
    remainders: list[int] = []
    for weight in integer_weights:
        part, remainder = divmod(total * weight, weight_sum)
        parts.append(part)
        remainders.append(remainder)
    leftover = total - sum(parts)
    if leftover:
        # Remainders share the denominator weight_sum, so comparing the integers
        # compares the fractions exactly.
        by_remainder = sorted(range(len(parts)), key=lambda i: (-remainders[i], i))
        for i in by_remainder[:leftover]:
            parts[i] += 1
    return parts


# ------------------------------------------------------------------- commission


def platform_fee_sats(fee_sats: int, super_fee_fraction: Decimal) -> int:
    """Stage 1 of docs/money.md, "Commission": the platform's share, half to even."""
    _require_int(fee_sats, "fee_sats")
    fraction = _exact(super_fee_fraction, "super_fee_fraction")
    if not 0 <= fraction <= 1:
        raise ValueError(
            f"super_fee_fraction must be between 0 and 1, got {super_fee_fraction}"
        )
    return _round_half_even(fee_sats * fraction)


@dataclass(frozen=True)
class CommissionSplit:
    """Result of the two-stage commission split.

    ``operator_parts`` is a list (index-aligned with the percents passed in) so it
    compares equal to list literals; treat it as read-only.
    """

    platform_fee_sats: int
    operator_fee_sats: int
    operator_parts: list[int]


def validate_percents(percents: Sequence[Decimal]) -> None:
    """Raise ValueError unless every percent is > 0 with at most 4 decimals and they
    sum to exactly 100."""
    if not percents:
        raise ValueError("no split rules: percents must sum to 100")
    total = Fraction(0)
    for i, percent in enumerate(percents):
        exact = _exact(percent, f"percents[{i}]")
        if exact <= 0:
            raise ValueError(f"percent #{i + 1} ({percent}) must be greater than 0")
        if (exact * 10**PERCENT_PLACES).denominator != 1:
            raise ValueError(
                f"percent #{i + 1} ({percent}) has more than {PERCENT_PLACES} decimals"
            )
        total += exact
    if total != 100:
        shown = _fixed_places(total, PERCENT_PLACES)
        raise ValueError(f"percents must sum to exactly 100, they sum to {shown}")


def split_commission(
    fee_sats: int, super_fee_fraction: Decimal, percents: Sequence[Decimal]
) -> CommissionSplit:
    """Both stages of docs/money.md, "Commission": platform fee, then the operator's
    share split by ``percents`` with LR. No percents: ``operator_parts == []``, and
    the whole operator fee is left to the caller (it stays in the machine wallet)."""
    platform = platform_fee_sats(fee_sats, super_fee_fraction)
    operator = fee_sats - platform
    if not percents:
        return CommissionSplit(platform, operator, [])
    validate_percents(percents)
    return CommissionSplit(platform, operator, largest_remainder(operator, percents))


# -------------------------------------------------------------------- principal


@dataclass(frozen=True)
class PrincipalAllocation:
    """How a settlement's principal is paid to flow-mode LPs.

    ``fiat_parts`` / ``sat_parts`` are index-aligned with the balances passed in.
    ``covered`` is exactly ``sum(balances) >= fiat``.
    """

    fiat_parts: list[int]
    sat_parts: list[int]
    orphan_sats: int
    orphan_fiat: int
    covered: bool


def allocate_principal(
    principal_sats: int, fiat_minor: int, balances_minor: Sequence[int]
) -> PrincipalAllocation:
    """docs/money.md, "Principal to flow-mode LPs".

    Covered (B >= F): f = LR(F, b), s = LR(P, f).
    Short (B < F): f = b, S = floor(P * B / F), s = LR(S, b); the rest is orphaned.
    Raises ValueError when F == 0 but P > 0: the rate is unknown, so nothing may be
    paid (the caller records a skipped leg). F == P == 0 is an empty settlement: all
    zeros, covered.
    """
    _require_int(principal_sats, "principal_sats")
    _require_int(fiat_minor, "fiat_minor")
    balances = [
        _require_int(balance, f"balances_minor[{i}]")
        for i, balance in enumerate(balances_minor)
    ]
    if fiat_minor == 0 and principal_sats > 0:
        raise ValueError(
            "fiat amount is 0 but principal is not: the rate is unknown, "
            "principal cannot be allocated"
        )
    balance_sum = sum(balances)
    zeros = [0] * len(balances)
    if balance_sum >= fiat_minor:
        if fiat_minor == 0:
            return PrincipalAllocation(zeros, list(zeros), 0, 0, True)
        fiat_parts = largest_remainder(fiat_minor, balances)
        sat_parts = largest_remainder(principal_sats, fiat_parts)
        return PrincipalAllocation(fiat_parts, sat_parts, 0, 0, True)
    if balance_sum == 0:
        return PrincipalAllocation(
            zeros, list(zeros), principal_sats, fiat_minor, False
        )
    # Paying each LP its whole balance at the settlement's own rate is the most that can
    # be justified; the sats for cash nobody tracked stay in the machine wallet.
    covered_sats = principal_sats * balance_sum // fiat_minor
    sat_parts = largest_remainder(covered_sats, balances)
    return PrincipalAllocation(
        fiat_parts=list(balances),
        sat_parts=sat_parts,
        orphan_sats=principal_sats - covered_sats,
        orphan_fiat=fiat_minor - balance_sum,
        covered=False,
    )


# ------------------------------------------------------------------------ rates


_RATE_PLACES: Final = 8


def exchange_rate(
    principal_sats: int, fiat_minor: int, currency: str
) -> Decimal | None:
    """Sats per ONE fiat unit (not minor unit), 8 decimals half to even; None if
    there is no fiat to divide by."""
    _require_int(principal_sats, "principal_sats")
    _require_int(fiat_minor, "fiat_minor")
    decimals = currency_decimals(currency)
    if fiat_minor == 0:
        return None
    return _fixed_places(
        Fraction(principal_sats * 10**decimals, fiat_minor), _RATE_PLACES
    )


def exchange_rate_text(
    principal_sats: int, fiat_minor: int, currency: str
) -> str | None:
    """`exchange_rate` as stored and shown: a plain decimal string, or None."""
    rate = exchange_rate(principal_sats, fiat_minor, currency)
    return None if rate is None else format(rate, "f")


def cost_basis_fiat_per_btc(
    sats: int, fiat_minor: int, currency: str
) -> Decimal | None:
    """Fiat (major units) paid per BTC, to the currency's decimals, half to even;
    None if no sats."""
    _require_int(sats, "sats")
    _require_int(fiat_minor, "fiat_minor")
    decimals = currency_decimals(currency)
    if sats == 0:
        return None
    return _fixed_places(
        Fraction(SATS_PER_BTC * fiat_minor, sats * 10**decimals), decimals
    )


def fiat_to_sats(fiat_minor: int, sats_per_unit: Decimal, currency: str) -> int:
    """Sats for a fiat amount at ``sats_per_unit`` (sats per one fiat unit), rounded
    down so that a payout never exceeds the fiat it stands for."""
    _require_int(fiat_minor, "fiat_minor")
    rate = _exact(sats_per_unit, "sats_per_unit")
    if rate <= 0:
        raise ValueError(f"sats_per_unit must be greater than 0, got {sats_per_unit}")
    decimals = currency_decimals(currency)
    return _floor(Fraction(fiat_minor, 10**decimals) * rate)


# ------------------------------------------------------------ fixed mode, settle


def fixed_slot_fiat(
    remaining_minor: int,
    daily_limit_minor: int,
    paid_today_minor: int,
    slots_per_day: int,
    is_last_slot: bool,
) -> int:
    """Fiat (minor) for one fixed-mode slot: min(remaining, L - paid_today, floor(L/k)),
    without the floor(L/k) cap on the day's last slot so rounding loss is caught up."""
    _require_int(remaining_minor, "remaining_minor")
    _require_int(daily_limit_minor, "daily_limit_minor")
    _require_int(paid_today_minor, "paid_today_minor")
    _require_int(slots_per_day, "slots_per_day", minimum=1)
    # paid_today may exceed L if the operator lowered the limit mid-day: pay nothing.
    left_today = max(0, daily_limit_minor - paid_today_minor)
    amount = min(remaining_minor, left_today)
    if not is_last_slot:
        amount = min(amount, daily_limit_minor // slots_per_day)
    return amount


_THRESHOLD_TYPES: Final = ("absolute", "percent")


def auto_settle_due(
    remaining_minor: int,
    confirmed_deposits_minor: int,
    threshold_type: str,
    threshold_value: Decimal,
    currency: str,
) -> bool:
    """Whether an LP's leftover balance is small enough to settle automatically.

    ``threshold_value`` is in major fiat units for "absolute" (Decimal("50.00")) and in
    percent of the LP's confirmed deposits for "percent" (Decimal("5")). Comparison is
    exact and strict: a balance equal to the threshold is not settled.
    """
    _require_int(remaining_minor, "remaining_minor")
    _require_int(confirmed_deposits_minor, "confirmed_deposits_minor")
    threshold = _exact(threshold_value, "threshold_value")
    if threshold < 0:
        raise ValueError(f"threshold_value must be >= 0, got {threshold_value}")
    decimals = currency_decimals(currency)
    if threshold_type == "absolute":
        below = remaining_minor < threshold * 10**decimals
    elif threshold_type == "percent":
        below = remaining_minor * 100 < threshold * confirmed_deposits_minor
    else:
        raise ValueError(
            f"threshold_type must be one of {_THRESHOLD_TYPES}, got {threshold_type!r}"
        )
    return remaining_minor > 0 and below


# ---------------------------------------------------------------------- Lamassu


@dataclass(frozen=True)
class LamassuAmounts:
    """Principal and commission of a Lamassu transaction, in sats. ``estimated`` is
    True when the row had no ticker price and the commission rate was used instead."""

    principal_sats: int
    fee_sats: int
    estimated: bool


def _effective_commission(
    commission_percentage: Decimal | None, discount: int | None
) -> Fraction:
    if commission_percentage is None:
        raise ValueError(
            "row has neither raw_ticker_price nor commission_percentage: "
            "principal cannot be determined"
        )
    commission = _exact(commission_percentage, "commission_percentage")
    if not 0 <= commission < 1:
        raise ValueError(
            "commission_percentage must be a fraction in [0, 1), "
            f"got {commission_percentage}"
        )
    discount_percent = 0 if discount is None else _require_int(discount, "discount")
    if discount_percent > 100:
        raise ValueError(f"discount must be a percent in [0, 100], got {discount}")
    return commission * (1 - Fraction(discount_percent, 100))


def _market_sats(fiat: Decimal, raw_ticker_price: Decimal | None) -> int | None:
    """fiat * 1e8 / ticker half to even, or None when the row has no usable ticker."""
    fiat_value = _exact(fiat, "fiat")
    if fiat_value < 0:
        raise ValueError(f"fiat must be >= 0, got {fiat}")
    if raw_ticker_price is None:
        return None
    ticker = _exact(raw_ticker_price, "raw_ticker_price")
    if ticker < 0:
        raise ValueError(f"raw_ticker_price must be >= 0, got {raw_ticker_price}")
    if ticker == 0:
        return None
    return _round_half_even(fiat_value * SATS_PER_BTC / ticker)


def lamassu_cash_out_amounts(
    crypto_atoms: int,
    fiat: Decimal,
    raw_ticker_price: Decimal | None,
    commission_percentage: Decimal | None,
    discount: int | None,
) -> LamassuAmounts:
    """docs/sources.md, "Lamassu": the customer sent
    ``crypto_atoms`` (commission included) and received ``fiat`` in cash.

    With a ticker: principal = fiat * 1e8 / ticker (half to even), fee = crypto_atoms -
    principal (commission plus any fixed fee). Without: principal = crypto_atoms *
    (1 - c_eff) half to even, estimated (Lamassu's fixed_fee is not in the estimate:
    without a ticker there is no rate to convert it with).
    Raises ValueError when the computed fee is negative (the ticker moved against the
    machine, or the row is inconsistent): such a row must be rejected, not paid.
    """
    return _lamassu_amounts(
        True, crypto_atoms, fiat, raw_ticker_price, commission_percentage, discount
    )


def lamassu_cash_in_amounts(
    crypto_atoms: int,
    fiat: Decimal,
    raw_ticker_price: Decimal | None,
    commission_percentage: Decimal | None,
    discount: int | None,
) -> LamassuAmounts:
    """A Lamassu cash-in: the customer inserted ``fiat`` and received ``crypto_atoms``.

    With a ticker: principal = fiat * 1e8 / ticker (market value of the cash, half to
    even), fee = principal - crypto_atoms (commission plus any fixed fee).
    Without: principal = crypto_atoms / (1 - c_eff) half to even, fee = principal -
    crypto_atoms, estimated. Raises ValueError if the fee would be negative.
    """
    return _lamassu_amounts(
        False, crypto_atoms, fiat, raw_ticker_price, commission_percentage, discount
    )


def _lamassu_amounts(
    cash_out: bool,
    crypto_atoms: int,
    fiat: Decimal,
    raw_ticker_price: Decimal | None,
    commission_percentage: Decimal | None,
    discount: int | None,
) -> LamassuAmounts:
    _require_int(crypto_atoms, "crypto_atoms")
    principal = _market_sats(fiat, raw_ticker_price)
    estimated = principal is None
    if principal is None:
        kept = 1 - _effective_commission(commission_percentage, discount)
        # A cash-out's sats include the commission; a cash-in's have it taken off.
        principal = _round_half_even(
            crypto_atoms * kept if cash_out else crypto_atoms / kept
        )
    fee = crypto_atoms - principal if cash_out else principal - crypto_atoms
    if fee < 0:
        kind, relation = ("cash-out", "<") if cash_out else ("cash-in", ">")
        raise ValueError(
            f"{kind} fee would be negative: crypto_atoms {crypto_atoms} {relation} "
            f"principal {principal} sats (fiat {fiat} at ticker {raw_ticker_price})"
        )
    return LamassuAmounts(principal, fee, estimated)


# ------------------------------------------------------------- partial dispense


@dataclass(frozen=True)
class RescaledSettlement:
    """A settlement's amounts after a partial dispense. ``wire_sats`` is
    principal + fee (the cash-out relation)."""

    fiat_minor: int
    principal_sats: int
    fee_sats: int
    platform_fee_sats: int
    operator_fee_sats: int
    wire_sats: int


def rescale_partial_dispense(
    fiat_minor: int,
    principal_sats: int,
    fee_sats: int,
    platform_fee_sats: int,
    dispensed_fiat_minor: int,
) -> RescaledSettlement:
    """Scale a settlement to the cash actually dispensed (0 < dispensed <= fiat).

    Principal and fee scale by dispensed / fiat, half to even. The platform keeps its
    original share of the fee (the fraction stored on the settlement is never re-read),
    so the new platform fee is new_fee * platform / fee, half to even, within
    [0, new_fee].
    """
    _require_int(fiat_minor, "fiat_minor", minimum=1)
    _require_int(principal_sats, "principal_sats")
    _require_int(fee_sats, "fee_sats")
    _require_int(platform_fee_sats, "platform_fee_sats")
    _require_int(dispensed_fiat_minor, "dispensed_fiat_minor", minimum=1)
    if dispensed_fiat_minor > fiat_minor:
        raise ValueError(
            f"dispensed fiat {dispensed_fiat_minor} exceeds the settlement's "
            f"fiat {fiat_minor}"
        )
    if platform_fee_sats > fee_sats:
        raise ValueError(
            f"platform_fee_sats {platform_fee_sats} exceeds fee_sats {fee_sats}"
        )
    share = Fraction(dispensed_fiat_minor, fiat_minor)
    new_principal = _round_half_even(principal_sats * share)
    new_fee = _round_half_even(fee_sats * share)
    if fee_sats == 0:
        new_platform = 0
    else:
        new_platform = _round_half_even(Fraction(new_fee * platform_fee_sats, fee_sats))
        new_platform = min(max(new_platform, 0), new_fee)
    return RescaledSettlement(
        fiat_minor=dispensed_fiat_minor,
        principal_sats=new_principal,
        fee_sats=new_fee,
        platform_fee_sats=new_platform,
        operator_fee_sats=new_fee - new_platform,
        wire_sats=new_principal + new_fee,
    )


def dispensed_fiat_from_fraction(fiat_minor: int, fraction: Decimal) -> int:
    """floor(fiat * fraction) for 0 < fraction <= 1; may be 0 for a tiny fraction,
    which rescale_partial_dispense then refuses."""
    _require_int(fiat_minor, "fiat_minor")
    share = _exact(fraction, "fraction")
    if not 0 < share <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return _floor(fiat_minor * share)
