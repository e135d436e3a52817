"""Numbers a person typed, checked before any arithmetic: a 400 naming the field.

calculations.py says what an amount is (and bounds it); this module turns its refusal
into the domain's BadInput, so every route words a bad amount the same way.
"""

from decimal import Decimal, InvalidOperation

from .calculations import FiatError, parse_fiat
from .errors import BadInput


def fiat_input(value: str | int | Decimal, currency: str, field: str) -> int:
    """A fiat amount in minor units of `currency`, or BadInput("<field>: <why>")."""
    try:
        return parse_fiat(value, currency)
    except FiatError as exc:
        raise BadInput(f"{field}: {exc}") from None


def decimal_value(value: object, refusal: str) -> Decimal:
    """A Decimal from text or a number, or BadInput(refusal) when it is not one."""
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise BadInput(refusal) from None
