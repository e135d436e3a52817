"""What LNbits loads: the database, the router, the static files, start and stop.

Layers, each importing only from those before it (tests/test_layers.py holds the
house to this): calculations, errors → models, inputs → crud → intake and engine/ →
distribution → bitspire and lamassu/ (the sources) → services/ → api/ → views_api,
views → tasks → this file.
"""

from fastapi import APIRouter

from .api.route import ExtensionRoute
from .crud import db
from .tasks import start_background_work, stop_background_work
from .views import satmachineadmin_generic_router
from .views_api import satmachineadmin_api_router

satmachineadmin_static_files = [
    {"path": "/satmachineadmin/static", "name": "satmachineadmin_static"}
]

satmachineadmin_ext: APIRouter = APIRouter(
    prefix="/satmachineadmin", tags=["satmachineadmin"], route_class=ExtensionRoute
)
satmachineadmin_ext.include_router(satmachineadmin_generic_router)
satmachineadmin_ext.include_router(satmachineadmin_api_router)


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
