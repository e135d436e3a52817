"""Live updates: the page listens on LNbits' websocket channel
`satmachineadmin-<user id>` and reloads what changed when told.

A message names what changed, never any figure: {"event": "changed", "what": ...}.
The loop in tasks.py asks the database which operators' and LPs' settlements, legs
or balances changed since its last tick (an indexed read) and tells them; the alert
detector tells an operator when their alerts changed. The engine's own
"cycle_complete" event goes out on the same channel.
"""

import json
from collections.abc import Iterable
from typing import Optional

from lnbits.core.services.websockets import websocket_updater
from loguru import logger

from .. import crud

_last_tick_at: Optional[int] = None


def channel(user_id: str) -> str:
    return f"satmachineadmin-{user_id}"


async def tell_users(user_ids: Iterable[str], what: str) -> None:
    payload = json.dumps({"event": "changed", "what": what})
    for user_id in user_ids:
        try:
            await websocket_updater(channel(user_id), payload)
        except Exception:  # nobody listening is not an error
            logger.debug(f"satmachineadmin: live update to {user_id} not sent")


async def publish_changes() -> tuple[set[str], set[str]]:
    """Tell everyone whose books changed since the previous tick (rows updated in
    the same second as a tick are seen by both: a reload too many, never one too
    few). The first tick after start only sets the mark."""
    global _last_tick_at
    now = crud.now()
    if _last_tick_at is None:
        _last_tick_at = now
        return set(), set()
    operators, lps = await crud.users_changed_since(_last_tick_at)
    _last_tick_at = now
    await tell_users(operators, "books")
    await tell_users(lps, "lp")
    return operators, lps
