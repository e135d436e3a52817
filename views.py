import time
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from lnbits.core.models import User
from lnbits.decorators import check_user_exists
from lnbits.helpers import template_renderer
from lnbits.settings import settings

from .api.route import ExtensionRoute
from .models import iso
from .services import statement

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


@satmachineadmin_generic_router.get("/statement", response_class=HTMLResponse)
async def lp_statement_page(
    request: Request,
    period: Literal["day", "week", "month"] = "month",
    user: User = Depends(check_user_exists),
):
    """The LP's statement as a page to print or save as PDF: only the logged-in
    user's own deposits and payouts (services/statement.py)."""
    return satmachineadmin_renderer().TemplateResponse(
        "satmachineadmin/statement.html",
        {
            "request": request,
            "statement": await statement.statement(user.id, period),
            "username": user.username or user.id,
            "printed_at": iso(int(time.time())),
        },
    )
