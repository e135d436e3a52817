"""REST API (spec/api.md): validate, authorize, call a service, shape the answer.

Who is calling is always the LNbits user behind the key: an operator's endpoints take
the admin key of any wallet they own (reads also an invoice key), the LP's the same for
their wallets, the super user's only a wallet of the LNbits super user.
"""

import csv
import io
import json
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Header, Query, Response
from lnbits.core.models import WalletTypeInfo
from lnbits.decorators import require_admin_key, require_invoice_key
from lnbits.settings import settings
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, validator

from . import (
    bitspire,
    corrections,
    crud,
    fixed_mode,
    lamassu,
    manual,
    services,
    small_balances,
)
from .calculations import cost_basis_fiat_per_btc, format_fiat
from .errors import Conflict, Forbidden, NotFound
from .models import (
    BalanceOut,
    ClientOut,
    CreateClient,
    CreateDeposit,
    CreateMachine,
    DepositOut,
    LegOut,
    LegStatus,
    LegType,
    LpPreferencesOut,
    MachineOut,
    SetLpPreferences,
    SettlementOut,
    SettlementStatus,
    TxType,
    UpdateClient,
    UpdateMachine,
    _Request,
    balance_out,
    deposit_out,
    fiat_text,
    iso,
    leg_out,
    lp_preferences_out,
    machine_out,
    settlement_out,
)
from .routing import ExtensionRoute

satmachineadmin_api_router = APIRouter(prefix="/api/v1", route_class=ExtensionRoute)


def operator_writer(key_info: WalletTypeInfo = Depends(require_admin_key)) -> str:
    return key_info.wallet.user


def operator_reader(key_info: WalletTypeInfo = Depends(require_invoice_key)) -> str:
    return key_info.wallet.user


def super_user(key_info: WalletTypeInfo = Depends(require_admin_key)) -> str:
    if key_info.wallet.user != settings.super_user:
        raise Forbidden("only the super user may do this")
    return key_info.wallet.user


# ---------------------------------------------------------------- machines


@satmachineadmin_api_router.post(
    "/machines", status_code=HTTPStatus.CREATED, response_model=MachineOut
)
async def api_create_machine(
    data: CreateMachine, operator: str = Depends(operator_writer)
) -> MachineOut:
    return machine_out(await services.create_machine(operator, data))


@satmachineadmin_api_router.get("/machines", response_model=list[MachineOut])
async def api_list_machines(
    operator: str = Depends(operator_reader),
) -> list[MachineOut]:
    return [machine_out(m) for m in await crud.list_machines(operator)]


@satmachineadmin_api_router.get("/machines/{machine_id}", response_model=MachineOut)
async def api_get_machine(
    machine_id: str, operator: str = Depends(operator_reader)
) -> MachineOut:
    return machine_out(await services.operator_machine(operator, machine_id))


@satmachineadmin_api_router.put("/machines/{machine_id}", response_model=MachineOut)
async def api_update_machine(
    machine_id: str, data: UpdateMachine, operator: str = Depends(operator_writer)
) -> MachineOut:
    return machine_out(await services.update_machine(operator, machine_id, data))


# ---------------------------------------------------------------- LP


@satmachineadmin_api_router.put("/lp", response_model=LpPreferencesOut)
async def api_set_lp_preferences(
    data: SetLpPreferences, user: str = Depends(operator_writer)
) -> LpPreferencesOut:
    return lp_preferences_out(await services.set_lp_preferences(user, data))


@satmachineadmin_api_router.get("/lp", response_model=LpPreferencesOut)
async def api_get_lp_preferences(
    user: str = Depends(operator_reader),
) -> LpPreferencesOut:
    prefs = await crud.get_lp_preferences(user)
    if not prefs:
        raise NotFound("you have not set your LP preferences yet (PUT /lp)")
    return lp_preferences_out(prefs)


# ---------------------------------------------------------------- clients


async def _client_out(client_id: str, operator: str) -> ClientOut:
    row = await crud.get_client_with_prefs(client_id)
    if not row or (await services.operator_client(operator, client_id)) is None:
        raise NotFound(f"client {client_id} not found")
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


@satmachineadmin_api_router.post(
    "/clients", status_code=HTTPStatus.CREATED, response_model=ClientOut
)
async def api_create_client(
    data: CreateClient, operator: str = Depends(operator_writer)
) -> ClientOut:
    client = await services.enrol_client(operator, data)
    return await _client_out(client.id, operator)


@satmachineadmin_api_router.get("/clients", response_model=list[ClientOut])
async def api_list_clients(
    machine_id: Optional[str] = Query(None, max_length=64),
    operator: str = Depends(operator_reader),
) -> list[ClientOut]:
    if machine_id:
        await services.operator_machine(operator, machine_id)
    rows = await crud.list_operator_clients_with_prefs(operator, machine_id)
    return [
        ClientOut(
            id=row.id,
            machine_id=row.machine_id,
            user_id=row.user_id,
            username=row.username,
            status=row.status,
            dca_mode=row.dca_mode,
            onboarded=row.wallet_id is not None,
            created_at=iso(row.created_at),
        )
        for row in rows
    ]


@satmachineadmin_api_router.get("/clients/{client_id}", response_model=ClientOut)
async def api_get_client(
    client_id: str, operator: str = Depends(operator_reader)
) -> ClientOut:
    return await _client_out(client_id, operator)


@satmachineadmin_api_router.put("/clients/{client_id}", response_model=ClientOut)
async def api_update_client(
    client_id: str, data: UpdateClient, operator: str = Depends(operator_writer)
) -> ClientOut:
    await services.update_client(operator, client_id, data)
    return await _client_out(client_id, operator)


@satmachineadmin_api_router.get(
    "/clients/{client_id}/balance", response_model=BalanceOut
)
async def api_client_balance(
    client_id: str, operator: str = Depends(operator_reader)
) -> BalanceOut:
    client = await services.operator_client(operator, client_id)
    machine = await services.operator_machine(operator, client.machine_id)
    return balance_out(client, machine.fiat_currency)


# ---------------------------------------------------------------- deposits


@satmachineadmin_api_router.post(
    "/deposits", status_code=HTTPStatus.CREATED, response_model=DepositOut
)
async def api_create_deposit(
    data: CreateDeposit, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await services.create_deposit(operator, data))


@satmachineadmin_api_router.post(
    "/deposits/{deposit_id}/confirm", response_model=DepositOut
)
async def api_confirm_deposit(
    deposit_id: str, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await services.confirm_deposit(operator, deposit_id))


@satmachineadmin_api_router.post(
    "/deposits/{deposit_id}/cancel", response_model=DepositOut
)
async def api_cancel_deposit(
    deposit_id: str, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await services.cancel_deposit(operator, deposit_id))


@satmachineadmin_api_router.get("/deposits", response_model=list[DepositOut])
async def api_list_deposits(
    client_id: Optional[str] = Query(None, max_length=64),
    operator: str = Depends(operator_reader),
) -> list[DepositOut]:
    if client_id:
        await services.operator_client(operator, client_id)
    return [deposit_out(d) for d in await crud.list_deposits(operator, client_id)]


# ---------------------------------------------------------------- super user


class SuperConfigIn(_Request):
    super_fee_fraction: str
    fee_wallet_id: Optional[str] = Field(None, max_length=64)

    @validator("super_fee_fraction", pre=True)
    def _fraction_text(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError("must be a decimal between 0 and 1")
        return str(value)


class SuperConfigOut(BaseModel):
    super_fee_fraction: str
    fee_wallet_id: Optional[str]
    updated_at: Optional[str]


@satmachineadmin_api_router.get("/super/config", response_model=SuperConfigOut)
async def api_get_super_config(user: str = Depends(super_user)) -> SuperConfigOut:
    config = await crud.get_platform_config()
    return SuperConfigOut(
        super_fee_fraction=config.super_fee_fraction,
        fee_wallet_id=config.fee_wallet_id,
        updated_at=iso(config.updated_at) if config.updated_at else None,
    )


@satmachineadmin_api_router.put("/super/config", response_model=SuperConfigOut)
async def api_set_super_config(
    data: SuperConfigIn, user: str = Depends(super_user)
) -> SuperConfigOut:
    fraction = services.parse_fraction(data.super_fee_fraction)
    config = await services.set_platform_config(user, fraction, data.fee_wallet_id)
    return SuperConfigOut(
        super_fee_fraction=config.super_fee_fraction,
        fee_wallet_id=config.fee_wallet_id,
        updated_at=iso(config.updated_at),
    )


# ---------------------------------------------------------------- commission rules


class SplitLegIn(_Request):
    target: str = Field(..., min_length=1, max_length=2000)
    percent: str
    label: Optional[str] = Field(None, max_length=100)

    @validator("percent", pre=True)
    def _percent_text(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError('must be a decimal percent such as "50"')
        return str(value)


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


@satmachineadmin_api_router.put("/commission/splits", response_model=SplitsOut)
async def api_set_splits(
    data: SplitsIn, operator: str = Depends(operator_writer)
) -> SplitsOut:
    rules = await services.set_commission_rules(
        operator, data.machine_id, [leg.dict() for leg in data.legs]
    )
    return SplitsOut(
        machine_id=data.machine_id,
        inherited=False,
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


@satmachineadmin_api_router.get("/commission/splits", response_model=SplitsOut)
async def api_get_splits(
    machine_id: Optional[str] = Query(None, max_length=64),
    operator: str = Depends(operator_reader),
) -> SplitsOut:
    if machine_id:
        await services.operator_machine(operator, machine_id)
    rules = await crud.list_commission_rules(operator, machine_id)
    inherited = False
    if machine_id and not rules:
        rules = await crud.list_commission_rules(operator, None)
        inherited = True
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
    _rate = validator("exchange_rate", pre=True, allow_reuse=True)(
        lambda value: None if value is None else fiat_text(value)
    )


class PartialDispenseIn(_Request):
    dispensed_fraction: Optional[str] = None
    dispensed_fiat: Optional[str] = None

    _fraction = validator("dispensed_fraction", pre=True, allow_reuse=True)(
        lambda value: None if value is None else fiat_text(value)
    )
    _fiat = validator("dispensed_fiat", pre=True, allow_reuse=True)(
        lambda value: None if value is None else fiat_text(value)
    )


class NoteIn(_Request):
    note: str = Field(..., min_length=1, max_length=2000)


def _epoch(value: Optional[datetime], field: str) -> Optional[int]:
    return None if value is None else int(value.timestamp())


@satmachineadmin_api_router.get("/settlements", response_model=list[SettlementOut])
async def api_list_settlements(
    response: Response,
    machine_id: Optional[str] = Query(None, max_length=64),
    status: Optional[SettlementStatus] = None,
    tx_type: Optional[TxType] = None,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
    operator: str = Depends(operator_reader),
) -> list[SettlementOut]:
    if machine_id:
        await services.operator_machine(operator, machine_id)
    rows, total = await crud.list_settlements(
        operator,
        machine_id=machine_id,
        status=status,
        tx_type=tx_type,
        since=_epoch(since, "since"),
        until=_epoch(until, "until"),
        limit=limit,
        offset=offset,
    )
    response.headers["X-Total-Count"] = str(total)
    return [settlement_out(row) for row in rows]


@satmachineadmin_api_router.post(
    "/settlements", status_code=HTTPStatus.CREATED, response_model=SettlementOut
)
async def api_manual_settlement(
    data: ManualSettlementIn, operator: str = Depends(operator_writer)
) -> SettlementOut:
    rate = None
    if data.exchange_rate is not None:
        rate = Decimal(data.exchange_rate)
    settlement = await manual.enter_settlement(
        operator,
        machine_id=data.machine_id,
        tx_type=data.tx_type,
        external_id=data.external_id,
        fiat_amount=data.fiat_amount,
        principal_sats=data.principal_sats,
        fee_sats=data.fee_sats,
        exchange_rate=rate,
        notes=data.notes,
    )
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@satmachineadmin_api_router.get(
    "/settlements/{settlement_id}", response_model=SettlementOut
)
async def api_get_settlement(
    settlement_id: str, operator: str = Depends(operator_reader)
) -> SettlementOut:
    settlement = await corrections.operator_settlement(operator, settlement_id)
    return settlement_out(
        settlement,
        await crud.list_notes(settlement.id),
        await crud.list_settlement_legs(settlement.id),
        with_payload=True,
    )


@satmachineadmin_api_router.post(
    "/settlements/{settlement_id}/retry", response_model=SettlementOut
)
async def api_retry_settlement(
    settlement_id: str, operator: str = Depends(operator_writer)
) -> SettlementOut:
    settlement = await corrections.retry(operator, settlement_id)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@satmachineadmin_api_router.post(
    "/settlements/{settlement_id}/partial-dispense", response_model=SettlementOut
)
async def api_partial_dispense(
    settlement_id: str,
    data: PartialDispenseIn,
    operator: str = Depends(operator_writer),
) -> SettlementOut:
    fraction = (
        None if data.dispensed_fraction is None else Decimal(data.dispensed_fraction)
    )
    settlement = await corrections.partial_dispense(
        operator, settlement_id, fraction, data.dispensed_fiat
    )
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@satmachineadmin_api_router.post(
    "/settlements/{settlement_id}/notes",
    status_code=HTTPStatus.CREATED,
    response_model=SettlementOut,
)
async def api_add_note(
    settlement_id: str, data: NoteIn, operator: str = Depends(operator_writer)
) -> SettlementOut:
    await corrections.add_operator_note(operator, settlement_id, data.note)
    settlement = await corrections.operator_settlement(operator, settlement_id)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


# ---------------------------------------------------------------- payments (legs)


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


def leg_filters(
    machine_id: Optional[str] = Query(None, max_length=64),
    client_id: Optional[str] = Query(None, max_length=64),
    leg_type: Optional[LegType] = None,
    status: Optional[LegStatus] = None,
    settlement_id: Optional[str] = Query(None, max_length=64),
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    limit: int = Query(500, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> LegFilters:
    return LegFilters(
        machine_id=machine_id,
        client_id=client_id,
        leg_type=leg_type,
        status=status,
        settlement_id=settlement_id,
        since=_epoch(since, "since"),
        until=_epoch(until, "until"),
        limit=limit,
        offset=offset,
    )


@satmachineadmin_api_router.get("/payments", response_model=list[LegOut])
async def api_list_payments(
    filters: LegFilters = Depends(leg_filters), operator: str = Depends(operator_reader)
) -> list[LegOut]:
    legs = await crud.list_legs(operator_user_id=operator, **filters.dict())
    return [leg_out(leg) for leg in legs]


CSV_COLUMNS = [
    "created_at",
    "completed_at",
    "leg_id",
    "settlement_id",
    "machine_id",
    "client_id",
    "leg_type",
    "status",
    "amount_sats",
    "amount_fiat",
    "currency",
    "exchange_rate_sats_per_unit",
    "fiat_per_btc",
    "destination",
    "payment_hash",
    "error",
]


@satmachineadmin_api_router.get("/payments.csv")
async def api_payments_csv(
    filters: LegFilters = Depends(leg_filters), operator: str = Depends(operator_reader)
) -> Response:
    legs = await crud.list_legs(operator_user_id=operator, **filters.dict())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for leg in legs:
        shown = leg_out(leg)
        fiat_per_btc = None
        if leg.amount_fiat_minor and leg.currency and leg.amount_sats:
            fiat_per_btc = cost_basis_fiat_per_btc(
                leg.amount_sats, leg.amount_fiat_minor, leg.currency
            )
        writer.writerow(
            [
                shown.created_at,
                shown.completed_at,
                leg.id,
                leg.settlement_id or "",
                leg.machine_id,
                leg.client_id or "",
                leg.leg_type,
                leg.status,
                leg.amount_sats,
                shown.amount_fiat or "",
                leg.currency or "",
                leg.exchange_rate or "",
                fiat_per_btc if fiat_per_btc is not None else "",
                leg.destination or "",
                leg.payment_hash or "",
                leg.error or "",
            ]
        )
    return Response(
        content=buffer.getvalue(),
        media_type="text/csv",
        headers={
            "Content-Disposition": 'attachment; filename="satmachine-payments.csv"'
        },
    )


# ---------------------------------------------------------------- health


@satmachineadmin_api_router.get("/health")
async def api_health(operator: str = Depends(operator_reader)) -> dict:
    from lnbits.core.crud import get_wallet
    from lnbits.task_manager import task_manager

    machines = await crud.list_machines(operator)
    needs = await crud.pending_needs_by_wallet()
    machine_rows = []
    for machine in machines:
        wallet = await get_wallet(machine.wallet_id)
        balance = wallet.balance_msat // 1000 if wallet else 0
        need = needs.get(machine.wallet_id, 0)
        machine_rows.append(
            {
                "machine_id": machine.id,
                "name": machine.name,
                "status": machine.status,
                "float_sats": balance,
                "pending_legs_need_sats": need,
                "float_short_by_sats": max(0, need - balance),
            }
        )
    counts = await crud.settlement_status_counts(operator)
    stuck = await crud.count_stuck_settlements(operator, crud.now() - 600)
    lamassu_status = lamassu.status_out(await lamassu.get_config(operator))
    return {
        "lamassu": lamassu_status,
        "scheduler_alive": task_manager.get_task("satmachineadmin_scheduler")
        is not None,
        "listener_alive": task_manager.get_task("ext_satmachineadmin_invoice_listener")
        is not None,
        "engine_alive": task_manager.get_task("satmachineadmin_engine") is not None,
        "sweep_alive": task_manager.get_task("satmachineadmin_sweep") is not None,
        "last_sweep_at": iso(bitspire.last_sweep_at)
        if bitspire.last_sweep_at
        else None,
        "settlements": counts,
        "errored": counts.get("errored", 0),
        "stuck": stuck,
        "machines": machine_rows,
    }


# ---------------------------------------------------------------- LP views


@satmachineadmin_api_router.get("/lp/summary")
async def api_lp_summary(user: str = Depends(operator_reader)) -> list[dict]:
    rows = []
    for client in await crud.list_user_clients(user):
        machine = await crud.get_machine(client.machine_id)
        if not machine:
            continue
        paid_fiat, paid_sats = await crud.completed_principal_totals(client.id)
        basis = cost_basis_fiat_per_btc(paid_sats, paid_fiat, machine.fiat_currency)
        rows.append(
            {
                "client_id": client.id,
                "machine_id": machine.id,
                "machine_name": machine.name,
                "currency": machine.fiat_currency,
                "status": client.status,
                "total_deposits": format_fiat(
                    client.deposits_minor, machine.fiat_currency
                ),
                "remaining_balance": format_fiat(
                    client.remaining_minor, machine.fiat_currency
                ),
                "total_converted": format_fiat(paid_fiat, machine.fiat_currency),
                "sats_received": paid_sats,
                "average_cost_basis_fiat_per_btc": (
                    format(basis, "f") if basis is not None else None
                ),
                "cycle_complete": client.cycle_complete,
            }
        )
    return rows


@satmachineadmin_api_router.get("/lp/payments", response_model=list[LegOut])
async def api_lp_payments(
    limit: int = Query(500, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=10_000_000),
    user: str = Depends(operator_reader),
) -> list[LegOut]:
    legs = await crud.list_legs(user_id=user, limit=limit, offset=offset)
    return [leg_out(leg) for leg in legs]


# ---------------------------------------------------------------- small balances


class SettleIn(_Request):
    funding_wallet_id: str = Field(..., min_length=1, max_length=64)
    exchange_rate: Optional[str] = None
    amount_fiat: Optional[str] = None

    _rate = validator("exchange_rate", pre=True, allow_reuse=True)(
        lambda value: None if value is None else fiat_text(value)
    )
    _fiat = validator("amount_fiat", pre=True, allow_reuse=True)(
        lambda value: None if value is None else fiat_text(value)
    )


@satmachineadmin_api_router.post(
    "/clients/{client_id}/settle", status_code=HTTPStatus.CREATED, response_model=LegOut
)
async def api_settle_client(
    client_id: str,
    data: SettleIn,
    idempotency_key: Optional[str] = Header(None, max_length=100),
    operator: str = Depends(operator_writer),
) -> LegOut:
    leg = await small_balances.settle_client(
        operator,
        client_id,
        data.funding_wallet_id,
        data.exchange_rate,
        data.amount_fiat,
        idempotency_key,
    )
    return leg_out(leg)


class AutoSettlementIn(_Request):
    enabled: StrictBool
    threshold_type: Optional[Literal["absolute", "percent"]] = None
    threshold_value: Optional[str] = None
    funding_wallet_id: Optional[str] = Field(None, max_length=64)

    _value = validator("threshold_value", pre=True, allow_reuse=True)(
        lambda value: None if value is None else fiat_text(value)
    )


@satmachineadmin_api_router.put(
    "/machines/{machine_id}/auto-settlement", response_model=MachineOut
)
async def api_auto_settlement(
    machine_id: str, data: AutoSettlementIn, operator: str = Depends(operator_writer)
) -> MachineOut:
    machine = await small_balances.configure_auto_settlement(
        operator,
        machine_id,
        data.enabled,
        data.threshold_type,
        data.threshold_value,
        data.funding_wallet_id,
    )
    return machine_out(machine)


# ---------------------------------------------------------------- fixed mode


class FixedScheduleIn(_Request):
    times: list[StrictStr] = Field(..., max_items=48)
    timezone: str = Field(..., min_length=1, max_length=64)


@satmachineadmin_api_router.put(
    "/machines/{machine_id}/fixed-schedule", response_model=MachineOut
)
async def api_fixed_schedule(
    machine_id: str, data: FixedScheduleIn, operator: str = Depends(operator_writer)
) -> MachineOut:
    machine = await services.operator_machine(operator, machine_id)
    times, zone = fixed_mode.validate_schedule(list(data.times), data.timezone)
    async with crud.transaction() as tx:
        await crud.save_fixed_schedule(tx, machine.id, json.dumps(times), zone)
        await crud.add_audit(
            tx,
            operator,
            operator,
            "machine.fixed_schedule",
            "machine",
            machine.id,
            {"times": times, "timezone": zone},
        )
    return machine_out(await services.operator_machine(operator, machine_id))


@satmachineadmin_api_router.post(
    "/machines/{machine_id}/fixed-run", response_model=list[LegOut]
)
async def api_fixed_run(
    machine_id: str, operator: str = Depends(operator_writer)
) -> list[LegOut]:
    machine = await services.operator_machine(operator, machine_id)
    if not json.loads(machine.fixed_times or "[]"):
        raise Conflict("this machine has no fixed-mode schedule (PUT fixed-schedule)")
    return [leg_out(leg) for leg in await fixed_mode.run_slot(machine)]


# ---------------------------------------------------------------- audit trail


class AuditOut(BaseModel):
    id: str
    actor_user_id: str
    action: str
    entity_type: str
    entity_id: str
    detail: Optional[dict]
    created_at: Optional[str]


@satmachineadmin_api_router.get("/audit", response_model=list[AuditOut])
async def api_audit_log(
    entity_id: Optional[str] = Query(None, max_length=64),
    limit: int = Query(200, ge=1, le=1000),
    operator: str = Depends(operator_reader),
) -> list[AuditOut]:
    entries = await crud.get_audit_log(operator, entity_id, limit)
    return [
        AuditOut(
            id=entry.id,
            actor_user_id=entry.actor_user_id,
            action=entry.action,
            entity_type=entry.entity_type,
            entity_id=entry.entity_id,
            detail=json.loads(entry.detail) if entry.detail else None,
            created_at=iso(entry.created_at),
        )
        for entry in entries
    ]
