"""Domain refusals, each with the HTTP status docs/api.md gives it.

Services raise these with a reason a person can act on; the extension's route class
turns them into `{"detail": reason}` with the status below.
"""

from http import HTTPStatus


class DomainError(Exception):
    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadInput(DomainError):
    status = HTTPStatus.BAD_REQUEST


class Forbidden(DomainError):
    status = HTTPStatus.FORBIDDEN


class NotFound(DomainError):
    status = HTTPStatus.NOT_FOUND


class Conflict(DomainError):
    status = HTTPStatus.CONFLICT


class Refused(DomainError):
    """A rule of the domain refuses it (422)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
