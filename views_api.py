"""REST API (docs/api.md): validate, authorize, call a service, shape the answer.

Each route names who may call it by its dependency (api/auth.py); the services re-check
ownership against the database. Errors are DomainErrors raised below and worded by
the route class (api/route.py) as `{"detail": reason}` with their status.
"""

from collections.abc import AsyncIterator
from datetime import datetime
from http import HTTPStatus
from typing import Literal, Optional

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse

from . import crud
from .api.auth import (
    lp_reader,
    lp_writer,
    operator_reader,
    operator_writer,
    super_user,
)
from .api.lamassu import satmachineadmin_lamassu_router
from .api.route import ExtensionRoute
from .errors import NotFound
from .models import (
    AlertOut,
    AuditOut,
    AutoSettlementIn,
    BalanceOut,
    ClientOut,
    CreateClient,
    CreateDeposit,
    CreateMachine,
    DepositOut,
    FixedScheduleIn,
    LegFilters,
    LegOut,
    LegStatus,
    LegType,
    LpAlertSettingsIn,
    LpPreferencesOut,
    MachineOut,
    ManualSettlementIn,
    NoteIn,
    OperatorAlertSettingsIn,
    PartialDispenseIn,
    RejectIn,
    SetLpPreferences,
    SettleIn,
    SettlementOut,
    SettlementStatus,
    SplitsIn,
    SplitsOut,
    SuperConfigIn,
    SuperConfigOut,
    TxType,
    UpdateClient,
    UpdateMachine,
    VoidIn,
    audit_out,
    balance_out,
    client_out,
    deposit_out,
    epoch,
    iso,
    leg_out,
    lp_preferences_out,
    machine_out,
    settlement_out,
    splits_out,
)
from .services import (
    accounts,
    alerts,
    commission,
    corrections,
    manual,
    platform,
    reports,
    settle,
    statement,
    void,
)
from .services.access import operator_client, operator_machine, operator_settlement


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
    # Every parameter is a filter of the same name; the two times go in as epochs.
    given = dict(locals())
    return LegFilters(**{**given, "since": epoch(since), "until": epoch(until)})


satmachineadmin_api_router = APIRouter(prefix="/api/v1", route_class=ExtensionRoute)
route = satmachineadmin_api_router


# ---------------------------------------------------------------- machines


@route.post("/machines", status_code=HTTPStatus.CREATED, response_model=MachineOut)
async def api_create_machine(
    data: CreateMachine, operator: str = Depends(operator_writer)
) -> MachineOut:
    return machine_out(await accounts.create_machine(operator, data))


@route.get("/machines", response_model=list[MachineOut])
async def api_list_machines(
    operator: str = Depends(operator_reader),
) -> list[MachineOut]:
    return [machine_out(m) for m in await crud.list_machines(operator)]


@route.get("/machines/{machine_id}", response_model=MachineOut)
async def api_get_machine(
    machine_id: str, operator: str = Depends(operator_reader)
) -> MachineOut:
    return machine_out(await operator_machine(operator, machine_id))


@route.put("/machines/{machine_id}", response_model=MachineOut)
async def api_update_machine(
    machine_id: str, data: UpdateMachine, operator: str = Depends(operator_writer)
) -> MachineOut:
    return machine_out(await accounts.update_machine(operator, machine_id, data))


# ---------------------------------------------------------------- clients


async def _client_out(client_id: str, operator: str) -> ClientOut:
    row = await crud.get_client_with_prefs(client_id)
    if not row or (await operator_client(operator, client_id)) is None:
        raise NotFound(f"client {client_id} not found")
    return client_out(row)


@route.post("/clients", status_code=HTTPStatus.CREATED, response_model=ClientOut)
async def api_create_client(
    data: CreateClient, operator: str = Depends(operator_writer)
) -> ClientOut:
    client = await accounts.enrol_client(operator, data)
    return await _client_out(client.id, operator)


@route.get("/clients", response_model=list[ClientOut])
async def api_list_clients(
    machine_id: Optional[str] = Query(None, max_length=64),
    operator: str = Depends(operator_reader),
) -> list[ClientOut]:
    if machine_id:
        await operator_machine(operator, machine_id)
    rows = await crud.list_operator_clients_with_prefs(operator, machine_id)
    return [client_out(row) for row in rows]


@route.get("/clients/{client_id}", response_model=ClientOut)
async def api_get_client(
    client_id: str, operator: str = Depends(operator_reader)
) -> ClientOut:
    return await _client_out(client_id, operator)


@route.put("/clients/{client_id}", response_model=ClientOut)
async def api_update_client(
    client_id: str, data: UpdateClient, operator: str = Depends(operator_writer)
) -> ClientOut:
    await accounts.update_client(operator, client_id, data)
    return await _client_out(client_id, operator)


@route.get("/clients/{client_id}/balance", response_model=BalanceOut)
async def api_client_balance(
    client_id: str, operator: str = Depends(operator_reader)
) -> BalanceOut:
    client = await operator_client(operator, client_id)
    machine = await operator_machine(operator, client.machine_id)
    return balance_out(client, machine.fiat_currency)


@route.post(
    "/clients/{client_id}/settle", status_code=HTTPStatus.CREATED, response_model=LegOut
)
async def api_settle_client(
    client_id: str,
    data: SettleIn,
    idempotency_key: Optional[str] = Header(None, max_length=100),
    operator: str = Depends(operator_writer),
) -> LegOut:
    leg = await settle.settle_client(operator, client_id, data, idempotency_key)
    return leg_out(leg)


# ---------------------------------------------------------------- deposits


@route.post("/deposits", status_code=HTTPStatus.CREATED, response_model=DepositOut)
async def api_create_deposit(
    data: CreateDeposit, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await accounts.create_deposit(operator, data))


@route.post("/deposits/{deposit_id}/confirm", response_model=DepositOut)
async def api_confirm_deposit(
    deposit_id: str, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await accounts.confirm_deposit(operator, deposit_id))


@route.post("/deposits/{deposit_id}/cancel", response_model=DepositOut)
async def api_cancel_deposit(
    deposit_id: str, operator: str = Depends(operator_writer)
) -> DepositOut:
    return deposit_out(await accounts.cancel_deposit(operator, deposit_id))


@route.get("/deposits", response_model=list[DepositOut])
async def api_list_deposits(
    client_id: Optional[str] = Query(None, max_length=64),
    operator: str = Depends(operator_reader),
) -> list[DepositOut]:
    if client_id:
        await operator_client(operator, client_id)
    return [deposit_out(d) for d in await crud.list_deposits(operator, client_id)]


# ---------------------------------------------------------------- machine settings


@route.put("/machines/{machine_id}/auto-settlement", response_model=MachineOut)
async def api_auto_settlement(
    machine_id: str, data: AutoSettlementIn, operator: str = Depends(operator_writer)
) -> MachineOut:
    machine = await settle.configure_auto_settlement(operator, machine_id, data)
    return machine_out(machine)


@route.put("/machines/{machine_id}/fixed-schedule", response_model=MachineOut)
async def api_fixed_schedule(
    machine_id: str, data: FixedScheduleIn, operator: str = Depends(operator_writer)
) -> MachineOut:
    machine = await settle.set_fixed_schedule(
        operator, machine_id, list(data.times), data.timezone
    )
    return machine_out(machine)


@route.post("/machines/{machine_id}/fixed-run", response_model=list[LegOut])
async def api_fixed_run(
    machine_id: str, operator: str = Depends(operator_writer)
) -> list[LegOut]:
    return [leg_out(leg) for leg in await settle.run_fixed_slot(operator, machine_id)]


# ---------------------------------------------------------------- commission


@route.put("/commission/splits", response_model=SplitsOut)
async def api_set_splits(
    data: SplitsIn, operator: str = Depends(operator_writer)
) -> SplitsOut:
    rules = await commission.set_commission_rules(
        operator, data.machine_id, [leg.dict() for leg in data.legs]
    )
    return splits_out(data.machine_id, False, rules)


@route.get("/commission/splits", response_model=SplitsOut)
async def api_get_splits(
    machine_id: Optional[str] = Query(None, max_length=64),
    operator: str = Depends(operator_reader),
) -> SplitsOut:
    if machine_id:
        await operator_machine(operator, machine_id)
    rules = await crud.list_commission_rules(operator, machine_id)
    inherited = False
    if machine_id and not rules:
        rules = await crud.list_commission_rules(operator, None)
        inherited = True
    return splits_out(machine_id, inherited, rules)


# ---------------------------------------------------------------- settlements


@route.get("/settlements", response_model=list[SettlementOut])
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
        await operator_machine(operator, machine_id)
    rows, total = await crud.list_settlements(
        operator,
        machine_id=machine_id,
        status=status,
        tx_type=tx_type,
        since=epoch(since),
        until=epoch(until),
        limit=limit,
        offset=offset,
    )
    response.headers["X-Total-Count"] = str(total)
    return [settlement_out(row) for row in rows]


@route.post(
    "/settlements", status_code=HTTPStatus.CREATED, response_model=SettlementOut
)
async def api_manual_settlement(
    data: ManualSettlementIn, operator: str = Depends(operator_writer)
) -> SettlementOut:
    settlement = await manual.enter_settlement(operator, data)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@route.get("/settlements/{settlement_id}", response_model=SettlementOut)
async def api_get_settlement(
    settlement_id: str, operator: str = Depends(operator_reader)
) -> SettlementOut:
    settlement = await operator_settlement(operator, settlement_id)
    return settlement_out(
        settlement,
        await crud.list_notes(settlement.id),
        await crud.list_settlement_legs(settlement.id),
        with_payload=True,
    )


@route.post("/settlements/{settlement_id}/retry", response_model=SettlementOut)
async def api_retry_settlement(
    settlement_id: str, operator: str = Depends(operator_writer)
) -> SettlementOut:
    settlement = await corrections.retry(operator, settlement_id)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@route.post(
    "/settlements/{settlement_id}/partial-dispense", response_model=SettlementOut
)
async def api_partial_dispense(
    settlement_id: str,
    data: PartialDispenseIn,
    operator: str = Depends(operator_writer),
) -> SettlementOut:
    settlement = await corrections.partial_dispense(operator, settlement_id, data)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@route.post("/settlements/{settlement_id}/approve", response_model=SettlementOut)
async def api_approve_settlement(
    settlement_id: str, operator: str = Depends(operator_writer)
) -> SettlementOut:
    settlement = await corrections.approve_held(operator, settlement_id)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@route.post("/settlements/{settlement_id}/reject", response_model=SettlementOut)
async def api_reject_settlement(
    settlement_id: str, data: RejectIn, operator: str = Depends(operator_writer)
) -> SettlementOut:
    settlement = await corrections.reject_held(operator, settlement_id, data.reason)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


@route.post("/settlements/{settlement_id}/void", response_model=SettlementOut)
async def api_void_settlement(
    settlement_id: str, data: VoidIn, operator: str = Depends(operator_writer)
) -> SettlementOut:
    settlement = await void.void_settlement(operator, settlement_id, data.reason)
    return settlement_out(
        settlement,
        await crud.list_notes(settlement.id),
        await crud.list_settlement_legs(settlement.id),
    )


@route.post(
    "/settlements/{settlement_id}/notes",
    status_code=HTTPStatus.CREATED,
    response_model=SettlementOut,
)
async def api_add_note(
    settlement_id: str, data: NoteIn, operator: str = Depends(operator_writer)
) -> SettlementOut:
    await corrections.add_operator_note(operator, settlement_id, data.note)
    settlement = await operator_settlement(operator, settlement_id)
    return settlement_out(settlement, await crud.list_notes(settlement.id))


# ---------------------------------------------------------------- legs
# A leg is one payment (or one recorded non-payment) of a settlement, a fixed-mode
# slot or a balance settlement. /payments and /payments.csv are the names docs/api.md
# first gave these routes; scripts use them, so they stay as aliases.


@route.get("/legs", response_model=list[LegOut])
@route.get("/payments", response_model=list[LegOut])
async def api_list_legs(
    response: Response,
    filters: LegFilters = Depends(leg_filters),
    operator: str = Depends(operator_reader),
) -> list[LegOut]:
    legs = await crud.list_legs(operator_user_id=operator, **filters.dict())
    counted = filters.dict(exclude={"limit", "offset"})
    response.headers["X-Total-Count"] = str(
        await crud.count_legs(operator_user_id=operator, **counted)
    )
    estimated = await crud.estimated_settlement_ids(
        [leg.settlement_id or "" for leg in legs]
    )
    return [
        leg_out(leg).copy(update={"estimated": leg.settlement_id in estimated})
        for leg in legs
    ]


@route.get("/legs.csv")
@route.get("/payments.csv")
async def api_legs_csv(
    filters: LegFilters = Depends(leg_filters), operator: str = Depends(operator_reader)
) -> StreamingResponse:
    """Every matching leg: `limit` and `offset` do not apply to an export."""
    wanted = filters.dict(exclude={"limit", "offset"})
    return _csv_download(
        reports.legs_csv_stream(operator, wanted), "satmachine-payments.csv"
    )


@route.get("/settlements.csv")
async def api_settlements_csv(
    machine_id: Optional[str] = Query(None, max_length=64),
    status: Optional[SettlementStatus] = None,
    tx_type: Optional[TxType] = None,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    operator: str = Depends(operator_reader),
) -> StreamingResponse:
    if machine_id:
        await operator_machine(operator, machine_id)
    wanted = {
        "machine_id": machine_id,
        "status": status,
        "tx_type": tx_type,
        "since": epoch(since),
        "until": epoch(until),
    }
    return _csv_download(
        reports.settlements_csv_stream(operator, wanted), "satmachine-settlements.csv"
    )


def _csv_download(chunks: AsyncIterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# ---------------------------------------------------------------- health, audit


@route.get("/health")
async def api_health(operator: str = Depends(operator_reader)) -> dict:
    health = await reports.health(operator)
    # Alert delivery: the operator's channels and any message failing to go out.
    health["alerts"] = await alerts.delivery_health(operator)
    return health


@route.get("/reports")
async def api_reports(
    period: Literal["day", "week", "month"] = "month",
    machine_id: Optional[str] = Query(None, max_length=64),
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    operator: str = Depends(operator_reader),
) -> list[dict]:
    if machine_id:
        await operator_machine(operator, machine_id)
    return await reports.periods(
        operator, period, machine_id, epoch(since), epoch(until)
    )


@route.get("/audit", response_model=list[AuditOut])
async def api_audit_log(
    entity_id: Optional[str] = Query(None, max_length=64),
    limit: int = Query(200, ge=1, le=1000),
    operator: str = Depends(operator_reader),
) -> list[AuditOut]:
    entries = await crud.get_audit_log(operator, entity_id, limit)
    return [audit_out(entry) for entry in entries]


# ---------------------------------------------------------------- alerts


@route.get("/alerts", response_model=list[AlertOut])
async def api_alerts(
    limit: int = Query(100, ge=1, le=1000),
    operator: str = Depends(operator_reader),
) -> list[AlertOut]:
    return await alerts.history(operator, "operator", limit)


@route.get("/alerts/settings")
async def api_alert_settings(operator: str = Depends(operator_reader)) -> dict:
    return alerts.settings_out(await alerts.operator_settings(operator))


@route.put("/alerts/settings")
async def api_set_alert_settings(
    data: OperatorAlertSettingsIn, operator: str = Depends(operator_writer)
) -> dict:
    return alerts.settings_out(await alerts.save_operator_settings(operator, data))


@route.get("/lp/alerts", response_model=list[AlertOut])
async def api_lp_alerts(
    limit: int = Query(100, ge=1, le=1000), user: str = Depends(lp_reader)
) -> list[AlertOut]:
    return await alerts.history(user, "lp", limit)


@route.get("/lp/alerts/settings")
async def api_lp_alert_settings(user: str = Depends(lp_reader)) -> dict:
    return await alerts.lp_settings(user)


@route.put("/lp/alerts/settings")
async def api_set_lp_alert_settings(
    data: LpAlertSettingsIn, user: str = Depends(lp_writer)
) -> dict:
    return await alerts.save_lp_settings(user, data)


# ---------------------------------------------------------------- the LP's own


@route.put("/lp", response_model=LpPreferencesOut)
async def api_set_lp_preferences(
    data: SetLpPreferences, user: str = Depends(lp_writer)
) -> LpPreferencesOut:
    return lp_preferences_out(await accounts.set_lp_preferences(user, data))


@route.get("/lp", response_model=LpPreferencesOut)
async def api_get_lp_preferences(user: str = Depends(lp_reader)) -> LpPreferencesOut:
    prefs = await crud.get_lp_preferences(user)
    if not prefs:
        raise NotFound("you have not set your LP preferences yet (PUT /lp)")
    return lp_preferences_out(prefs)


@route.get("/lp/summary")
async def api_lp_summary(user: str = Depends(lp_reader)) -> list[dict]:
    return await reports.lp_summary(user)


@route.get("/lp/legs", response_model=list[LegOut])
@route.get("/lp/payments", response_model=list[LegOut])
async def api_lp_legs(
    limit: int = Query(500, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=10_000_000),
    user: str = Depends(lp_reader),
) -> list[LegOut]:
    legs = await crud.list_legs(user_id=user, limit=limit, offset=offset)
    return [leg_out(leg) for leg in legs]


@route.get("/lp/deposits", response_model=list[DepositOut])
async def api_lp_deposits(user: str = Depends(lp_reader)) -> list[DepositOut]:
    return [deposit_out(d) for d in await crud.list_user_deposits(user)]


@route.get("/lp/statement")
async def api_lp_statement(
    period: Literal["day", "week", "month"] = "month",
    user: str = Depends(lp_reader),
) -> dict:
    return await statement.statement(user, period)


@route.get("/lp/statement.csv")
async def api_lp_statement_csv(
    period: Literal["day", "week", "month"] = "month",
    user: str = Depends(lp_reader),
) -> Response:
    text = statement.statement_csv(await statement.statement(user, period))
    return Response(
        text,
        media_type="text/csv",
        headers={
            "Content-Disposition": (
                f'attachment; filename="satmachine-statement-{period}.csv"'
            )
        },
    )


# ---------------------------------------------------------------- super user


@route.get("/super/overview")
async def api_super_overview(
    period: Literal["day", "week", "month"] = "month",
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    user: str = Depends(super_user),
) -> dict:
    return await reports.platform_overview(period, epoch(since), epoch(until))


@route.get("/super/config", response_model=SuperConfigOut)
async def api_get_super_config(user: str = Depends(super_user)) -> SuperConfigOut:
    config = await crud.get_platform_config()
    return SuperConfigOut(
        super_fee_fraction=config.super_fee_fraction,
        fee_wallet_id=config.fee_wallet_id,
        updated_at=iso(config.updated_at) if config.updated_at else None,
    )


@route.put("/super/config", response_model=SuperConfigOut)
async def api_set_super_config(
    data: SuperConfigIn, user: str = Depends(super_user)
) -> SuperConfigOut:
    fraction = platform.parse_fraction(data.super_fee_fraction)
    config = await platform.set_platform_config(user, fraction, data.fee_wallet_id)
    return SuperConfigOut(
        super_fee_fraction=config.super_fee_fraction,
        fee_wallet_id=config.fee_wallet_id,
        updated_at=iso(config.updated_at),
    )


satmachineadmin_api_router.include_router(satmachineadmin_lamassu_router)
