"""Rows, requests and responses (pydantic v1, as LNbits 1.6.2 pins it).

Row models mirror the tables one to one (timestamps as epoch seconds, fiat in minor
units). Request models validate shape only: anything that needs the database or the
currency (ownership, decimals of a fiat amount) is checked by the API layer.
Response models are what docs/api.md promises: fiat as decimal strings, times as
ISO-8601.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, validator
from pydantic.errors import DictError

from .calculations import format_fiat
from .inputs import decimal_text

MachineStatus = Literal["active", "inactive"]
ClientStatus = Literal["active", "inactive"]
DcaMode = Literal["flow", "fixed"]
DepositStatus = Literal["pending", "confirmed", "cancelled"]
SettlementSource = Literal["bitspire", "lamassu", "manual"]
TxType = Literal["cash_out", "cash_in"]
SettlementStatus = Literal[
    "pending", "processing", "processed", "errored", "rejected", "held", "voided"
]
LegType = Literal[
    "super_fee", "operator_split", "dca", "autoforward", "fixed", "settlement"
]
LegStatus = Literal["pending", "completed", "failed", "skipped", "voided"]

HEX64 = re.compile(r"^[0-9a-f]{64}$")
WALLET_ID = re.compile(r"^[0-9a-f]{32}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
# LUD-16, as LNbits' LNURL helper (the lnurl library) accepts it: name@domain with a
# top-level domain of letters, no port. Anything else could be saved but never paid.
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RATE_BAND = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,2})?$")
# How far a bitSpire or manual settlement's rate may stray from the reference rate
# (LNbits' exchange rate, else the machine's latest) before it is held.
DEFAULT_RATE_BAND_PERCENT = "20"
LN_ADDRESS = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,63}$")


def iso(epoch: Optional[int]) -> Optional[str]:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def fiat_text(value: Any) -> str:
    """Normalise a decimal from JSON (string or number) to its text, checked for shape
    only (inputs.decimal_text: at most 100 characters, ASCII digits, finite, a bounded
    exponent and number of digits); the service, which knows the bounds and the
    currency, parses it.

    JSON numbers arrive as int or float; str() of a float is its shortest round-trip
    form, which is what the sender wrote, so no binary noise reaches the money code.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError('must be a decimal string such as "690.00"')
    if isinstance(value, float):
        value = str(value)
    if not isinstance(value, (str, int, Decimal)):
        raise ValueError('must be a decimal string such as "690.00"')
    return decimal_text(value)


def _optional_decimal(value: Any) -> Optional[str]:
    return None if value is None else fiat_text(value)


# ---------------------------------------------------------------- rows


class Machine(BaseModel):
    id: str
    operator_user_id: str
    name: str
    wallet_id: str
    fiat_currency: str
    machine_npub: Optional[str] = None
    lamassu_device_id: Optional[str] = None
    status: str = "active"
    fixed_times: str = "[]"
    fixed_timezone: str = "UTC"
    auto_settle_enabled: bool = False
    auto_settle_threshold_type: Optional[str] = None
    auto_settle_threshold_value: Optional[str] = None
    auto_settle_funding_wallet_id: Optional[str] = None
    sweep_cursor: int = 0
    # Percent a settlement's rate may differ from the machine's recent rate before it
    # is held for the operator (None: DEFAULT_RATE_BAND_PERCENT).
    rate_band_percent: Optional[str] = None
    created_at: int
    updated_at: int


class LpPreferences(BaseModel):
    user_id: str
    wallet_id: str
    dca_mode: str = "flow"
    fixed_mode_daily_limit: Optional[str] = None
    autoforward_enabled: bool = False
    autoforward_ln_address: Optional[str] = None
    created_at: int
    updated_at: int


class Client(BaseModel):
    id: str
    machine_id: str
    operator_user_id: str
    user_id: str
    username: Optional[str] = None
    status: str = "active"
    deposits_minor: int = 0
    reserved_minor: int = 0
    sats_received: int = 0
    cycle_complete: bool = False
    created_at: int
    updated_at: int

    @property
    def remaining_minor(self) -> int:
        return max(0, self.deposits_minor - self.reserved_minor)


class Deposit(BaseModel):
    id: str
    client_id: str
    machine_id: str
    operator_user_id: str
    amount_minor: int
    currency: str
    status: str = "pending"
    notes: Optional[str] = None
    created_at: int
    confirmed_at: Optional[int] = None
    cancelled_at: Optional[int] = None


class Settlement(BaseModel):
    id: str
    machine_id: str
    operator_user_id: str
    source: str
    external_id: str
    payment_hash: Optional[str] = None
    tx_type: str
    status: str
    fiat_amount_minor: int = 0
    currency: str
    wire_sats: int = 0
    principal_sats: int = 0
    fee_sats: int = 0
    fee_fraction: Optional[str] = None
    super_fee_fraction: str = "0"
    platform_fee_sats: int = 0
    operator_fee_sats: int = 0
    exchange_rate: Optional[str] = None
    orphan_sats: int = 0
    orphan_fiat_minor: int = 0
    estimated: bool = False
    raw_payload: Optional[str] = None
    error: Optional[str] = None
    attempts: int = 0
    plan_version: int = 0
    next_attempt_at: int = 0
    claim_token: Optional[str] = None
    claimed_until: Optional[int] = None
    external_created_at: Optional[int] = None
    created_at: int
    updated_at: int
    processed_at: Optional[int] = None

    def transaction_keys(self) -> list[str]:
        """The real-world transaction this settlement pays, as keys no second
        settlement may hold (m002's transaction_keys): a Lamassu id once per
        operator, whatever machine its device is linked to; a bitSpire id once per
        machine; a manual entry's reference under its own key and the machine's
        bitSpire key (and, a UUID, the operator's Lamassu key), so it collides with
        the ATM transaction of the same id. A rejection pays nothing and holds none."""
        if self.status == "rejected":
            return []
        lamassu = f"lamassu:{self.operator_user_id}:{self.external_id}"
        bitspire = f"bitspire:{self.machine_id}:{self.external_id}"
        if self.source == "lamassu":
            return [lamassu]
        if self.source == "bitspire":
            return [bitspire]
        keys = [f"manual:{self.machine_id}:{self.external_id}", bitspire]
        # Lamassu ids are UUIDs: a reference that is one names a Lamassu transaction
        # of the operator; any other stays the machine's own (receipt numbers
        # "0001" at two machines are two transactions).
        if UUID.match(self.external_id.lower()):
            keys.append(lamassu)
        return keys


class Leg(BaseModel):
    id: str
    idempotency_key: str
    settlement_id: Optional[str] = None
    machine_id: str
    operator_user_id: str
    client_id: Optional[str] = None
    parent_leg_id: Optional[str] = None
    leg_type: str
    status: str
    amount_sats: int
    amount_fiat_minor: Optional[int] = None
    currency: Optional[str] = None
    exchange_rate: Optional[str] = None
    source_wallet_id: Optional[str] = None
    destination: Optional[str] = None
    destination_kind: Optional[str] = None
    label: Optional[str] = None
    memo: Optional[str] = None
    payment_hash: Optional[str] = None
    bolt11: Optional[str] = None
    error: Optional[str] = None
    attempts: int = 0
    slot_date: Optional[str] = None
    slot_index: Optional[int] = None
    claimed_until: Optional[int] = None
    created_at: int
    updated_at: int
    completed_at: Optional[int] = None
    # What LNbits reported: sats the destination received, the fee it charged the
    # source wallet (msat), and since when its payment is in flight (pending).
    sent_sats: Optional[int] = None
    fee_msat: Optional[int] = None
    in_flight_since: Optional[int] = None


class CommissionRule(BaseModel):
    id: str
    operator_user_id: str
    machine_id: Optional[str] = None
    position: int
    target: str
    target_kind: str
    percent: str
    label: Optional[str] = None
    created_at: int


class PlatformConfig(BaseModel):
    id: int = 1
    super_fee_fraction: str = "0"
    fee_wallet_id: Optional[str] = None
    updated_at: int = 0


class SettlementNote(BaseModel):
    id: str
    settlement_id: str
    author_user_id: str
    note: str
    created_at: int


class AuditEntry(BaseModel):
    id: str
    actor_user_id: str
    operator_user_id: Optional[str] = None
    action: str
    entity_type: str
    entity_id: str
    detail: Optional[str] = None
    created_at: int


@dataclass(frozen=True)
class ClientWithPrefs:
    """An enrolment joined with the LP's preferences: what the engine plans with.

    A plain dataclass, not a pydantic model: planning reads every LP of a machine
    per settlement, and validating rows we wrote ourselves would dominate its cost.
    """

    id: str
    machine_id: str
    user_id: str
    username: Optional[str]
    status: str
    deposits_minor: int
    reserved_minor: int
    sats_received: int
    created_at: int
    wallet_id: Optional[str]
    dca_mode: Optional[str]
    fixed_mode_daily_limit: Optional[str]
    autoforward_enabled: bool
    autoforward_ln_address: Optional[str]

    @property
    def remaining_minor(self) -> int:
        return max(0, self.deposits_minor - self.reserved_minor)

    @classmethod
    def from_row(cls, row: Any) -> "ClientWithPrefs":
        values = dict(row)
        values["autoforward_enabled"] = bool(values.get("autoforward_enabled"))
        return cls(**values)


# ---------------------------------------------------------------- requests


class _Request(BaseModel):
    class Config:
        extra = "forbid"
        anystr_strip_whitespace = True

    @classmethod
    def validate(cls, value: Any) -> Any:
        # pydantic v1 would take dict(value): a body of [] (an empty update) or
        # [["amount", "5"], ...] would pass. A JSON body is an object, nothing else.
        if not isinstance(value, (dict, cls)):
            raise DictError()
        return super().validate(value)

    @validator("*", pre=True)
    def _plain_text(cls, value: Any, field: Any) -> Any:
        """No NUL in text (PostgreSQL refuses it: it would be a 500), and no silent
        str(True) / str(5) into a text field. Fields that take a JSON number (fiat,
        percents, fractions) say so with a pre validator of their own."""
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("must not contain NUL characters")
        elif (
            isinstance(value, (bool, int, float))
            and isinstance(field.type_, type)
            and issubclass(field.type_, str)
            and not any(
                v.pre
                for name, v in field.class_validators.items()
                if name != "_plain_text"
            )
        ):
            raise ValueError("must be a string")
        return value


def _check_currency(value: str) -> str:
    code = value.upper()
    if not CURRENCY.match(code):
        raise ValueError("must be a 3-letter ISO 4217 code such as GTQ")
    return code


def _check_device_id(value: Optional[str]) -> Optional[str]:
    if value is None or value == "":
        return None
    value = value.lower()
    if not HEX64.match(value):
        raise ValueError("a Lamassu device id is 64 hexadecimal characters")
    return value


def _check_npub(value: Optional[str]) -> Optional[str]:
    if value is None or value == "":
        return None
    if not re.match(r"^(npub1[02-9ac-hj-np-z]{58}|[0-9a-f]{64})$", value):
        raise ValueError("must be an npub1... key or 64 hex characters")
    return value


class CreateMachine(_Request):
    name: str = Field(..., min_length=1, max_length=100)
    wallet_id: str = Field(..., min_length=1, max_length=64)
    fiat_currency: str
    machine_npub: Optional[str] = Field(None, max_length=100)
    lamassu_device_id: Optional[str] = Field(None, max_length=64)

    _currency = validator("fiat_currency", allow_reuse=True)(_check_currency)
    _device = validator("lamassu_device_id", allow_reuse=True)(_check_device_id)
    _npub = validator("machine_npub", allow_reuse=True)(_check_npub)


class UpdateMachine(_Request):
    name: Optional[str] = Field(None, min_length=1, max_length=100)
    wallet_id: Optional[str] = Field(None, min_length=1, max_length=64)
    fiat_currency: Optional[str] = None
    machine_npub: Optional[str] = Field(None, max_length=100)
    lamassu_device_id: Optional[str] = Field(None, max_length=64)
    status: Optional[MachineStatus] = None
    rate_band_percent: Optional[str] = None

    @validator("fiat_currency")
    def _currency(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_currency(value)

    @validator("rate_band_percent", pre=True)
    def _band(cls, value: Any) -> Optional[str]:
        if value is None:
            return None
        text = str(value).strip() if not isinstance(value, bool) else ""
        if not RATE_BAND.match(text) or not 0 < Decimal(text) <= 100:
            raise ValueError('a percent above 0 and at most 100, e.g. "20"')
        return text

    _device = validator("lamassu_device_id", allow_reuse=True)(_check_device_id)
    _npub = validator("machine_npub", allow_reuse=True)(_check_npub)


class SetLpPreferences(_Request):
    wallet_id: str = Field(..., min_length=1, max_length=64)
    dca_mode: DcaMode = "flow"
    fixed_mode_daily_limit: Optional[str] = None
    autoforward_enabled: bool = False
    autoforward_ln_address: Optional[str] = Field(None, max_length=320)

    @validator("fixed_mode_daily_limit", pre=True)
    def _limit(cls, value: Any) -> Optional[str]:
        if value is None or value == "":
            return None
        text = fiat_text(value)
        if Decimal(text) <= 0:
            raise ValueError("must be greater than zero")
        if Decimal(text) > Decimal(10) ** 12:
            raise ValueError("is too large")
        return text

    @validator("autoforward_ln_address")
    def _address(cls, value: Optional[str]) -> Optional[str]:
        if value is None or value == "":
            return None
        value = value.lower()
        if not LN_ADDRESS.match(value):
            raise ValueError("must be a Lightning address such as alice@example.com")
        return value


class CreateClient(_Request):
    machine_id: str = Field(..., min_length=1, max_length=64)
    user_id: str = Field(..., min_length=1, max_length=64)
    username: Optional[str] = Field(None, max_length=100)


class UpdateClient(_Request):
    username: Optional[str] = Field(None, max_length=100)
    status: Optional[ClientStatus] = None


class CreateDeposit(_Request):
    client_id: str = Field(..., min_length=1, max_length=64)
    amount: str
    notes: Optional[str] = Field(None, max_length=1000)

    _amount = validator("amount", pre=True, allow_reuse=True)(fiat_text)


# ---------------------------------------------------------------- responses


class MachineOut(BaseModel):
    id: str
    name: str
    wallet_id: str
    fiat_currency: str
    machine_npub: Optional[str]
    lamassu_device_id: Optional[str]
    status: str
    fixed_times: list[str]
    fixed_timezone: str
    rate_band_percent: str
    auto_settlement: dict
    created_at: Optional[str]
    updated_at: Optional[str]


class LpPreferencesOut(BaseModel):
    user_id: str
    wallet_id: str
    dca_mode: str
    fixed_mode_daily_limit: Optional[str]
    autoforward_enabled: bool
    autoforward_ln_address: Optional[str]
    updated_at: Optional[str]


class ClientOut(BaseModel):
    id: str
    machine_id: str
    user_id: str
    username: Optional[str]
    status: str
    dca_mode: Optional[str]
    onboarded: bool
    created_at: Optional[str]


def client_out(row: ClientWithPrefs) -> ClientOut:
    return ClientOut(
        id=row.id,
        machine_id=row.machine_id,
        user_id=row.user_id,
        username=row.username,
        status=row.status,
        dca_mode=row.dca_mode,
        onboarded=row.wallet_id is not None,
        created_at=iso(row.created_at),
    )


class DepositOut(BaseModel):
    id: str
    client_id: str
    machine_id: str
    amount: str
    currency: str
    status: str
    notes: Optional[str]
    created_at: Optional[str]
    confirmed_at: Optional[str]
    cancelled_at: Optional[str]


class BalanceOut(BaseModel):
    client_id: str
    machine_id: str
    currency: str
    total_deposits: str
    total_distributed: str
    remaining_balance: str
    total_sats: int
    cycle_complete: bool


def machine_out(machine: Machine) -> MachineOut:
    return MachineOut(
        id=machine.id,
        name=machine.name,
        wallet_id=machine.wallet_id,
        fiat_currency=machine.fiat_currency,
        machine_npub=machine.machine_npub,
        lamassu_device_id=machine.lamassu_device_id,
        status=machine.status,
        fixed_times=json.loads(machine.fixed_times or "[]"),
        fixed_timezone=machine.fixed_timezone,
        rate_band_percent=machine.rate_band_percent or DEFAULT_RATE_BAND_PERCENT,
        auto_settlement={
            "enabled": machine.auto_settle_enabled,
            "threshold_type": machine.auto_settle_threshold_type,
            "threshold_value": machine.auto_settle_threshold_value,
            "funding_wallet_id": machine.auto_settle_funding_wallet_id,
        },
        created_at=iso(machine.created_at),
        updated_at=iso(machine.updated_at),
    )


def lp_preferences_out(prefs: LpPreferences) -> LpPreferencesOut:
    return LpPreferencesOut(
        user_id=prefs.user_id,
        wallet_id=prefs.wallet_id,
        dca_mode=prefs.dca_mode,
        fixed_mode_daily_limit=prefs.fixed_mode_daily_limit,
        autoforward_enabled=prefs.autoforward_enabled,
        autoforward_ln_address=prefs.autoforward_ln_address,
        updated_at=iso(prefs.updated_at),
    )


def deposit_out(deposit: Deposit) -> DepositOut:
    return DepositOut(
        id=deposit.id,
        client_id=deposit.client_id,
        machine_id=deposit.machine_id,
        amount=format_fiat(deposit.amount_minor, deposit.currency),
        currency=deposit.currency,
        status=deposit.status,
        notes=deposit.notes,
        created_at=iso(deposit.created_at),
        confirmed_at=iso(deposit.confirmed_at),
        cancelled_at=iso(deposit.cancelled_at),
    )


def balance_out(client: Client, currency: str) -> BalanceOut:
    return BalanceOut(
        client_id=client.id,
        machine_id=client.machine_id,
        currency=currency,
        total_deposits=format_fiat(client.deposits_minor, currency),
        total_distributed=format_fiat(
            min(client.reserved_minor, client.deposits_minor), currency
        ),
        remaining_balance=format_fiat(client.remaining_minor, currency),
        total_sats=client.sats_received,
        cycle_complete=client.cycle_complete,
    )


class LegOut(BaseModel):
    id: str
    settlement_id: Optional[str]
    machine_id: str
    leg_type: str
    status: str
    amount_sats: int
    amount_fiat: Optional[str]
    currency: Optional[str]
    exchange_rate: Optional[str]
    client_id: Optional[str]
    destination: Optional[str]
    destination_kind: Optional[str]
    label: Optional[str]
    memo: Optional[str]
    payment_hash: Optional[str]
    error: Optional[str]
    attempts: int
    created_at: Optional[str]
    completed_at: Optional[str]
    sent_sats: Optional[int] = None
    fee_msat: Optional[int] = None
    in_flight: bool = False
    in_flight_since: Optional[str] = None
    # Its settlement's principal was estimated (a Lamassu row without a ticker).
    estimated: bool = False


class NoteOut(BaseModel):
    id: str
    author_user_id: str
    note: str
    created_at: Optional[str]


class SettlementOut(BaseModel):
    id: str
    machine_id: str
    source: str
    external_id: str
    tx_type: str
    status: str
    fiat_amount: str
    currency: str
    wire_sats: int
    principal_sats: int
    fee_sats: int
    fee_fraction: Optional[str]
    super_fee_fraction: str
    platform_fee_sats: int
    operator_fee_sats: int
    exchange_rate: Optional[str]
    orphan_sats: int
    orphan_fiat: str
    estimated: bool
    payment_hash: Optional[str]
    error: Optional[str]
    attempts: int
    next_attempt_at: Optional[str]
    notes: list[NoteOut] = []
    raw_payload: Optional[Any] = None
    created_at: Optional[str]
    processed_at: Optional[str]
    legs: Optional[list[LegOut]] = None


def leg_out(leg: Leg) -> LegOut:
    return LegOut(
        id=leg.id,
        settlement_id=leg.settlement_id,
        machine_id=leg.machine_id,
        leg_type=leg.leg_type,
        status=leg.status,
        amount_sats=leg.amount_sats,
        amount_fiat=(
            format_fiat(leg.amount_fiat_minor, leg.currency)
            if leg.amount_fiat_minor is not None and leg.currency
            else None
        ),
        currency=leg.currency,
        exchange_rate=leg.exchange_rate,
        client_id=leg.client_id,
        destination=leg.destination,
        destination_kind=leg.destination_kind,
        label=leg.label,
        memo=leg.memo,
        payment_hash=leg.payment_hash,
        error=leg.error,
        attempts=leg.attempts,
        created_at=iso(leg.created_at),
        completed_at=iso(leg.completed_at),
        sent_sats=leg.sent_sats,
        fee_msat=leg.fee_msat,
        in_flight=leg.in_flight_since is not None,
        in_flight_since=iso(leg.in_flight_since),
    )


def settlement_out(
    settlement: Settlement,
    notes: Optional[list[SettlementNote]] = None,
    legs: Optional[list[Leg]] = None,
    with_payload: bool = False,
) -> SettlementOut:
    payload = None
    if with_payload and settlement.raw_payload:
        try:
            payload = json.loads(settlement.raw_payload)
        except ValueError:
            payload = settlement.raw_payload
    return SettlementOut(
        id=settlement.id,
        machine_id=settlement.machine_id,
        source=settlement.source,
        external_id=settlement.external_id,
        tx_type=settlement.tx_type,
        status=settlement.status,
        fiat_amount=format_fiat(settlement.fiat_amount_minor, settlement.currency),
        currency=settlement.currency,
        wire_sats=settlement.wire_sats,
        principal_sats=settlement.principal_sats,
        fee_sats=settlement.fee_sats,
        fee_fraction=settlement.fee_fraction,
        super_fee_fraction=settlement.super_fee_fraction,
        platform_fee_sats=settlement.platform_fee_sats,
        operator_fee_sats=settlement.operator_fee_sats,
        exchange_rate=settlement.exchange_rate,
        orphan_sats=settlement.orphan_sats,
        orphan_fiat=format_fiat(settlement.orphan_fiat_minor, settlement.currency),
        estimated=settlement.estimated,
        payment_hash=settlement.payment_hash,
        error=settlement.error,
        attempts=settlement.attempts,
        next_attempt_at=(
            iso(settlement.next_attempt_at)
            if settlement.status == "errored" and settlement.next_attempt_at
            else None
        ),
        notes=[
            NoteOut(
                id=n.id,
                author_user_id=n.author_user_id,
                note=n.note,
                created_at=iso(n.created_at),
            )
            for n in notes or []
        ],
        raw_payload=payload,
        created_at=iso(settlement.created_at),
        processed_at=iso(settlement.processed_at),
        legs=[leg_out(leg) for leg in legs] if legs is not None else None,
    )


# ================================================================ the API's other
# requests and responses: platform, commission, settlements, legs, settings, audit


def epoch(value: Optional[datetime]) -> Optional[int]:
    return None if value is None else int(value.timestamp())


# ---------------------------------------------------------------- platform


class SuperConfigIn(_Request):
    super_fee_fraction: str
    fee_wallet_id: Optional[str] = Field(None, max_length=64)

    @validator("super_fee_fraction", pre=True)
    def _fraction_text(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError("must be a decimal between 0 and 1")
        return decimal_text(str(value) if isinstance(value, float) else value)


class SuperConfigOut(BaseModel):
    super_fee_fraction: str
    fee_wallet_id: Optional[str]
    updated_at: Optional[str]


# ---------------------------------------------------------------- commission


class SplitLegIn(_Request):
    target: str = Field(..., min_length=1, max_length=2000)
    percent: str
    label: Optional[str] = Field(None, max_length=100)

    @validator("percent", pre=True)
    def _percent_text(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError('must be a decimal percent such as "50"')
        return decimal_text(str(value) if isinstance(value, float) else value)


class SplitsIn(_Request):
    machine_id: Optional[str] = Field(None, max_length=64)
    legs: list[SplitLegIn] = Field(..., max_items=20)


class SplitLegOut(BaseModel):
    target: str
    target_kind: str
    percent: str
    label: Optional[str]


class SplitsOut(BaseModel):
    machine_id: Optional[str]
    inherited: bool
    legs: list[SplitLegOut]


def splits_out(
    machine_id: Optional[str], inherited: bool, rules: list[CommissionRule]
) -> SplitsOut:
    return SplitsOut(
        machine_id=machine_id,
        inherited=inherited,
        legs=[
            SplitLegOut(
                target=r.target,
                target_kind=r.target_kind,
                percent=r.percent,
                label=r.label,
            )
            for r in rules
        ],
    )


# ---------------------------------------------------------------- settlements


class ManualSettlementIn(_Request):
    machine_id: str = Field(..., min_length=1, max_length=64)
    tx_type: TxType
    external_id: str = Field(..., min_length=1, max_length=200)
    fiat_amount: str
    principal_sats: Optional[StrictInt] = None
    fee_sats: StrictInt = 0
    exchange_rate: Optional[str] = None
    notes: Optional[str] = Field(None, max_length=2000)

    _fiat = validator("fiat_amount", pre=True, allow_reuse=True)(fiat_text)
    _rate = validator("exchange_rate", pre=True, allow_reuse=True)(_optional_decimal)


class PartialDispenseIn(_Request):
    dispensed_fraction: Optional[str] = None
    dispensed_fiat: Optional[str] = None

    _fraction = validator("dispensed_fraction", pre=True, allow_reuse=True)(
        _optional_decimal
    )
    _fiat = validator("dispensed_fiat", pre=True, allow_reuse=True)(_optional_decimal)


class NoteIn(_Request):
    note: str = Field(..., min_length=1, max_length=2000)


class RejectIn(_Request):
    reason: str = Field(..., min_length=1, max_length=500)


class VoidIn(_Request):
    """Why a settlement is written off: required, kept on it and in the audit."""

    reason: str = Field(..., min_length=1, max_length=500)


# ---------------------------------------------------------------- legs


class LegFilters(BaseModel):
    machine_id: Optional[str] = None
    client_id: Optional[str] = None
    leg_type: Optional[str] = None
    status: Optional[str] = None
    settlement_id: Optional[str] = None
    since: Optional[int] = None
    until: Optional[int] = None
    limit: int = 500
    offset: int = 0


# ---------------------------------------------------------------- balances, fixed mode


class SettleIn(_Request):
    funding_wallet_id: str = Field(..., min_length=1, max_length=64)
    exchange_rate: Optional[str] = None
    amount_fiat: Optional[str] = None

    _rate = validator("exchange_rate", pre=True, allow_reuse=True)(_optional_decimal)
    _fiat = validator("amount_fiat", pre=True, allow_reuse=True)(_optional_decimal)


class AutoSettlementIn(_Request):
    enabled: StrictBool
    threshold_type: Optional[Literal["absolute", "percent"]] = None
    threshold_value: Optional[str] = None
    funding_wallet_id: Optional[str] = Field(None, max_length=64)

    _value = validator("threshold_value", pre=True, allow_reuse=True)(_optional_decimal)


class FixedScheduleIn(_Request):
    times: list[StrictStr] = Field(..., max_items=48)
    timezone: str = Field(..., min_length=1, max_length=64)


# ---------------------------------------------------------------- audit trail


class AuditOut(BaseModel):
    id: str
    actor_user_id: str
    action: str
    entity_type: str
    entity_id: str
    detail: Optional[dict]
    created_at: Optional[str]


def audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        id=entry.id,
        actor_user_id=entry.actor_user_id,
        action=entry.action,
        entity_type=entry.entity_type,
        entity_id=entry.entity_id,
        detail=json.loads(entry.detail) if entry.detail else None,
        created_at=iso(entry.created_at),
    )


# ---------------------------------------------------------------- alerts


class Alert(BaseModel):
    """One row of satmachineadmin.alerts: an operator incident or an LP event."""

    id: str
    incident_key: str
    kind: str
    audience: str  # "operator" or "lp"
    user_id: str  # who is told
    operator_user_id: Optional[str] = None
    machine_id: Optional[str] = None
    subject: str
    body: str
    notify: bool = True  # False: recorded, but the user turned this kind off
    opened_at: int
    resolved_at: Optional[int] = None
    updated_at: int


class AlertMessage(BaseModel):
    """One row of satmachineadmin.alert_messages: a message to deliver."""

    id: str
    alert_id: str
    user_id: str
    phase: str  # "opened", "resolved" or "event"
    subject: str
    body: str
    status: str = "queued"  # queued, sent, no_channel
    channels_done: str = ""
    attempts: int = 0
    next_attempt_at: int = 0
    last_error: Optional[str] = None
    created_at: int
    sent_at: Optional[int] = None


class AlertOut(BaseModel):
    id: str
    kind: str
    machine_id: Optional[str]
    subject: str
    body: str
    opened_at: Optional[str]
    resolved_at: Optional[str]
    notify: bool
    # the delivery of its latest message: queued, sent, no_channel (None: none)
    delivery: Optional[str] = None
    delivery_attempts: int = 0
    delivery_error: Optional[str] = None


def alert_out(alert: Alert, message: Optional[AlertMessage]) -> AlertOut:
    return AlertOut(
        id=alert.id,
        kind=alert.kind,
        machine_id=alert.machine_id,
        subject=alert.subject,
        body=alert.body,
        opened_at=iso(alert.opened_at),
        resolved_at=iso(alert.resolved_at),
        notify=alert.notify,
        delivery=message.status if message else None,
        delivery_attempts=message.attempts if message else 0,
        delivery_error=message.last_error if message else None,
    )


class OperatorAlertSettingsIn(_Request):
    """PUT /alerts/settings: kinds on or off for every machine (`kinds`) and per
    machine (`machines`: machine id -> kinds, overriding `kinds`), and thresholds."""

    kinds: dict[StrictStr, StrictBool] = Field(default_factory=dict)
    machines: dict[StrictStr, dict[StrictStr, StrictBool]] = Field(default_factory=dict)
    stuck_minutes: StrictInt = 30
    leg_pending_minutes: StrictInt = 60
    errored_attempts: StrictInt = 3

    @validator("stuck_minutes", "leg_pending_minutes")
    def _minutes(cls, value: int) -> int:
        if not 1 <= value <= 10_080:
            raise ValueError("between 1 and 10080 minutes")
        return value

    @validator("errored_attempts")
    def _attempts(cls, value: int) -> int:
        if not 1 <= value <= 100:
            raise ValueError("between 1 and 100")
        return value

    @validator("kinds")
    def _few_kinds(cls, value: dict) -> dict:
        if len(value) > 32:
            raise ValueError("at most 32 kinds")
        return value

    @validator("machines")
    def _few_machines(cls, value: dict) -> dict:
        if len(value) > 500 or any(len(kinds) > 32 for kinds in value.values()):
            raise ValueError("at most 500 machines of at most 32 kinds each")
        return value


class LpAlertSettingsIn(_Request):
    """PUT /lp/alerts/settings: which notifications the LP gets, the digest period."""

    deposit_confirmed: StrictBool = True
    payout_digest: StrictBool = True
    digest_period: Literal["hour", "day", "week"] = "day"
    cycle_complete: StrictBool = True
    autoforward_failed: StrictBool = True
