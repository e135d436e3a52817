"""An operator's Lamassu configuration: validated, stored (password encrypted,
write-only), tested, and shown with its poll status (docs/api.md, "Lamassu")."""

import json
import math
import re
from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel

from .. import crud
from ..errors import BadInput, NotFound, Refused
from ..models import iso
from .connection import (
    SSL_MODES,
    DecryptError,
    Target,
    decrypt_password,
    describe_failure,
    encrypt_password,
    forget_connection,
    test_connection,
)


class LamassuConfig(BaseModel):
    """One row of satmachineadmin.lamassu_config: settings plus poll status."""

    operator_user_id: str
    host: str
    port: int = 5432
    database_name: str
    username: str
    password_encrypted: str | None = None
    sslmode: str = "prefer"
    poll_interval_seconds: int = 60
    lookback_hours: int = 72
    enabled: bool = True
    last_poll_at: int | None = None
    last_success_at: int | None = None
    last_error: str | None = None
    last_found: int = 0
    last_new: int = 0
    unknown_devices: str = "{}"
    newest_created_seen: int | None = None
    consecutive_failures: int = 0
    next_poll_at: int = 0
    # Every successful transaction created before this moment has been landed: the
    # next poll reads from here (less a margin), however long Lamassu was away.
    cursor_at: int | None = None
    # Where the very first poll starts (the operator's choice); None: the lookback.
    start_at: int | None = None
    created_at: int
    updated_at: int


class LamassuConfigIn(BaseModel):
    """PUT /lamassu/config and the optional body of POST /lamassu/test.

    Types are loose on purpose: `validate_settings` checks every field and answers
    with a sentence per problem. `password` is write-only; left out (or null) it keeps
    the stored one while host, port, database and username stay the same, "" removes
    it. `start_at` (ISO 8601) left out keeps the stored one, null removes it.
    """

    host: Any = None
    port: Any = 5432
    database: Any = None
    username: Any = None
    password: Any = None
    sslmode: Any = "prefer"
    poll_interval_seconds: Any = 60
    lookback_hours: Any = 72
    enabled: Any = True
    start_at: Any = None

    class Config:
        extra = "forbid"


def _text(value: Any, name: str, max_length: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{name}: required, a non-empty text")
    value = value.strip()
    if len(value) > max_length:
        raise BadInput(f"{name}: at most {max_length} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise BadInput(f"{name}: may not contain spaces or control characters")
    return value


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise BadInput(f"{name}: must be a whole number")
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise BadInput(f"{name}: must be a whole number")
    if not low <= value <= high:
        raise BadInput(f"{name}: must be between {low} and {high}, got {value}")
    return value


# Nothing a Lamassu server holds is older than this (2014-01-01T00:00:00Z).
EARLIEST_START_AT = 1_388_534_400
START_AT_FORMAT = (
    "start_at: an ISO 8601 date or date-time, e.g. 2025-06-01 or "
    "2025-06-01T08:00:00+00:00 (a date is midnight UTC, a time without an offset is "
    "UTC), or null"
)


def parse_start_at(value: Any) -> int | None:
    """The operator's start date as epoch seconds (rounded up), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value.strip()) <= 64:
        raise BadInput(START_AT_FORMAT)
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(START_AT_FORMAT) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    stamp = moment.timestamp()
    if stamp < EARLIEST_START_AT:
        raise BadInput("start_at: may not be before 2014-01-01")
    if stamp > crud.now():
        raise BadInput("start_at: may not be in the future")
    return math.ceil(stamp)


def validate_settings(data: "LamassuConfigIn") -> dict[str, Any]:
    """The connection and schedule columns of a configuration, each checked
    (`start_at` only when the request has it)."""
    sslmode = data.sslmode
    if sslmode not in SSL_MODES:
        raise BadInput(f"sslmode: must be one of {', '.join(SSL_MODES)}")
    if not isinstance(data.enabled, bool):
        raise BadInput("enabled: must be true or false")
    if data.password is not None and (
        not isinstance(data.password, str) or len(data.password) > 1024
    ):
        raise BadInput("password: must be a text of at most 1024 characters")
    settings = {
        "host": _text(data.host, "host", 255),
        "port": _integer(data.port, "port", 1, 65535),
        "database_name": _text(data.database, "database", 63),
        "username": _text(data.username, "username", 63),
        "sslmode": sslmode,
        "poll_interval_seconds": _integer(
            data.poll_interval_seconds, "poll_interval_seconds", 10, 86400
        ),
        "lookback_hours": _integer(data.lookback_hours, "lookback_hours", 1, 720),
        "enabled": data.enabled,
    }
    if "start_at" in data.__fields_set__:
        settings["start_at"] = parse_start_at(data.start_at)
    return settings


# ---------------------------------------------------------------- service


async def get_config(operator_user_id: str) -> LamassuConfig | None:
    row = await crud.get_lamassu_config_row(operator_user_id)
    return LamassuConfig.parse_obj(dict(row)) if row else None


async def require_config(operator_user_id: str) -> LamassuConfig:
    config = await get_config(operator_user_id)
    if config is None:
        raise NotFound("Lamassu is not configured: PUT /lamassu/config first")
    return config


async def save_config(operator_user_id: str, data: LamassuConfigIn) -> LamassuConfig:
    settings = validate_settings(data)
    existing = await get_config(operator_user_id)
    moment = crud.now()
    if data.password is None:
        encrypted = _reusable_password(existing, settings)
    else:
        encrypted = encrypt_password(data.password)
    base = existing.dict() if existing else {}
    # A new start date restarts reading from it; left out, the stored one stays.
    start_at = settings.pop("start_at", base.get("start_at"))
    start_changed = start_at != base.get("start_at")
    reset_cursor = start_changed and start_at is not None
    config = LamassuConfig(
        **{
            **base,
            "operator_user_id": operator_user_id,
            **settings,
            "start_at": start_at,
            "cursor_at": None if reset_cursor else base.get("cursor_at"),
            "password_encrypted": encrypted,
            # New settings are tried at once, without the old backoff.
            "consecutive_failures": 0,
            "next_poll_at": 0,
            "created_at": existing.created_at if existing else moment,
            "updated_at": moment,
        }
    )
    audit = {
        "host": settings["host"],
        "port": settings["port"],
        "database": settings["database_name"],
        "username": settings["username"],
        "sslmode": settings["sslmode"],
        "poll_interval_seconds": settings["poll_interval_seconds"],
        "lookback_hours": settings["lookback_hours"],
        "enabled": settings["enabled"],
        "start_at": iso(start_at),
        "cursor_reset": reset_cursor,
        "password_changed": data.password is not None,
    }
    await forget_connection(operator_user_id)
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "lamassu.config",
        "lamassu_config",
        operator_user_id,
        audit,
    ) as tx:
        await crud.upsert_lamassu_config(tx, config.dict(), insert=existing is None)
        if start_changed:
            await crud.set_lamassu_start_at(
                tx, operator_user_id, start_at, reset_cursor=reset_cursor
            )
    return config


TARGET_FIELDS = (
    ("host", "host"),
    ("port", "port"),
    ("database_name", "database"),
    ("username", "username"),
)


def _reusable_password(
    existing: LamassuConfig | None, settings: dict[str, Any]
) -> str | None:
    """The stored (encrypted) password, for settings that gave none.

    It was entered for one server, database and role: it is reused only while host,
    port, database and username are all unchanged and sslmode is not weakened, never
    sent anywhere else (a server there could ask for it in clear text). Nothing
    stored: nothing to reuse.
    """
    if existing is None or not existing.password_encrypted:
        return None
    changed = [
        name
        for column, name in TARGET_FIELDS
        if getattr(existing, column) != settings[column]
    ]
    # SSL_MODES runs from the weakest to the strongest: a weaker mode on the same
    # server could let someone on the path ask for the password in clear text.
    if SSL_MODES.index(settings["sslmode"]) < SSL_MODES.index(existing.sslmode):
        changed.append("sslmode (weaker)")
    if changed:
        raise Refused(
            f"password: required because {', '.join(changed)} changed; the stored "
            "password is only ever sent to the server, database and user it was "
            'entered for. Enter the password for the new settings (or "" for none)'
        )
    return existing.password_encrypted


async def target_for_test(
    operator_user_id: str, data: LamassuConfigIn | None
) -> Target:
    """The stored settings, or those in the request: with the request's password,
    else the stored one if the request names the same target (else a 422).
    Raises DecryptError when the stored password cannot be decrypted."""
    existing = await get_config(operator_user_id)
    if data is None:
        if existing is None:
            raise NotFound("Lamassu is not configured: PUT /lamassu/config first")
        return Target.of(existing, decrypt_password(existing.password_encrypted))
    settings = validate_settings(data)
    if isinstance(data.password, str):
        return Target.of(settings, data.password)
    return Target.of(settings, decrypt_password(_reusable_password(existing, settings)))


async def run_test(operator_user_id: str, data: LamassuConfigIn | None) -> dict:
    try:
        target = await target_for_test(operator_user_id, data)
    except DecryptError as exc:
        return {
            "ok": False,
            "checks": [{"name": "config", "ok": False, "message": str(exc)}],
            "server_time": None,
            "transactions_visible": None,
            "fixed_fee_column": None,
        }
    try:
        return await test_connection(target)
    except Exception as exc:  # never let a password-bearing traceback escape
        name, message = describe_failure(exc, target)
        return {
            "ok": False,
            "checks": [{"name": name, "ok": False, "message": message}],
            "server_time": None,
            "transactions_visible": None,
            "fixed_fee_column": None,
        }


# ---------------------------------------------------------------- API shapes


def config_out(config: LamassuConfig) -> dict:
    return {
        "host": config.host,
        "port": config.port,
        "database": config.database_name,
        "username": config.username,
        "password_set": bool(config.password_encrypted),
        "sslmode": config.sslmode,
        "poll_interval_seconds": config.poll_interval_seconds,
        "lookback_hours": config.lookback_hours,
        "enabled": config.enabled,
        "start_at": iso(config.start_at),
        "cursor_at": iso(config.cursor_at),
        "created_at": iso(config.created_at),
        "updated_at": iso(config.updated_at),
    }


def status_out(config: LamassuConfig | None) -> dict:
    if config is None:
        return {"configured": False}
    try:
        unknown = json.loads(config.unknown_devices or "{}")
    except ValueError:
        unknown = {}
    return {
        "configured": True,
        "enabled": config.enabled,
        "host": config.host,
        "port": config.port,
        "database": config.database_name,
        "poll_interval_seconds": config.poll_interval_seconds,
        "lookback_hours": config.lookback_hours,
        "last_poll_at": iso(config.last_poll_at),
        "last_success_at": iso(config.last_success_at),
        "last_error": config.last_error,
        "last_found": config.last_found,
        "last_new": config.last_new,
        "unknown_devices": [
            {"device_id": device, **info} for device, info in unknown.items()
        ],
        "newest_created_seen": iso(config.newest_created_seen),
        "start_at": iso(config.start_at),
        "cursor_at": iso(config.cursor_at),
        "consecutive_failures": config.consecutive_failures,
        "next_poll_at": iso(config.next_poll_at) if config.next_poll_at else None,
        "healthy": config.last_error is None and config.last_success_at is not None,
    }
