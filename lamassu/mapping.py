"""Lamassu rows → settlements (docs/sources.md, "Lamassu": "Principal of a Lamassu
cash-out"). A row whose numbers cannot be used becomes a `rejected` settlement with
the reason; the arithmetic itself is calculations.py's.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from ..calculations import (
    MAX_CASH_MINOR,
    MAX_SATS,
    FiatError,
    LamassuAmounts,
    lamassu_cash_in_amounts,
    lamassu_cash_out_amounts,
    parse_fiat,
)
from ..intake import rejected_draft, settlement_draft
from ..models import Machine, Settlement
from .connection import TX_TABLES

SOURCE = "lamassu"


def epoch(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _row_payload(tx_type: str, row: asyncpg.Record) -> dict[str, str | None]:
    payload: dict[str, str | None] = {"table": TX_TABLES[tx_type]}
    for key, value in row.items():
        payload[key] = None if value is None else str(value)
    return payload


def _optional_decimal(row: asyncpg.Record, key: str) -> Decimal | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    # Lamassu's columns are numeric(30) and numeric(14,5): an exponent far outside them
    # (1E+999999999) would make int()/Fraction() build a billion-digit number and stall
    # the event loop; such a row is rejected instead.
    if value.is_finite() and value and not -40 <= value.adjusted() <= 40:
        raise ValueError(f"{key} {value:.3E} is out of any range Lamassu stores")
    return value


@dataclass
class Mapped:
    fiat_minor: int
    crypto_atoms: int
    amounts: LamassuAmounts


def map_amounts(tx_type: str, row: asyncpg.Record, machine: Machine) -> Mapped:
    """The settlement's numbers, or ValueError with the reason to reject the row."""
    fiat_code = str(row["fiat_code"] or "").upper()
    if fiat_code != machine.fiat_currency:
        raise ValueError(
            f"fiat_code {fiat_code or '(empty)'} differs from the machine's currency "
            f"{machine.fiat_currency}"
        )
    atoms = _optional_decimal(row, "crypto_atoms")
    if atoms is None or not atoms.is_finite() or atoms != atoms.to_integral_value():
        raise ValueError(f"crypto_atoms {row['crypto_atoms']} is not a whole number")
    crypto_atoms = int(atoms)
    if crypto_atoms <= 0:
        raise ValueError(f"crypto_atoms {crypto_atoms} must be positive")
    if crypto_atoms > MAX_SATS:
        # numeric(30) holds more than our BIGINT columns: such a row would fail the
        # insert and stall every later poll of this operator.
        raise ValueError(f"crypto_atoms {crypto_atoms} is more than 21 million BTC")
    fiat = _optional_decimal(row, "fiat")
    if fiat is None or not fiat.is_finite() or fiat <= 0:
        raise ValueError(f"fiat {row['fiat']} must be a positive amount")
    try:
        fiat_minor = parse_fiat(fiat, machine.fiat_currency)
    except FiatError as exc:
        raise ValueError(str(exc)) from None
    if fiat_minor > MAX_CASH_MINOR:
        raise ValueError(f"fiat {fiat} is more cash than any ATM dispenses")
    discount = row.get("discount")
    if discount is not None:
        discount = int(discount)
    compute = (
        lamassu_cash_out_amounts if tx_type == "cash_out" else (lamassu_cash_in_amounts)
    )
    amounts = compute(
        crypto_atoms,
        fiat,
        _optional_decimal(row, "raw_ticker_price"),
        _optional_decimal(row, "commission_percentage"),
        discount,
    )
    if max(amounts.principal_sats, amounts.fee_sats) > MAX_SATS:
        raise ValueError(
            f"principal {amounts.principal_sats} / fee {amounts.fee_sats} sats is more "
            "than 21 million BTC: the row's fiat, ticker price or commission is wrong"
        )
    return Mapped(fiat_minor=fiat_minor, crypto_atoms=crypto_atoms, amounts=amounts)


def draft_row(
    tx_type: str, row: asyncpg.Record, machine: Machine, fraction: Decimal
) -> Settlement:
    """The settlement (or rejection) one Lamassu row becomes."""
    external_id = str(row["id"])
    payload = _row_payload(tx_type, row)
    try:
        mapped = map_amounts(tx_type, row, machine)
    except (ValueError, TypeError, ArithmeticError) as exc:
        return rejected_draft(
            machine=machine,
            source=SOURCE,
            external_id=external_id,
            reason=f"Lamassu {tx_type} {external_id}: {exc}",
            raw_payload=payload,
            tx_type=tx_type,
        )
    return settlement_draft(
        machine=machine,
        super_fee_fraction=fraction,
        source=SOURCE,
        external_id=external_id,
        tx_type=tx_type,
        fiat_amount_minor=mapped.fiat_minor,
        principal_sats=mapped.amounts.principal_sats,
        fee_sats=mapped.amounts.fee_sats,
        wire_sats=mapped.crypto_atoms,
        estimated=mapped.amounts.estimated,
        raw_payload=payload,
        external_created_at=epoch(row["created"]),
    )
