"""The companion's API (docs/companion.md): the LP's own data, nobody else's.

The caller is the LNbits user behind the key; LNbits has already checked they
enabled satmachineclient. Reads take an invoice key (or admin key) of any of their
wallets, the one write an admin key. Every call goes to satmachineadmin's
services/lp_view.py with that user id; errors are `{"detail": reason}`, as the
operator extension words them.
"""

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from lnbits.core.models import WalletTypeInfo
from lnbits.decorators import require_admin_key, require_invoice_key
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from .bridge import operator_module


def _describe(errors: list[dict]) -> str:
    route = operator_module("api.route")
    return route.describe_validation_errors(errors)


class CompanionRoute(APIRoute):
    """Domain refusals of the operator extension keep their status and reason;
    malformed input is a 400 naming each bad field; a write a concurrent one beat
    to a unique key is a 409 (as satmachineadmin's api/route.py words them)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException:
                raise  # LNbits' key and access checks, the bridge's 503: as they are
            except RequestValidationError as exc:
                raise HTTPException(
                    HTTPStatus.BAD_REQUEST, _describe(list(exc.errors()))
                ) from None
            except ValidationError as exc:
                raise HTTPException(
                    HTTPStatus.BAD_REQUEST, _describe([dict(e) for e in exc.errors()])
                ) from None
            except IntegrityError:
                # two first saves of one LP's preferences at once: one wins
                raise HTTPException(
                    HTTPStatus.CONFLICT,
                    "a concurrent request changed the same thing first: "
                    "reload to see what is saved, then try again if still needed",
                ) from None
            except Exception as exc:
                errors = operator_module("errors")
                if isinstance(exc, errors.DomainError):
                    raise HTTPException(exc.status, exc.reason) from None
                raise

        return checked_handler


satmachineclient_api_router = APIRouter(prefix="/api/v1", route_class=CompanionRoute)
route = satmachineclient_api_router


def lp_reader(key_info: WalletTypeInfo = Depends(require_invoice_key)) -> str:
    return key_info.wallet.user


def lp_writer(key_info: WalletTypeInfo = Depends(require_admin_key)) -> str:
    return key_info.wallet.user


def lp_view() -> Any:
    return operator_module("services.lp_view")


@route.get("/overview")
async def api_overview(user: str = Depends(lp_reader)) -> dict:
    """Preferences (null until set), one position per enrolment, and totals."""
    view = lp_view()
    prefs = await view.preferences(user)
    return {
        "preferences": prefs.dict() if prefs else None,
        "positions": await view.positions(user),
        "totals": await view.totals(user),
    }


@route.put("/preferences")
async def api_save_preferences(
    data: dict = Body(...), user: str = Depends(lp_writer)
) -> dict:
    view = lp_view()
    parsed = operator_module("models").SetLpPreferences.parse_obj(data)
    return (await view.save_preferences(user, parsed)).dict()


@route.get("/deposits")
async def api_deposits(user: str = Depends(lp_reader)) -> list[dict]:
    return await lp_view().deposits(user)


@route.get("/payouts")
async def api_payouts(
    limit: int = Query(500, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=10_000_000),
    user: str = Depends(lp_reader),
) -> list[dict]:
    return await lp_view().payouts(user, limit, offset)


@route.get("/history")
async def api_history(user: str = Depends(lp_reader)) -> list[dict]:
    return await lp_view().history(user)


@route.get("/statement.csv")
async def api_statement(user: str = Depends(lp_reader)) -> StreamingResponse:
    return StreamingResponse(
        lp_view().statement_csv(user),
        media_type="text/csv",
        headers={
            "Content-Disposition": 'attachment; filename="satmachine-statement.csv"'
        },
    )
