"""Alerts across real restarts: a real LNbits server process (tests/servers.py), its
detector and sender loops running, e-mail to a real SMTP server (test_alerts.py's).

A held payment lands while the detector is not looking (it passes at start-up only
here); the server is killed (SIGKILL) and started again: the first pass after start
finds the incident and it is e-mailed. Killed and started again: the incident is
still open, and it is not e-mailed again.

Three server starts take a minute and a half here: it runs with
SATMACHINE_ALERT_RESTART=1 only (the default suite covers the same rules in process,
tests/test_alerts.py, by starting the detector afresh).
"""

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import Server
from test_alerts import OPS_EMAIL, SMTP_PASSWORD, SMTP_USER, smtp  # noqa: F401

API = "/satmachineadmin/api/v1"
WANTED = os.environ.get("SATMACHINE_ALERT_RESTART")

pytestmark = pytest.mark.skipif(
    WANTED != "1", reason="slow (three server starts): SATMACHINE_ALERT_RESTART=1"
)


def wait_for(check: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    return check()


def test_incident_is_told_after_a_restart_and_not_again(smtp: Any) -> None:  # noqa: F811
    from lnbits.settings import settings

    root = Path(tempfile.mkdtemp(prefix="satmachine-alert-restart-"))
    server = Server(
        root,
        None,
        extra_env={
            # the detector passes once at start-up (then sleeps an hour), the
            # sender every second
            "SATMACHINE_ALERT_DETECT_SECONDS": "3600",
            "SATMACHINE_ALERT_SEND_SECONDS": "1",
            "LNBITS_EMAIL_NOTIFICATIONS_ENABLED": "true",
            "LNBITS_EMAIL_NOTIFICATIONS_EMAIL": "alerts@example.com",
            "LNBITS_EMAIL_NOTIFICATIONS_USERNAME": SMTP_USER,
            "LNBITS_EMAIL_NOTIFICATIONS_PASSWORD": SMTP_PASSWORD,
            "LNBITS_EMAIL_NOTIFICATIONS_SERVER": "127.0.0.1",
            "LNBITS_EMAIL_NOTIFICATIONS_PORT": str(
                settings.lnbits_email_notifications_port
            ),
        },
    )
    try:
        server.start()
        http = httpx.Client(base_url=server.url, timeout=60)
        token = http.put(
            "/api/v1/auth/first_install",
            json={
                "username": "operator",
                "password": "secret1234",
                "password_repeat": "secret1234",
            },
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert http.put(
            "/api/v1/extension/satmachineadmin/enable", headers=bearer
        ).is_success
        me = http.get("/api/v1/auth", headers=bearer).json()
        # The operator's e-mail address, set in their LNbits account.
        updated = http.patch(
            "/api/v1/auth",
            headers=bearer,
            json={
                "user_id": me["id"],
                "username": "operator",
                "extra": {"notifications": {"email_address": OPS_EMAIL}},
            },
        )
        assert updated.is_success, updated.text
        wallet = http.post(
            "/api/v1/wallet", headers=bearer, json={"name": "ATM float"}
        ).json()
        key = {"X-Api-Key": wallet["adminkey"]}
        machine = http.post(
            f"{API}/machines",
            headers=key,
            json={
                "name": "ATM Restart",
                "wallet_id": wallet["id"],
                "fiat_currency": "GTQ",
            },
        ).json()
        held = http.post(
            f"{API}/settlements",
            headers=key,
            json={
                "machine_id": machine["id"],
                "tx_type": "cash_out",
                "external_id": f"restart-{uuid.uuid4().hex[:8]}",
                "fiat_amount": "1.00",
                "principal_sats": 300,  # twice the market rate: held
                "fee_sats": 0,
            },
        ).json()
        assert held["status"] == "held", held
        time.sleep(2)
        assert smtp.to(OPS_EMAIL) == []  # the detector has not looked since start

        server.kill()
        server.start()
        mails = wait_for(lambda: smtp.to(OPS_EMAIL))
        assert len(mails) == 1, mails
        assert "payment held at ATM Restart" in mails[0]["subject"]
        assert "1.00 GTQ, 300 sats" in mails[0]["body"]

        server.kill()
        server.start()
        time.sleep(4)  # the start-up pass and a few sender ticks
        assert len(smtp.to(OPS_EMAIL)) == 1
        history = http.get(f"{API}/alerts", headers=key).json()
        assert [(a["kind"], a["resolved_at"], a["delivery"]) for a in history] == [
            ("payment_held", None, "sent")
        ]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
