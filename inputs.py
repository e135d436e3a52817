"""Numbers a person typed, checked before any arithmetic: a 400 naming the field.

Every decimal that enters the extension from a request (rates, thresholds, percents,
fractions) goes through `decimal_input`, and fiat amounts through `fiat_input`
(calculations.parse_fiat, bounded the same way). Both judge the *text* first (its
length, its characters, its exponent, its digits), so that no Decimal or Fraction
arithmetic ever runs on a number like "1E-4000000", which as an exact fraction is a
four-million-digit integer and would hold LNbits' event loop for seconds.

The rules, in order (each refusal is BadInput("<field>: <why>")):

1. the type: text, an int or a finite Decimal; bool, float, None and anything else
   are refused (JSON numbers are turned into their text by the request models);
2. the text, stripped of surrounding whitespace: not empty, at most MAX_INPUT_TEXT
   characters, not NaN or an infinity, and ASCII only: an optional sign, digits with
   an optional point, an optional exponent (Decimal() would also take other scripts'
   digits and underscores);
3. the exponent written after "E" at most MAX_EXPONENT either way;
4. at most MAX_SIGNIFICANT_DIGITS significant digits (leading and trailing zeros
   carry no value: they do not count);
5. the value within [minimum, maximum] (or (minimum, maximum] with
   exclusive_minimum), compared exactly, now that it is small enough to be cheap;
6. at most `places` decimal places, judged on the value, not the spelling: trailing
   zeros are not "more decimals" ("50.00000" is a percent with 0 places).

What is accepted is returned as written (Decimal("50.00"), not 50), so that what is
stored and shown stays what the person typed; negative zero becomes zero.
"""

import re
from decimal import Decimal
from typing import Final, Union

from .calculations import (
    MAX_STATED_RATE,
    PERCENT_PLACES,
    STATED_RATE_PLACES,
    FiatError,
    parse_fiat,
)
from .errors import BadInput

# No decimal an operator types needs more: a rate of 10^9 sats with 18 decimals is 29
# characters. Longer text is refused before it is read at all.
MAX_INPUT_TEXT: Final = 100
# The exponent as written ("1E-4000000" is refused here, before anything else).
MAX_EXPONENT: Final = 100
# Digits that carry value: enough for every bound below (19 + 18 for the largest).
MAX_SIGNIFICANT_DIGITS: Final = 40

_NUMBER = re.compile(
    r"(?P<sign>[+-]?)"
    r"(?:(?P<whole>[0-9]+)(?:\.(?P<part>[0-9]*))?|\.(?P<fraction>[0-9]+))"
    r"(?:[eE](?P<exponent>[+-]?[0-9]+))?"
)
_NOT_FINITE = {"nan", "snan", "inf", "infinity"}
# An int beyond this many bits is over 10^100: refused before str() has to print it.
_MAX_INT_BITS: Final = 340

Bound = Union[int, Decimal]


class InputError(ValueError):
    """Why a decimal cannot be used, for people, without the field's name (pydantic
    validators raise it as it is; decimal_input prefixes the field)."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _text(value: object) -> str:
    """The text of a decimal, or InputError for a value of another kind."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        raise InputError(f'must be a decimal number such as "1.5", not {value}')
    if isinstance(value, float):
        raise InputError(
            'must be a decimal string such as "1.5", not a float '
            "(floats cannot hold it exactly)"
        )
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise InputError("is out of range (an integer of more than 100 digits)")
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InputError(f"must be a finite number, not {value}")
        if len(value.as_tuple().digits) > MAX_INPUT_TEXT:
            raise InputError(f"has too many digits (at most {MAX_INPUT_TEXT})")
        return str(value)
    raise InputError(
        f'must be a decimal number such as "1.5", not {type(value).__name__}'
    )


def _significant(match: re.Match) -> tuple[str, int]:
    """(significant digits, exponent) of a matched number: value = digits * 10^exp,
    without leading or trailing zeros; ("", 0) for zero."""
    whole = match["whole"] or ""
    fraction = match["part"] or match["fraction"] or ""
    exponent = int(match["exponent"] or "0") - len(fraction)
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return "", 0
    stripped = digits.rstrip("0")
    return stripped, exponent + len(digits) - len(stripped)


def decimal_text(value: object) -> str:
    """The stripped text of a decimal, checked for shape only (rules 1 to 4): what a
    request model may accept before the service, which knows the bounds, parses it.
    Raises InputError."""
    text = _text(value)
    # Measured before strip() copies it: a megabyte of text is refused as it came.
    if len(text) > 2 * MAX_INPUT_TEXT:
        raise InputError(f"is too long ({len(text)} characters)")
    text = text.strip()
    if not text:
        raise InputError('is empty; send a decimal number such as "1.5"')
    if len(text) > MAX_INPUT_TEXT:
        raise InputError(
            f"is too long ({len(text)} characters; at most {MAX_INPUT_TEXT})"
        )
    if text.lower().lstrip("+-") in _NOT_FINITE:
        raise InputError(f"must be a finite number, not {text}")
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise InputError(
            f"{_shown(text)} is not a decimal number (ASCII digits with an optional "
            "sign, point and exponent)"
        )
    written = match["exponent"]
    # Judged on its digits before int() reads it: "1E-999999999999999999999999".
    if written and (
        len(written.lstrip("+-").lstrip("0")) > 3 or abs(int(written)) > MAX_EXPONENT
    ):
        raise InputError(
            f"exponent {written} is out of range (at most {MAX_EXPONENT} either way)"
        )
    digits, _ = _significant(match)
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        raise InputError(
            f"has too many significant digits ({len(digits)}; at most "
            f"{MAX_SIGNIFICANT_DIGITS})"
        )
    return text


def _range_rule(minimum: Bound, maximum: Bound, exclusive_minimum: bool) -> str:
    low, high = format(Decimal(minimum), "f"), format(Decimal(maximum), "f")
    if exclusive_minimum:
        return f"must be greater than {low} and at most {high}"
    return f"must be between {low} and {high}"


def bounded_decimal(
    value: object,
    *,
    minimum: Bound,
    maximum: Bound,
    places: int,
    exclusive_minimum: bool = False,
) -> Decimal:
    """`decimal_input` without the field: a Decimal, or InputError."""
    text = decimal_text(value)
    match = _NUMBER.fullmatch(text)
    assert match  # decimal_text checked it
    # Cheap now: at most MAX_INPUT_TEXT characters with an exponent of at most
    # MAX_EXPONENT, so Decimal() and the comparisons below are a few microseconds.
    number = Decimal(text)
    if number.is_zero():
        number = number.copy_abs()
    below = number <= minimum if exclusive_minimum else number < minimum
    if below or number > maximum:
        raise InputError(_range_rule(minimum, maximum, exclusive_minimum))
    digits, exponent = _significant(match)
    if digits and -exponent > places:
        if places == 0:
            raise InputError("must be a whole number")
        raise InputError(f"at most {places} decimal places")
    return number


def decimal_input(
    value: object,
    field: str,
    *,
    minimum: Bound,
    maximum: Bound,
    places: int,
    exclusive_minimum: bool = False,
) -> Decimal:
    """A bounded Decimal from what a person typed, or BadInput("<field>: <why>").

    `rate_input` and `percent_input` below are it with the bounds of a rate and a
    percent.
    """
    try:
        return bounded_decimal(
            value,
            minimum=minimum,
            maximum=maximum,
            places=places,
            exclusive_minimum=exclusive_minimum,
        )
    except InputError as exc:
        raise BadInput(f"{field}: {exc}") from None


def rate_input(
    value: object, field: str = "exchange_rate", *, maximum: Bound = MAX_STATED_RATE
) -> Decimal:
    """A stated rate in sats per fiat unit: > 0, at most `maximum`, at most
    STATED_RATE_PLACES decimals."""
    return decimal_input(
        value,
        field,
        minimum=0,
        exclusive_minimum=True,
        maximum=maximum,
        places=STATED_RATE_PLACES,
    )


def percent_input(value: object, field: str) -> Decimal:
    """A percent: > 0, at most 100, at most PERCENT_PLACES decimals."""
    return decimal_input(
        value,
        field,
        minimum=0,
        exclusive_minimum=True,
        maximum=100,
        places=PERCENT_PLACES,
    )


def fiat_input(value: str | int | Decimal, currency: str, field: str) -> int:
    """A fiat amount in minor units of `currency`, or BadInput("<field>: <why>")."""
    try:
        return parse_fiat(value, currency)
    except FiatError as exc:
        raise BadInput(f"{field}: {exc}") from None
