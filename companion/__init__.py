"""satmachineclient: the liquidity provider's side of satmachineadmin.

An LP enables only this extension and sees their DCA across every machine and
operator that enrolled them. It keeps no data: bridge.py reaches satmachineadmin's
services in this process (docs/companion.md says why not over HTTP).
"""

from fastapi import APIRouter
from lnbits.db import Database

from .views import satmachineclient_generic_router
from .views_api import satmachineclient_api_router

# LNbits migrates every extension's `db`; this one never holds a table.
db = Database("ext_satmachineclient")

satmachineclient_static_files = [
    {"path": "/satmachineclient/static", "name": "satmachineclient_static"}
]

satmachineclient_ext: APIRouter = APIRouter(
    prefix="/satmachineclient", tags=["satmachineclient"]
)
satmachineclient_ext.include_router(satmachineclient_generic_router)
satmachineclient_ext.include_router(satmachineclient_api_router)

__all__ = ["db", "satmachineclient_ext", "satmachineclient_static_files"]
