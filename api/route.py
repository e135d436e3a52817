"""Error shape of every route of the extension.

docs/api.md promises `{"detail": "<reason a person can act on>"}` with status 400 for
malformed input. FastAPI's validation error is a list of dicts; this route class turns
it into one sentence naming each bad field, before LNbits' handlers see it.
"""

from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError

from ..errors import DomainError


def describe_validation_errors(errors: list[dict]) -> str:
    parts = []
    for error in errors:
        location = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        field = ".".join(location) or "body"
        message = error.get("msg", "is invalid")
        if error.get("type") == "value_error.missing":
            message = "is required"
        elif error.get("type") == "value_error.extra":
            message = "is not a known field"
        elif error.get("type") in ("value_error.jsondecode", "json_invalid"):
            field, message = "body", "is not valid JSON"
        parts.append(f"{field}: {message}")
    return "; ".join(parts) or "invalid request"


class ExtensionRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked_handler(request: Request) -> Response:
            # PostgreSQL refuses NUL in text: an id or filter holding one was a 500.
            texts = [v for v in request.path_params.values() if isinstance(v, str)]
            for key, value in request.query_params.multi_items():
                texts += [key, value]
            if any("\x00" in text for text in texts):
                raise HTTPException(
                    status_code=HTTPStatus.BAD_REQUEST,
                    detail="ids and query parameters must not contain NUL characters",
                )
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise HTTPException(
                    status_code=HTTPStatus.BAD_REQUEST,
                    detail=describe_validation_errors(list(exc.errors())),
                ) from None
            except DomainError as exc:
                raise HTTPException(status_code=exc.status, detail=exc.reason) from None
            except IntegrityError:
                # A unique key refused a write a concurrent request made first (two
                # enrolments of one LP, two machines on one wallet): that write's
                # transaction rolled back. Said neutrally: a service that committed
                # an earlier step keeps it, and the caller reloads to see what is.
                raise HTTPException(
                    status_code=HTTPStatus.CONFLICT,
                    detail="a concurrent request changed the same thing first: "
                    "reload to see what is saved, then try again if still needed",
                ) from None

        return checked_handler
