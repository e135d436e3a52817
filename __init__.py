import asyncio

from fastapi import APIRouter
from lnbits.db import Database

from .routing import ExtensionRoute

db = Database("ext_satmachineadmin")

satmachineadmin_static_files = [
    {"path": "/satmachineadmin/static", "name": "satmachineadmin_static"}
]

satmachineadmin_ext: APIRouter = APIRouter(
    prefix="/satmachineadmin", tags=["satmachineadmin"], route_class=ExtensionRoute
)

from .tasks import start_background_work, stop_background_work  # noqa: E402
from .views import satmachineadmin_generic_router  # noqa: E402
from .views_api import satmachineadmin_api_router  # noqa: E402
from .views_api_lamassu import satmachineadmin_lamassu_router  # noqa: E402

satmachineadmin_ext.include_router(satmachineadmin_generic_router)
satmachineadmin_ext.include_router(satmachineadmin_api_router)
satmachineadmin_ext.include_router(satmachineadmin_lamassu_router)

scheduled_tasks: list[asyncio.Task] = []


def satmachineadmin_start() -> None:
    start_background_work()


def satmachineadmin_stop() -> None:
    stop_background_work()


__all__ = [
    "db",
    "satmachineadmin_ext",
    "satmachineadmin_start",
    "satmachineadmin_static_files",
    "satmachineadmin_stop",
]
