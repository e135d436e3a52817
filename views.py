from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from lnbits.core.models import User
from lnbits.decorators import check_user_exists
from lnbits.helpers import template_renderer
from lnbits.settings import settings

from .api.route import ExtensionRoute

satmachineadmin_generic_router = APIRouter(route_class=ExtensionRoute)


def satmachineadmin_renderer():
    return template_renderer(["satmachineadmin/templates"])


@satmachineadmin_generic_router.get("/", response_class=HTMLResponse)
async def index(request: Request, user: User = Depends(check_user_exists)):
    return satmachineadmin_renderer().TemplateResponse(
        "satmachineadmin/index.html",
        {
            "request": request,
            "user": user.json(),
            "is_super_user": user.id == settings.super_user,
        },
    )
