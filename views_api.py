"""REST API (spec/api.md): validate, authorize, call a service, shape the answer.

Who is calling is always the LNbits user behind the key: an operator's endpoints take
the admin key of any wallet they own (reads also an invoice key), the LP's the same for
their wallets, the super user's only a wallet of the LNbits super user.
"""

from http import HTTPStatus
from typing import Optional

from fastapi import APIRouter, Depends, Query
from lnbits.core.models import WalletTypeInfo
from lnbits.decorators import require_admin_key, require_invoice_key
from lnbits.settings import settings
from pydantic import BaseModel, Field

from . import crud, services
from .errors import Forbidden, NotFound
from .models import (
    BalanceOut,
    ClientOut,
    CreateClient,
    CreateDeposit,
    CreateMachine,
    DepositOut,
    LpPreferencesOut,
    MachineOut,
    SetLpPreferences,
    UpdateClient,
    UpdateMachine,
    _Request,
    balance_out,
    deposit_out,
    iso,
    lp_preferences_out,
    machine_out,
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
async def api_list_machines(operator: str = Depends(operator_reader)) -> list[MachineOut]:
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
async def api_get_lp_preferences(user: str = Depends(operator_reader)) -> LpPreferencesOut:
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


@satmachineadmin_api_router.get("/clients/{client_id}/balance", response_model=BalanceOut)
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


@satmachineadmin_api_router.post("/deposits/{deposit_id}/confirm", response_model=DepositOut)
async def api_confirm_deposit(
    deposit_id: str, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await services.confirm_deposit(operator, deposit_id))


@satmachineadmin_api_router.post("/deposits/{deposit_id}/cancel", response_model=DepositOut)
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

    from pydantic import validator as _validator

    @_validator("super_fee_fraction", pre=True)
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

    from pydantic import validator as _validator

    @_validator("percent", pre=True)
    def _percent_text(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError("must be a decimal percent such as \"50\"")
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
            SplitLegOut(target=r.target, target_kind=r.target_kind, percent=r.percent, label=r.label)
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
            SplitLegOut(target=r.target, target_kind=r.target_kind, percent=r.percent, label=r.label)
            for r in rules
        ],
    )
