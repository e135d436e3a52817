"""Lamassu connection of an operator (api.md): configure, test, poll now, status.

The password is write-only: no response carries it, GET says only whether one is set.
Writes and the connection test take an admin key; reads an invoice key too.
"""

from fastapi import APIRouter, Body, Depends

from . import lamassu
from .routing import ExtensionRoute
from .views_api import operator_reader, operator_writer

satmachineadmin_lamassu_router = APIRouter(prefix="/api/v1", route_class=ExtensionRoute)


@satmachineadmin_lamassu_router.put("/lamassu/config")
async def api_lamassu_put_config(
    data: lamassu.LamassuConfigIn, operator: str = Depends(operator_writer)
) -> dict:
    return lamassu.config_out(await lamassu.save_config(operator, data))


@satmachineadmin_lamassu_router.get("/lamassu/config")
async def api_lamassu_get_config(operator: str = Depends(operator_reader)) -> dict:
    return lamassu.config_out(await lamassu.require_config(operator))


@satmachineadmin_lamassu_router.post("/lamassu/test")
async def api_lamassu_test(
    data: lamassu.LamassuConfigIn | None = Body(None),
    operator: str = Depends(operator_writer),
) -> dict:
    """Test the stored settings, or the ones in the body (before saving them)."""
    return await lamassu.run_test(operator, data)


@satmachineadmin_lamassu_router.post("/lamassu/poll")
async def api_lamassu_poll(operator: str = Depends(operator_writer)) -> dict:
    result = await lamassu.poll_operator(operator)
    return lamassu.poll_out(result, await lamassu.get_config(operator))


@satmachineadmin_lamassu_router.get("/lamassu/status")
async def api_lamassu_status(operator: str = Depends(operator_reader)) -> dict:
    return lamassu.status_out(await lamassu.get_config(operator))
