from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from lnbits.core.models import User
from lnbits.decorators import check_user_exists
from lnbits.helpers import template_renderer

satmachineclient_generic_router = APIRouter()


@satmachineclient_generic_router.get("/", response_class=HTMLResponse)
async def index(request: Request, user: User = Depends(check_user_exists)):
    # check_user_exists also applies LNbits' extension access rules to this path:
    # the user must have enabled satmachineclient (satmachineadmin need not be).
    return template_renderer(["satmachineclient/templates"]).TemplateResponse(
        "satmachineclient/index.html", {"request": request, "user": user.json()}
    )
