"""The operator extension `satmachineadmin`, as this LNbits process loaded it.

The companion has no data of its own: it calls satmachineadmin's services in process
(docs/companion.md). Not its HTTP API: LNbits refuses an extension's routes to a user
who has not enabled it, and on an instance that keeps satmachineadmin admin-only an
LP cannot enable it. In process, LNbits' access check is the companion's own (the LP
enabled satmachineclient), and the user id it authenticated scopes every service.

Modules are looked up at call time, never imported when this one is: LNbits loads
extensions in no set order, and re-imports one it upgrades (a reference kept from
start-up would be the old code on the old database engine).
"""

import importlib
from http import HTTPStatus
from types import ModuleType

from fastapi import HTTPException
from lnbits.settings import settings

OPERATOR_EXTENSION = "satmachineadmin"


def operator_package() -> str:
    """The module name LNbits gives the operator extension (lnbits/app.py): its id
    with a custom extensions path, `lnbits.extensions.<id>` with the default one."""
    if settings.has_default_extension_path:
        return f"lnbits.extensions.{OPERATOR_EXTENSION}"
    return OPERATOR_EXTENSION


def operator_available() -> bool:
    return (
        OPERATOR_EXTENSION in settings.lnbits_installed_extensions_ids
        and OPERATOR_EXTENSION not in settings.lnbits_deactivated_extensions
        and not settings.lnbits_extensions_deactivate_all
    )


def operator_module(name: str) -> ModuleType:
    """satmachineadmin's module `name` ("services.lp_view", "models", ...); a 503
    that says what to do when the operator extension is not installed and active."""
    if not operator_available():
        raise HTTPException(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"the operator extension {OPERATOR_EXTENSION} is not installed and "
            "active on this LNbits: ask the LNbits admin to install it (it need not "
            "be enabled for you)",
        )
    try:
        return importlib.import_module(f"{operator_package()}.{name}")
    except ImportError as exc:
        raise HTTPException(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"the installed {OPERATOR_EXTENSION} has no {name}: it is older than "
            "this companion; ask the LNbits admin to upgrade it",
        ) from exc
