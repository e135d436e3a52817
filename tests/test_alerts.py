"""Alerts (services/alerts.py, services/notify.py): operator incidents and LP events,
told once through the user's LNbits notification channels.

E-mail goes end to end to a real SMTP server on this machine (aiosmtpd, with
STARTTLS and login as LNbits' sender uses them), configured through LNbits' own
settings. Telegram and Nostr are caught at LNbits' function boundary (no internet):
`send_telegram_message` and `send_nostr_dm` in lnbits.core.services.notifications.
The detector and the sender are driven step by step (SATMACHINE_ENGINE_AUTORUN=0).
"""

import asyncio
import datetime
import socket
import ssl
from email import message_from_bytes, policy
from typing import Any

import pytest

OPS_EMAIL = "ops@example.com"
SMTP_USER = "satmachine"
SMTP_PASSWORD = "s3cret"


def _self_signed(folder: Any) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append(
            {
                "to": list(envelope.rcpt_tos),
                "subject": str(mail["subject"]),
                "body": mail.get_body(("plain",)).get_content(),
                "tls": session.ssl is not None,
            }
        )
        return "250 OK"

    def to(self, address: str) -> list[dict]:
        """Ours only: LNbits sends its own payment notifications to the same
        address (subject "LNbits Notification")."""
        return [
            m
            for m in self.messages
            if address in m["to"] and "Sat Machine" in m["subject"]
        ]


@pytest.fixture
def smtp(tmp_path: Any, monkeypatch: Any) -> Any:
    """A real SMTP server that requires STARTTLS and a login, and LNbits' e-mail
    settings pointing at it."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    from lnbits.settings import settings

    box = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = auth_data.login == SMTP_USER.encode() and (
            auth_data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            box.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    port = _free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=_self_signed(tmp_path),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    for name, value in {
        "lnbits_email_notifications_enabled": True,
        "lnbits_email_notifications_email": "alerts@example.com",
        "lnbits_email_notifications_username": SMTP_USER,
        "lnbits_email_notifications_password": SMTP_PASSWORD,
        "lnbits_email_notifications_server": "127.0.0.1",
        "lnbits_email_notifications_port": port,
    }.items():
        monkeypatch.setattr(settings, name, value)
    yield box
    controller.stop()


async def set_channels(user_id: str, **channels: Any) -> None:
    """What the user sets in their LNbits account: their notification channels."""
    from lnbits.core.crud import get_account, update_account
    from lnbits.core.models.users import UserNotifications

    account = await get_account(user_id)
    assert account
    account.extra.notifications = UserNotifications(**channels)
    await update_account(account)


async def messages_of(user_id: str) -> list[Any]:
    from satmachineadmin import crud
    from satmachineadmin.models import AlertMessage

    return await crud.db.fetchall(
        "SELECT * FROM satmachineadmin.alert_messages WHERE user_id = :u "
        "ORDER BY created_at, id",
        {"u": user_id},
        AlertMessage,
    )


async def float_short_machine(factory: Any, super_user: Any) -> tuple:
    """A cash-in whose commission the empty float cannot pay (test_faults)."""
    from satmachineadmin import bitspire, distribution

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    split = await factory.wallet(operator, "commission")
    await factory.splits(
        operator, [{"target": split.id, "percent": "100"}], machine["id"]
    )
    await factory.fund(machine["wallet"], 1_000)
    customer = await factory.user()
    played = await factory.cash_in(machine, customer.wallet, "10.00", 1_500, 500)
    await bitspire.sweep_all()
    settlement = await factory.settlement_of(played["payment_hash"])
    await distribution.run_due_settlements()
    return operator, machine, settlement


async def test_float_short_is_emailed_once_and_its_resolution_too(
    factory, super_user, http, smtp
):
    from satmachineadmin import crud, distribution
    from satmachineadmin.services import alerts, notify

    operator, machine, settlement = await float_short_machine(factory, super_user)
    await set_channels(operator.id, email_address=OPS_EMAIL)
    # The incident began before the detector's first pass (as if the server had
    # been down): the pass finds it.
    alerts._last_pass_at = None
    await alerts.detect_once()
    queued = await messages_of(operator.id)
    assert [m.status for m in queued] == ["queued"]
    # Queued, not sent: the detector never waits for a mail server.
    assert smtp.to(OPS_EMAIL) == []
    await notify.send_due()
    mails = smtp.to(OPS_EMAIL)
    assert len(mails) == 1
    mail = mails[0]
    assert mail["tls"] and smtp.logins == [SMTP_USER]
    assert machine["name"] in mail["subject"] and "500 sats" in mail["subject"]
    assert "float of " + machine["name"] + " is 0 sats" in mail["body"]
    assert "need 500 sats" in mail["body"]
    assert "/satmachineadmin/?tab=reports" in mail["body"]

    # A restart: the open incident is found again, and not told again.
    alerts._last_pass_at = None
    await alerts.detect_once()
    await notify.send_due()
    assert len(smtp.to(OPS_EMAIL)) == 1
    assert len(await messages_of(operator.id)) == 1

    health = (
        await http.get("/satmachineadmin/api/v1/health", headers=operator.invoice)
    ).json()["alerts"]
    assert health["channels"]["email"] == {"set": True, "server_enabled": True}
    assert health["queued"] == 0 and health["last_error"] is None

    # The operator tops the float up; the settlement is paid; the incident clears.
    await factory.fund(machine["wallet"], 700)
    await crud.make_errored_due(machine["id"])
    await distribution.run_due_settlements()
    assert (await crud.get_settlement(settlement.id)).status == "processed"
    await alerts.detect_once()
    await notify.send_due()
    mails = smtp.to(OPS_EMAIL)
    assert len(mails) == 2
    assert mails[1]["subject"].startswith("[LNbits] Resolved: Sat Machine:")
    assert machine["name"] in mails[1]["subject"]

    shown = (
        await http.get("/satmachineadmin/api/v1/alerts", headers=operator.invoice)
    ).json()
    assert [(a["kind"], a["delivery"]) for a in shown] == [("float_short", "sent")]
    assert shown[0]["machine_id"] == machine["id"] and shown[0]["resolved_at"]

    # Cleared stays cleared: nothing more is told.
    await alerts.detect_once()
    assert len(await messages_of(operator.id)) == 2


async def test_failing_channel_is_retried_with_backoff_and_shown_in_health(
    factory, http, smtp, monkeypatch
):
    """E-mail fails (nothing listens on the SMTP port), Telegram takes it: the retry sends e-mail
    only, after the backoff, and /health shows the failure meanwhile."""
    from lnbits.core.services import notifications
    from lnbits.settings import settings

    from satmachineadmin import crud
    from satmachineadmin.services import alerts, notify

    sent: list[tuple] = []

    async def telegram(token: str, chat_id: str, message: str) -> dict:
        sent.append((token, chat_id, message))
        return {"ok": True}

    monkeypatch.setattr(notifications, "send_telegram_message", telegram)
    monkeypatch.setattr(settings, "lnbits_telegram_notifications_enabled", True)
    monkeypatch.setattr(settings, "lnbits_telegram_notifications_access_token", "T0K")
    smtp_port = settings.lnbits_email_notifications_port
    monkeypatch.setattr(settings, "lnbits_email_notifications_port", _free_port())

    operator = await factory.operator()
    machine = await factory.machine(operator)
    await set_channels(operator.id, email_address=OPS_EMAIL, telegram_chat_id="4242")
    held = await _settlement(operator.id, machine, "held", "amount above the limit")
    await alerts.detect_once()
    await notify.send_due()
    [message] = await messages_of(operator.id)
    assert message.status == "queued" and message.attempts == 1
    assert message.channels_done == "telegram"
    assert "email:" in message.last_error
    assert message.next_attempt_at >= crud.now() + notify.RETRY_BASE_SECONDS - 2
    assert [(t, c) for t, c, _ in sent] == [("T0K", "4242")]
    assert machine["name"] in sent[0][2] and "held" in sent[0][2]
    assert smtp.to(OPS_EMAIL) == []

    health = (
        await http.get("/satmachineadmin/api/v1/health", headers=operator.invoice)
    ).json()["alerts"]
    assert health["queued"] == 1 and health["failing"] == 1
    assert "SMTP server 127.0.0.1" in health["last_error"]
    assert health["next_attempt_at"]

    # Not due yet: nothing is tried.
    await notify.send_due()
    assert (await messages_of(operator.id))[0].attempts == 1
    # Due, with the SMTP server back: e-mail goes, Telegram is not sent it again.
    monkeypatch.setattr(settings, "lnbits_email_notifications_port", smtp_port)
    await crud.db.execute(
        "UPDATE satmachineadmin.alert_messages SET next_attempt_at = 0 WHERE id = :id",
        {"id": message.id},
    )
    await notify.send_due()
    [message] = await messages_of(operator.id)
    assert message.status == "sent" and message.attempts == 2
    assert sorted(message.channels_done.split(",")) == ["email", "telegram"]
    assert len(sent) == 1 and len(smtp.to(OPS_EMAIL)) == 1
    assert "held" in smtp.to(OPS_EMAIL)[0]["subject"]
    await _close(held)


async def _settlement(operator_id: str, machine: dict, status: str, error: str) -> Any:
    """A settlement the engine leaves alone (held or rejected), written directly."""
    import uuid

    from satmachineadmin import crud
    from satmachineadmin.models import Settlement

    moment = crud.now()
    settlement = Settlement(
        id=crud.new_id(),
        machine_id=machine["id"],
        operator_user_id=operator_id,
        source="manual",
        external_id=uuid.uuid4().hex,
        tx_type="cash_out",
        status=status,
        fiat_amount_minor=1234,
        currency=machine["fiat_currency"],
        wire_sats=1851,
        principal_sats=1851,
        error=error,
        created_at=moment,
        updated_at=moment,
    )
    async with crud.transaction() as tx:
        await crud.insert_settlement(tx, settlement)
    return settlement


def _leg(
    settlement_id: str, machine: dict, operator_id: str, client_id: str, **fields: Any
) -> Any:
    """A leg of a machine's settlement, written directly by a test."""
    from satmachineadmin import crud
    from satmachineadmin.models import Leg

    moment = crud.now()
    return Leg(
        id=crud.new_id(),
        idempotency_key=f"alerts-test:{crud.new_id()}",
        settlement_id=settlement_id,
        machine_id=machine["id"],
        operator_user_id=operator_id,
        client_id=client_id,
        source_wallet_id=machine["wallet"].id,
        created_at=moment,
        updated_at=moment,
        **fields,
    )


async def _close(settlement: Any) -> None:
    from satmachineadmin import crud

    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET status = 'rejected' WHERE id = :id",
        {"id": settlement.id},
    )


async def test_operator_chooses_kinds_per_machine(factory, http):
    from satmachineadmin.services import alerts

    api = "/satmachineadmin/api/v1/alerts/settings"
    operator = await factory.operator()
    quiet = await factory.machine(operator)
    loud = await factory.machine(operator)
    shown = (await http.get(api, headers=operator.invoice)).json()
    assert shown["kinds"]["payment_held"] is True
    assert shown["kinds"]["payment_rejected"] is False
    assert {k["kind"] for k in shown["available"]} == set(alerts.OPERATOR_KINDS)

    body = {
        "kinds": {"payment_held": False, "payment_rejected": True},
        "machines": {loud["id"]: {"payment_held": True}},
        "stuck_minutes": 45,
    }
    saved = await http.put(api, headers=operator.admin, json=body)
    assert saved.status_code == 200, saved.text
    assert saved.json()["machines"] == {loud["id"]: {"payment_held": True}}
    assert saved.json()["stuck_minutes"] == 45
    assert (await http.get(api, headers=operator.invoice)).json()["stuck_minutes"] == 45

    refused = await http.put(api, headers=operator.admin, json={"kinds": {"x": True}})
    assert refused.status_code == 400 and "unknown alert kind 'x'" in refused.text
    for bad in ({"stuck_minutes": 0}, {"errored_attempts": "3"}):
        refused = await http.put(api, headers=operator.admin, json=bad)
        assert refused.status_code == 400, (bad, refused.text)
    stranger = await factory.operator()
    foreign = await http.put(
        api, headers=stranger.admin, json={"machines": {loud["id"]: {}}}
    )
    assert foreign.status_code == 404

    held_quiet = await _settlement(operator.id, quiet, "held", "over the limit")
    held_loud = await _settlement(operator.id, loud, "held", "over the limit")
    await alerts.detect_once()
    history = (
        await http.get("/satmachineadmin/api/v1/alerts", headers=operator.invoice)
    ).json()
    told = {a["machine_id"]: (a["notify"], a["delivery"]) for a in history}
    # Recorded either way (the history shows it); told only where it is on.
    assert told == {quiet["id"]: (False, None), loud["id"]: (True, "queued")}

    # Rejected: the held incidents resolve, and the rejections (now on) are told.
    await _close(held_quiet)
    await _close(held_loud)
    await alerts.detect_once()
    history = (
        await http.get("/satmachineadmin/api/v1/alerts", headers=operator.invoice)
    ).json()
    kinds = sorted((a["kind"], a["resolved_at"] is not None) for a in history)
    assert kinds == [
        ("payment_held", True),
        ("payment_held", True),
        ("payment_rejected", True),
        ("payment_rejected", True),
    ]
    phases = sorted(m.phase for m in await messages_of(operator.id))
    # loud: opened + resolved; the two rejections: one event each.
    assert phases == ["event", "event", "opened", "resolved"]


async def test_lamassu_incidents(factory):
    """An unreachable Lamassu server (backing off, then down for half its lookback)
    and a device nobody linked, from the poller's stored status."""
    import json

    from satmachineadmin import crud
    from satmachineadmin.services import alerts

    operator = await factory.operator()
    moment = crud.now()
    values = {
        "operator_user_id": operator.id,
        "host": "lamassu.example",
        "port": 5432,
        "database_name": "lamassu",
        "username": "reader",
        "sslmode": "prefer",
        "poll_interval_seconds": 60,
        "lookback_hours": 72,
        "enabled": True,
        "consecutive_failures": 3,
        "last_error": "connection refused",
        "last_success_at": moment - 40 * 3600,
        "unknown_devices": json.dumps(
            {"dev-77": {"transactions": 2, "reason": "not linked to a machine"}}
        ),
        "created_at": moment - 50 * 3600,
        "updated_at": moment,
    }
    columns = ", ".join(values)
    names = ", ".join(f":{k}" for k in values)
    await crud.db.execute(
        f"INSERT INTO satmachineadmin.lamassu_config ({columns}) VALUES ({names})",
        values,
    )
    await alerts.detect_once()
    history = await alerts.history(operator.id, "operator", 10)
    found = {a.kind: a for a in history}
    assert set(found) == {"lamassu_unreachable", "lamassu_lookback", "unknown_device"}
    assert "failed 3 polls" in found["lamassu_unreachable"].body
    assert "40 hours" in found["lamassu_lookback"].body
    assert "dev-77" in found["unknown_device"].body
    assert "2 transaction(s)" in found["unknown_device"].body

    await crud.db.execute(
        "UPDATE satmachineadmin.lamassu_config SET consecutive_failures = 0, "
        "last_error = NULL, last_success_at = :now, unknown_devices = '{}' "
        "WHERE operator_user_id = :op",
        {"now": crud.now(), "op": operator.id},
    )
    await alerts.detect_once()
    history = await alerts.history(operator.id, "operator", 10)
    assert all(a.resolved_at for a in history) and len(history) == 3
    await crud.db.execute(
        "DELETE FROM satmachineadmin.lamassu_config WHERE operator_user_id = :op",
        {"op": operator.id},
    )


async def test_lp_is_told_deposit_digest_and_cycle_on_telegram_and_nostr(
    factory, super_user, http, monkeypatch
):
    from lnbits.core.services import notifications
    from lnbits.settings import settings

    from satmachineadmin import bitspire, crud
    from satmachineadmin.services import alerts, notify

    telegram: list[tuple] = []
    nostr: list[tuple] = []

    async def send_telegram_message(token: str, chat_id: str, message: str) -> dict:
        if chat_id == "777":  # the LP's (other tests' messages may be queued)
            telegram.append((chat_id, message))
        return {"ok": True}

    async def fetch_nip5_details(identifier: str) -> tuple:
        assert identifier == "lp@example.com"
        return ("ab" * 32, ["wss://relay.example"])

    async def send_nostr_dm(private_key, pubkey, message, relays):  # type: ignore[no-untyped-def]
        nostr.append((pubkey, relays, message))

    monkeypatch.setattr(notifications, "send_telegram_message", send_telegram_message)
    monkeypatch.setattr(notifications, "fetch_nip5_details", fetch_nip5_details)
    monkeypatch.setattr(notifications, "send_nostr_dm", send_nostr_dm)
    monkeypatch.setattr(settings, "lnbits_telegram_notifications_enabled", True)
    monkeypatch.setattr(settings, "lnbits_telegram_notifications_access_token", "T")
    monkeypatch.setattr(settings, "lnbits_nostr_notifications_enabled", True)
    monkeypatch.setattr(settings, "lnbits_nostr_notifications_private_key", "01" * 32)

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    await set_channels(lp.id, telegram_chat_id="777", nostr_identifier="lp@example.com")
    client = await factory.enrol(operator, machine, lp, deposit="20.00")

    await alerts.detect_once()
    await notify.send_due()
    assert len(telegram) == 1 and len(nostr) == 1
    chat, text = telegram[0]
    assert chat == "777"
    assert "deposit of 20.00 GTQ confirmed at " in text
    assert machine["name"].replace("_", "\\_") in text
    assert nostr[0][0] == "ab" * 32 and nostr[0][1] == ["wss://relay.example"]
    assert "20.00 GTQ" in nostr[0][2] and machine["name"] in nostr[0][2]

    async def cash_out(fiat: str, sats: int) -> None:
        payer = await factory.user()
        await factory.fund(payer.wallet, sats)
        played = await factory.cash_out(machine, payer.wallet, fiat, sats, 0)
        await bitspire.sweep_all()
        assert await factory.settlement_of(played["payment_hash"])
        await factory.run_engine()
        # A digest covers payouts completed before the current second.
        await asyncio.sleep(1.05)

    await cash_out("10.00", 1_500)
    await alerts.detect_once()
    await notify.send_due()
    digests = [m for _, m in telegram if "you received" in m]
    assert len(digests) == 1
    assert "you received 1500 sats" in digests[0]
    assert "1500 sats in 1 payment(s) for 10.00 GTQ" in digests[0]
    assert "average rate 666666.67 GTQ/BTC" in digests[0]

    # A second payout within the period: no second digest; it completes the cycle.
    await cash_out("10.00", 1_500)
    await alerts.detect_once()
    await notify.send_due()
    assert len([m for _, m in telegram if "you received" in m]) == 1
    cycle = [m for m in nostr if "is complete" in m[2]]
    assert len(cycle) == 1 and "3000 sats received" in cycle[0][2]

    # A period later, the next digest holds only what came since the first.
    await crud.db.execute(
        "UPDATE satmachineadmin.alerts SET opened_at = opened_at - 86400 "
        "WHERE user_id = :u AND kind = 'payout_digest'",
        {"u": lp.id},
    )
    await alerts.detect_once()
    await notify.send_due()
    digests = [m for _, m in telegram if "you received" in m]
    assert len(digests) == 2 and "1500 sats in 1 payment(s)" in digests[1]

    # The LP's own settings: no more deposit messages (still in their history).
    api = "/satmachineadmin/api/v1/lp/alerts/settings"
    saved = await http.put(
        api,
        headers=lp.admin,
        json={"deposit_confirmed": False, "digest_period": "week"},
    )
    assert saved.status_code == 200, saved.text
    assert (await http.get(api, headers=lp.invoice)).json()["digest_period"] == "week"
    await factory.deposit(operator, client["id"], "5.00")
    await alerts.detect_once()
    await notify.send_due()
    assert not [m for _, m in telegram if "5.00 GTQ" in m]
    history = (
        await http.get("/satmachineadmin/api/v1/lp/alerts", headers=lp.invoice)
    ).json()
    assert history[0]["kind"] == "deposit_confirmed" and not history[0]["notify"]
    kinds = sorted(a["kind"] for a in history)
    assert kinds == [
        "cycle_complete",
        "deposit_confirmed",
        "deposit_confirmed",
        "payout_digest",
        "payout_digest",
    ]


async def test_settlement_leg_and_autoforward_incidents(factory, http):
    """Errored after its retries, stuck, an external payment pending too long, and
    (to the LP) an autoforward that failed: each recorded once with what it is about;
    the operator's incidents resolve when their rows change."""
    from satmachineadmin import crud
    from satmachineadmin.services import alerts

    operator = await factory.operator()
    machine = await factory.machine(operator)
    await factory.fund(machine["wallet"], 1_000)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp)
    # Not due for the engine: errored with its next attempt far away, processing
    # under a live claim.
    errored = await _settlement(operator.id, machine, "held", "node offline")
    stuck = await _settlement(operator.id, machine, "held", "")
    old = crud.now() - 3 * 3600
    far = crud.now() + 365 * 86_400
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET status = 'errored', attempts = 3, "
        "next_attempt_at = :far WHERE id = :id",
        {"id": errored.id, "far": far},
    )
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET status = 'processing', "
        "claimed_until = :far, updated_at = :old WHERE id = :id",
        {"id": stuck.id, "far": far, "old": old},
    )

    def leg(kind: str, status: str, **extra: Any) -> Any:
        return _leg(
            stuck.id,
            machine,
            operator.id,
            client["id"],
            leg_type=kind,
            status=status,
            amount_sats=100,
            destination="lp@example.com",
            destination_kind="ln_address",
            **extra,
        )

    # FORWARD_MAX_ATTEMPTS: no sweep pays this one again.
    forward = leg("autoforward", "failed", attempts=5, error="route not found")
    pending = leg("dca", "pending", in_flight_since=old)
    async with crud.transaction() as tx:
        await tx.insert("satmachineadmin.legs", forward)
        await tx.insert("satmachineadmin.legs", pending)

    await alerts.detect_once()
    shown = {a.kind: a for a in await alerts.history(operator.id, "operator", 20)}
    assert set(shown) == {"settlement_errored", "settlement_stuck", "leg_pending"}
    assert "errored after 3 attempts: node offline" in shown["settlement_errored"].body
    assert "processing without change for more than 30 minutes" in (
        shown["settlement_stuck"].body
    )
    assert "100 sats" in shown["leg_pending"].body
    assert "lp@example.com" in shown["leg_pending"].body
    told = await alerts.history(lp.id, "lp", 20)
    assert [a.kind for a in told] == ["autoforward_failed"]
    assert "Forwarding 100 sats" in told[0].body and "route not found" in told[0].body

    # The operator raises the threshold: an errored settlement with 3 attempts is
    # no longer an incident (resolved), and the others clear with their rows.
    response = await http.put(
        "/satmachineadmin/api/v1/alerts/settings",
        headers=operator.admin,
        json={"errored_attempts": 5},
    )
    assert response.status_code == 200
    await crud.db.execute(
        "UPDATE satmachineadmin.legs SET status = 'voided', in_flight_since = NULL "
        "WHERE id = :id",
        {"id": pending.id},
    )
    await _close(stuck)
    await _close(errored)
    await alerts.detect_once()
    history = await alerts.history(operator.id, "operator", 20)
    # (the rejection is recorded too, not told: that kind is off by default)
    incidents = [a for a in history if a.kind != "payment_rejected"]
    assert len(incidents) == 3 and all(a.resolved_at for a in incidents)
    phases = sorted(m.phase for m in await messages_of(operator.id))
    assert phases == ["opened"] * 3 + ["resolved"] * 3
    await crud.db.execute(
        "UPDATE satmachineadmin.legs SET status = 'voided' WHERE id = :id",
        {"id": forward.id},
    )


async def test_cycle_complete_is_told_when_the_balance_is_paid_not_when_reserved(
    factory, super_user
):
    """The LP's whole balance taken by a leg the empty float cannot pay: their cycle
    is not complete yet (nothing told); once the float is topped up and the leg paid,
    it is, once, with the sats they received."""
    from lnbits.core.services import create_invoice, pay_invoice

    from satmachineadmin import bitspire, crud
    from satmachineadmin.services import alerts

    async def cycle_alerts() -> list[Any]:
        return await crud.db.fetchall(
            "SELECT body FROM satmachineadmin.alerts WHERE user_id = :u "
            "AND kind = 'cycle_complete'",
            {"u": lp.id},
        )

    await factory.platform(super_user, "0", None)
    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="10.00")
    payer = await factory.user()
    await factory.fund(payer.wallet, 1_500)
    played = await factory.cash_out(machine, payer.wallet, "10.00", 1_500, 0)
    await bitspire.sweep_all()
    settlement = await factory.settlement_of(played["payment_hash"])
    # The machine's sats leave before the engine pays: its leg to the LP fails.
    sink = await factory.user()
    drain = await create_invoice(
        wallet_id=sink.wallet.id, amount=1_500, memo="drain", internal=True
    )
    await pay_invoice(wallet_id=machine["wallet"].id, payment_request=drain.bolt11)
    await factory.run_engine()
    legs = await crud.list_settlement_legs(settlement.id)
    dca = [leg for leg in legs if leg.leg_type == "dca"]
    assert [leg.status for leg in dca] == ["failed"]
    assert (await crud.get_client(client["id"])).cycle_complete

    alerts._last_pass_at = None
    await alerts.detect_once()
    assert await cycle_alerts() == []

    await factory.fund(machine["wallet"], 1_500)
    await crud.make_errored_due(machine["id"])
    await factory.run_engine()
    assert (await crud.get_settlement(settlement.id)).status == "processed"
    await alerts.detect_once()
    told = await cycle_alerts()
    assert len(told) == 1 and "1500 sats received" in told[0]["body"]
    await alerts.detect_once()
    assert len(await cycle_alerts()) == 1


async def test_an_errored_settlement_being_retried_stays_one_incident(
    factory, super_user
):
    """The float cannot pay a settlement: errored after its attempts, it is one
    incident. While an engine retries it (processing, the last error kept) the
    incident stays open, and a retry that errors again opens no second one; it
    resolves once, when the settlement is paid."""
    from satmachineadmin import crud, distribution
    from satmachineadmin.services import alerts

    operator, machine, settlement = await float_short_machine(factory, super_user)
    await crud.db.execute(
        "UPDATE satmachineadmin.settlements SET attempts = 3 WHERE id = :id",
        {"id": settlement.id},
    )

    async def errored_alerts() -> list[Any]:
        return [
            a
            for a in await alerts.history(operator.id, "operator", 50)
            if a.kind == "settlement_errored"
        ]

    alerts._last_pass_at = None
    await alerts.detect_once()
    [opened] = await errored_alerts()
    assert opened.resolved_at is None

    # An engine takes it for a retry: the detector runs while it is processing.
    await crud.make_errored_due(machine["id"])
    assert await crud.claim_settlement(settlement.id, "retrying-worker", 120)
    await alerts.detect_once()
    assert [(a.id, a.resolved_at) for a in await errored_alerts()] == [
        (opened.id, None)
    ]
    # The retry errors again: still the same one incident.
    assert await crud.finish_settlement(
        settlement.id, "retrying-worker", "errored", "insufficient balance", 0
    )
    await alerts.detect_once()
    assert [(a.id, a.resolved_at) for a in await errored_alerts()] == [
        (opened.id, None)
    ]

    await factory.fund(machine["wallet"], 700)
    await crud.make_errored_due(machine["id"])
    await distribution.run_due_settlements()
    assert (await crud.get_settlement(settlement.id)).status == "processed"
    await alerts.detect_once()
    [resolved] = await errored_alerts()
    assert resolved.id == opened.id and resolved.resolved_at


async def test_float_short_leaves_out_legs_lnbits_already_debited(factory):
    """A leg LNbits has paid (the worker died before recording it) is off the float
    already: it is not counted as needed again. Only the unpaid leg makes the float
    short, by its own amount."""
    from lnbits.core.services import create_invoice, pay_invoice

    from satmachineadmin import crud
    from satmachineadmin.services import alerts

    operator = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp)
    settlement = await _settlement(operator.id, machine, "held", "")
    await factory.fund(machine["wallet"], 1_500)
    invoice = await create_invoice(
        wallet_id=lp.wallet.id, amount=1_500, memo="dca", internal=True
    )
    await pay_invoice(wallet_id=machine["wallet"].id, payment_request=invoice.bolt11)
    assert await factory.balance(machine["wallet"]) == 0

    def leg(sats: int, payment_hash: Any) -> Any:
        return _leg(
            settlement.id,
            machine,
            operator.id,
            client["id"],
            leg_type="dca",
            status="pending",
            amount_sats=sats,
            destination=lp.wallet.id,
            destination_kind="wallet",
            payment_hash=payment_hash,
        )

    async with crud.transaction() as tx:
        await tx.insert("satmachineadmin.legs", leg(1_500, invoice.payment_hash))
    alerts._last_pass_at = None
    await alerts.detect_once()
    shown = await alerts.history(operator.id, "operator", 20)
    assert [a.kind for a in shown if a.kind == "float_short"] == []

    async with crud.transaction() as tx:
        await tx.insert("satmachineadmin.legs", leg(500, None))
    await alerts.detect_once()
    shown = await alerts.history(operator.id, "operator", 20)
    [short] = [a for a in shown if a.kind == "float_short"]
    assert "short by 500 sats" in short.subject
    assert "need 500 sats" in short.body


async def test_incidents_past_the_row_limit_are_not_resolved_by_mistake(
    factory, monkeypatch
):
    """Two operators' errored settlements, each an open incident. A pass whose query
    is cut at its row limit cannot see them all: it resolves none of that kind (the
    rows it did not read are not "cleared"), and says so in the log."""
    from satmachineadmin import crud
    from satmachineadmin.services import alerts

    far = crud.now() + 365 * 86_400
    errored = []
    for _ in range(2):
        operator = await factory.operator()
        machine = await factory.machine(operator)
        settlement = await _settlement(operator.id, machine, "held", "node offline")
        await crud.db.execute(
            "UPDATE satmachineadmin.settlements SET status = 'errored', "
            "attempts = 3, next_attempt_at = :far WHERE id = :id",
            {"id": settlement.id, "far": far},
        )
        errored.append((operator, settlement))

    async def incident(operator: Any) -> Any:
        [alert] = [
            a
            for a in await alerts.history(operator.id, "operator", 20)
            if a.kind == "settlement_errored"
        ]
        return alert

    await alerts.detect_once()
    opened = [await incident(op) for op, _ in errored]
    assert [a.resolved_at for a in opened] == [None, None]

    monkeypatch.setattr(alerts, "INCIDENT_ROWS", 1)
    await alerts.detect_once()
    assert [(await incident(op)).resolved_at for op, _ in errored] == [None, None]

    monkeypatch.undo()
    for _, settlement in errored:
        await _close(settlement)
    await alerts.detect_once()
    assert all([(await incident(op)).resolved_at for op, _ in errored])


async def test_a_slow_nostr_relay_never_blocks_lnbits(factory, monkeypatch):
    """LNbits' Nostr sender connects to relays with blocking calls (2 s each, the
    relays named by the user's own domain). A delivery to such a relay runs off
    LNbits' event loop: the loop keeps serving (here a ticker) meanwhile, and the
    message is sent."""
    import time

    from lnbits.core.services import notifications
    from lnbits.settings import settings

    from satmachineadmin.services import notify

    sent: list[str] = []

    async def fetch_nip5_details(identifier: str) -> tuple:
        return ("cd" * 32, ["wss://slow.relay.example"])

    async def send_nostr_dm(private_key, pubkey, message, relays):  # type: ignore[no-untyped-def]
        time.sleep(1.0)  # as create_connection(relay, timeout=2) blocks
        sent.append(message)

    monkeypatch.setattr(notifications, "fetch_nip5_details", fetch_nip5_details)
    monkeypatch.setattr(notifications, "send_nostr_dm", send_nostr_dm)
    monkeypatch.setattr(settings, "lnbits_nostr_notifications_enabled", True)
    monkeypatch.setattr(settings, "lnbits_nostr_notifications_private_key", "01" * 32)
    operator = await factory.operator()
    await set_channels(operator.id, nostr_identifier="op@slow.example")
    machine = await factory.machine(operator)
    settlement = await _settlement(operator.id, machine, "held", "rate off")

    from satmachineadmin.services import alerts

    alerts._last_pass_at = None
    await alerts.detect_once()
    [message] = [m for m in await messages_of(operator.id) if m.status == "queued"]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    running = asyncio.create_task(ticker())
    try:
        delivered = await notify.deliver(message)
    finally:
        running.cancel()
    assert delivered.status == "sent", delivered
    assert len(sent) == 1 and machine["name"] in sent[0]
    # About 20 ticks while the relay blocked its thread for 1 s; none if it had
    # blocked the loop.
    assert ticks >= 5, ticks
    await _close(settlement)
