"""Delivering alert messages through LNbits' own notification channels.

Each message goes to its user's channels as set in their LNbits account
(`User.extra.notifications`: e-mail address, Telegram chat id, Nostr identifier),
with the server's SMTP, Telegram and Nostr settings, by the functions of
`lnbits.core.services.notifications` one channel at a time (LNbits' own
`send_notification` logs a failure and carries on; we need to know, to retry).

The sender loop (tasks.py) takes the due messages from the outbox; a channel that
failed is tried again with backoff (`calculations.retry_delay`), one that took the
message is not sent it again; after MAX_ATTEMPTS the message is given up. Nothing
here runs in the engine or the listener.
"""

import asyncio
import os
from typing import Optional

from lnbits.core.crud.users import get_user
from lnbits.core.services import notifications
from lnbits.settings import settings
from loguru import logger

from .. import crud
from ..calculations import retry_delay
from ..models import AlertMessage

# SATMACHINE_ALERT_RETRY_SECONDS shortens the first retry for tests.
RETRY_BASE_SECONDS = int(os.environ.get("SATMACHINE_ALERT_RETRY_SECONDS", "60"))
RETRY_MAX_SECONDS = 6 * 3600
MAX_ATTEMPTS = 20
# One attempt's lease: another sender leaves the message alone this long.
ATTEMPT_SECONDS = 120
CHANNEL_TIMEOUT_SECONDS = 30


def _telegram_text(text: str) -> str:
    # LNbits sends Telegram messages as markdown: our texts are plain.
    for mark in ("\\", "_", "*", "`", "["):
        text = text.replace(mark, "\\" + mark)
    return text


async def _email(address: str, subject: str, body: str) -> None:
    sent = await notifications.send_email(
        settings.lnbits_email_notifications_server,
        settings.lnbits_email_notifications_port,
        settings.lnbits_email_notifications_username,
        settings.lnbits_email_notifications_password,
        settings.lnbits_email_notifications_email,
        [address],
        f"[{settings.lnbits_site_title}] {subject}",
        body,
    )
    if not sent:
        raise RuntimeError(
            f"the SMTP server {settings.lnbits_email_notifications_server}:"
            f"{settings.lnbits_email_notifications_port} did not take it"
        )


async def _channels(user_id: str) -> dict:
    """channel -> async send(subject, body), for each channel both the user and the
    server have set up."""
    user = await get_user(user_id)
    mine = user.extra.notifications if user else None
    found: dict = {}
    if not mine:
        return found
    if mine.email_address and settings.is_email_notifications_configured():
        address = mine.email_address
        found["email"] = lambda subject, body: _email(address, subject, body)
    if mine.telegram_chat_id and settings.is_telegram_notifications_configured():
        chat = mine.telegram_chat_id
        found["telegram"] = lambda subject, body: (
            notifications.send_telegram_notification(
                chat, _telegram_text(f"{subject}\n\n{body}")
            )
        )
    if mine.nostr_identifier and settings.is_nostr_notifications_configured():
        identifier = mine.nostr_identifier
        found["nostr"] = lambda subject, body: _nostr(
            identifier, f"{subject}\n\n{body}"
        )
    return found


async def _nostr(identifier: str, text: str) -> None:
    # LNbits' send_nostr_dm connects to each relay with a blocking websocket call
    # (up to 2 s each, the relays listed by the user's own NIP-05 domain): on an
    # event loop of its own in a worker thread, so that LNbits' loop (the engine, the
    # listener, every request) never waits for it, and the channel's timeout holds.
    await asyncio.to_thread(
        lambda: asyncio.run(notifications.send_nostr_notification(identifier, text))
    )


async def deliver(message: AlertMessage) -> AlertMessage:
    """One attempt at one message; returns it as recorded."""
    channels = await _channels(message.user_id)
    if not channels:
        await crud.record_alert_delivery(
            message.id,
            "no_channel",
            "",
            0,
            "no notification channel: set an e-mail address, Telegram chat id or "
            "Nostr identifier in your LNbits account (the server must have that "
            "channel enabled)",
        )
        return await _reread(message)
    done = [c for c in message.channels_done.split(",") if c]
    errors = []
    for name, send in channels.items():
        if name in done:
            continue
        try:
            await asyncio.wait_for(
                send(message.subject, message.body), CHANNEL_TIMEOUT_SECONDS
            )
            done.append(name)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    attempts = message.attempts
    if not errors:
        status, next_at, error = "sent", 0, None
    elif attempts >= MAX_ATTEMPTS:
        status, next_at = "failed", 0
        error = f"gave up after {attempts} attempts; " + "; ".join(errors)
    else:
        status = "queued"
        next_at = crud.now() + retry_delay(
            attempts, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS
        )
        error = "; ".join(errors)
    if errors:
        logger.warning(f"satmachineadmin: alert {message.id} not delivered: {error}")
    await crud.record_alert_delivery(
        message.id, status, ",".join(done), next_at, error[:1000] if error else None
    )
    return await _reread(message)


async def _reread(message: AlertMessage) -> AlertMessage:
    fresh: Optional[AlertMessage] = await crud.get_alert_message(message.id)
    return fresh or message


async def send_due(limit: int = 50) -> int:
    """Deliver the messages that are due; returns how many were attempted."""
    tried = 0
    for message in await crud.due_alert_messages(crud.now(), limit):
        if not await crud.claim_alert_message(
            message.id, message.attempts, crud.now() + ATTEMPT_SECONDS
        ):
            continue  # another sender took it
        message.attempts += 1
        try:
            await deliver(message)
        except Exception:
            logger.exception(f"satmachineadmin: delivering alert {message.id} failed")
        tried += 1
    return tried
