"""Lamassu connection of an operator (docs/api.md): configure, test, poll now, status.

The password is write-only: no response carries it, GET says only whether one is set.
Writes and the connection test take an admin key; reads an invoice key too.
"""

from fastapi import APIRouter, Body, Depends

from ..lamassu import config as lamassu_config
from ..lamassu import poller
from ..lamassu.config import LamassuConfigIn
from .auth import operator_reader, operator_writer
from .route import ExtensionRoute

satmachineadmin_lamassu_router = APIRouter(route_class=ExtensionRoute)


@satmachineadmin_lamassu_router.put("/lamassu/config")
async def api_lamassu_put_config(
    data: LamassuConfigIn, operator: str = Depends(operator_writer)
) -> dict:
    return lamassu_config.config_out(await lamassu_config.save_config(operator, data))


@satmachineadmin_lamassu_router.get("/lamassu/config")
async def api_lamassu_get_config(operator: str = Depends(operator_reader)) -> dict:
    return lamassu_config.config_out(await lamassu_config.require_config(operator))


@satmachineadmin_lamassu_router.post("/lamassu/test")
async def api_lamassu_test(
    data: LamassuConfigIn | None = Body(None),
    operator: str = Depends(operator_writer),
) -> dict:
    """Test the stored settings, or the ones in the body (before saving them)."""
    return await lamassu_config.run_test(operator, data)


@satmachineadmin_lamassu_router.post("/lamassu/poll")
async def api_lamassu_poll(operator: str = Depends(operator_writer)) -> dict:
    result = await poller.poll_operator(operator)
    return poller.poll_out(result, await lamassu_config.get_config(operator))


@satmachineadmin_lamassu_router.get("/lamassu/status")
async def api_lamassu_status(operator: str = Depends(operator_reader)) -> dict:
    return lamassu_config.status_out(await lamassu_config.get_config(operator))
