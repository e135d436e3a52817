"""Alerts: what the operator and the LP are told, and when (docs/operations.md,
"Alerts").

The detector (`detect_once`, a loop of its own in tasks.py) derives every incident from
the database as it stands: it never runs inside the engine or the listener, so a slow
pass cannot hold a payment up, and it is restart-safe by construction. Each incident
has a key (`float_short:<machine>`); the unique index on that key means one open
incident per condition, so an incident alerted before a restart is found open and not
alerted again, and one that began while the server was down is found on the first
pass after start. When its condition clears the incident is resolved (and the
operator told so). LP events (a deposit confirmed, a payout digest, a cycle complete,
an autoforward that failed) are recorded resolved at once, keyed by what they are
about, so each is told once.

Opening an incident and queueing its message are one transaction (crud.open_alert);
delivery is services/notify.py's, with LNbits' notification channels.
"""

import json
from dataclasses import dataclass
from typing import Any, Optional

from lnbits.core.crud import get_wallet
from lnbits.settings import settings
from loguru import logger

from .. import crud
from ..calculations import cost_basis_fiat_per_btc, format_fiat
from ..errors import BadInput
from ..models import (
    Alert,
    AlertMessage,
    AlertOut,
    LpAlertSettingsIn,
    OperatorAlertSettingsIn,
    alert_out,
)
from .access import operator_machine

# kind -> (on by default, what it is about). A rejection is usually the operator's
# own decision on a held payment: telling them about it is noise unless they ask.
OPERATOR_KINDS: dict[str, tuple[bool, str]] = {
    "settlement_errored": (True, "a settlement errored after its retries"),
    "settlement_stuck": (True, "a settlement pending or processing for too long"),
    "float_short": (True, "a machine's float is short of its pending legs"),
    "lamassu_unreachable": (True, "the Lamassu server is unreachable (backing off)"),
    "lamassu_lookback": (
        True,
        "the Lamassu server has been down for half its lookback or more",
    ),
    "unknown_device": (True, "transactions from an unknown or unpaired device"),
    "payment_held": (True, "a payment is held for the operator's decision"),
    "payment_rejected": (False, "a payment was rejected"),
    "leg_pending": (True, "an external payment has been pending too long"),
}
# Kinds that are about the operator's Lamassu server, not one machine.
SERVER_KINDS = ("lamassu_unreachable", "lamassu_lookback", "unknown_device")
LP_KINDS = (
    "deposit_confirmed",
    "payout_digest",
    "cycle_complete",
    "autoforward_failed",
)
DIGEST_SECONDS = {"hour": 3600, "day": 86_400, "week": 7 * 86_400}
# How far back an LP event is still news (a server down longer sends none of them).
EVENT_WINDOW_SECONDS = 7 * 86_400
# Events are looked for from here on in later passes: the first pass after start
# looks back over the whole window (whatever happened while the server was down),
# later ones only since the previous pass (less a margin), so the same events are
# not offered to the database again and again.
_last_pass_at: Optional[int] = None
PASS_MARGIN_SECONDS = 120
# The Lamassu poll counts as backing off from its second failure in a row.
LAMASSU_BACKOFF_FAILURES = 2


def page_link(tab: str) -> str:
    return f"{settings.lnbits_baseurl.rstrip('/')}/satmachineadmin/?tab={tab}"


# ---------------------------------------------------------------- settings


def operator_defaults() -> dict:
    return {
        "kinds": {kind: on for kind, (on, _) in OPERATOR_KINDS.items()},
        "machines": {},
        "stuck_minutes": 30,
        "leg_pending_minutes": 60,
        "errored_attempts": 3,
    }


def lp_defaults() -> dict:
    return LpAlertSettingsIn().dict()


async def operator_settings(user_id: str) -> dict:
    stored = (await crud.get_alert_settings(user_id)) or {}
    merged = operator_defaults()
    merged.update(stored.get("operator") or {})
    merged["kinds"] = {**operator_defaults()["kinds"], **merged.get("kinds", {})}
    return merged


async def lp_settings(user_id: str) -> dict:
    stored = (await crud.get_alert_settings(user_id)) or {}
    return {**lp_defaults(), **(stored.get("lp") or {})}


def kind_enabled(chosen: dict, kind: str, machine_id: Optional[str]) -> bool:
    """A machine's own choice, else the choice for all machines, else the default."""
    own = chosen.get("machines", {}).get(machine_id or "", {})
    if kind in own:
        return bool(own[kind])
    return bool(chosen.get("kinds", {}).get(kind, OPERATOR_KINDS[kind][0]))


def settings_out(chosen: dict) -> dict:
    return {
        **chosen,
        "available": [
            {"kind": kind, "default": on, "description": text}
            for kind, (on, text) in OPERATOR_KINDS.items()
        ],
    }


async def save_operator_settings(user_id: str, data: OperatorAlertSettingsIn) -> dict:
    unknown = [k for k in data.kinds if k not in OPERATOR_KINDS]
    for machine_id, kinds in data.machines.items():
        await operator_machine(user_id, machine_id)
        unknown += [k for k in kinds if k not in OPERATOR_KINDS]
    if unknown:
        raise BadInput(
            f"unknown alert kind {sorted(set(unknown))[0]!r}: one of "
            + ", ".join(OPERATOR_KINDS)
        )
    stored = (await crud.get_alert_settings(user_id)) or {}
    stored["operator"] = data.dict()
    await crud.save_alert_settings(user_id, stored)
    return await operator_settings(user_id)


async def save_lp_settings(user_id: str, data: LpAlertSettingsIn) -> dict:
    stored = (await crud.get_alert_settings(user_id)) or {}
    stored["lp"] = data.dict()
    await crud.save_alert_settings(user_id, stored)
    return await lp_settings(user_id)


# ---------------------------------------------------------------- history, health


async def history(user_id: str, audience: str, limit: int) -> list[AlertOut]:
    return [
        alert_out(alert, message)
        for alert, message in await crud.list_alerts(user_id, audience, limit)
    ]


async def delivery_health(user_id: str) -> dict:
    """For /health: the user's channels as LNbits would use them, and the messages
    still waiting (with the latest failure) — a failing channel is visible here."""
    from lnbits.core.crud.users import get_user

    user = await get_user(user_id)
    mine = user.extra.notifications if user else None
    summary = await crud.alert_delivery_summary(user_id)
    return {
        "channels": {
            "email": {
                "set": bool(mine and mine.email_address),
                "server_enabled": settings.is_email_notifications_configured(),
            },
            "telegram": {
                "set": bool(mine and mine.telegram_chat_id),
                "server_enabled": settings.is_telegram_notifications_configured(),
            },
            "nostr": {
                "set": bool(mine and mine.nostr_identifier),
                "server_enabled": settings.is_nostr_notifications_configured(),
            },
        },
        "queued": summary["queued"],
        "failing": summary["failing"],
        "oldest_queued_at": _iso(summary["oldest_queued_at"]),
        "last_error": summary["last_error"],
        "last_error_attempts": summary["last_error_attempts"],
        "next_attempt_at": _iso(summary["next_attempt_at"]),
    }


def _iso(epoch: Any) -> Optional[str]:
    from ..models import iso

    return iso(int(epoch)) if epoch is not None else None


# ---------------------------------------------------------------- detection


@dataclass
class Incident:
    key: str
    kind: str
    operator_user_id: str
    machine_id: Optional[str]
    subject: str
    body: str


def _message(alert: Alert, phase: str, subject: str, body: str) -> AlertMessage:
    return AlertMessage(
        id=crud.new_id(),
        alert_id=alert.id,
        user_id=alert.user_id,
        phase=phase,
        subject=subject,
        body=body,
        created_at=crud.now(),
    )


async def _record(
    key: str,
    kind: str,
    audience: str,
    user_id: str,
    operator_user_id: Optional[str],
    machine_id: Optional[str],
    subject: str,
    body: str,
    notify: bool,
    event: bool,
) -> bool:
    moment = crud.now()
    alert = Alert(
        id=crud.new_id(),
        incident_key=key,
        kind=kind,
        audience=audience,
        user_id=user_id,
        operator_user_id=operator_user_id,
        machine_id=machine_id,
        subject=subject,
        body=body,
        notify=notify,
        opened_at=moment,
        resolved_at=moment if event else None,
        updated_at=moment,
    )
    message = (
        _message(alert, "event" if event else "opened", subject, body)
        if notify
        else None
    )
    return await crud.open_alert(alert, message)


# Rows one incident query reads in a pass (all operators together).
INCIDENT_ROWS = 10_000


class _Names:
    def __init__(self, machines: list) -> None:
        self.machines = {m.id: m for m in machines}

    def machine(self, machine_id: Optional[str]) -> str:
        machine = self.machines.get(machine_id or "")
        return machine.name if machine else f"machine {(machine_id or '?')[:8]}"


class _Detection:
    """One pass over the operator incidents: every one the database shows now, by
    key. A section that could not be read puts its kinds in `failed` (their open
    incidents stay open)."""

    def __init__(self, names: "_Names", chosen: dict[str, dict], since: int) -> None:
        self.names = names
        self.chosen = chosen
        self.since = since
        self.now = crud.now()
        self.found: dict[str, Incident] = {}
        self.failed: set[str] = set()

    def add(
        self,
        kind: str,
        key: str,
        op: str,
        machine_id: Optional[str],
        what: str,
        body: str,
    ) -> None:
        tab = "lamassu" if kind in SERVER_KINDS else "settlements"
        if kind == "float_short":
            tab = "reports"
        self.found[key] = Incident(
            key=key,
            kind=kind,
            operator_user_id=op,
            machine_id=machine_id,
            subject=f"Sat Machine: {what}",
            body=f"{body}\n\nOpen the page: {page_link(tab)}",
        )

    def threshold(self, op: str, name: str) -> int:
        return int(self.chosen.get(op, operator_defaults())[name])

    def whole(self, kinds: tuple[str, ...], rows: list) -> list:
        """The rows of an incident query. One cut at its limit may leave incidents
        out (of any operator): none of those kinds is resolved this pass, rather
        than resolved by mistake."""
        if len(rows) >= INCIDENT_ROWS:
            logger.warning(
                f"satmachineadmin: {INCIDENT_ROWS}+ rows for {kinds}; none of them "
                "is resolved this pass"
            )
            self.failed.update(kinds)
        return rows

    async def run(self) -> None:
        sections: list[tuple[tuple[str, ...], Any]] = [
            (
                ("settlement_errored", "settlement_stuck", "payment_held"),
                self.settlements,
            ),
            (("float_short",), self.floats),
            (SERVER_KINDS, self.lamassu),
            (("leg_pending",), self.legs),
            (("payment_rejected",), self.rejected),
        ]
        for kinds, work in sections:
            try:
                await work()
            except Exception:
                logger.exception(f"satmachineadmin: alert detection of {kinds} failed")
                self.failed.update(kinds)

    async def settlements(self) -> None:
        # An errored settlement an engine is retrying right now (processing, the last
        # attempt's error kept) is still the same incident: it resolves when paid,
        # not at every retry (opened again at the next one).
        for s in self.whole(
            ("settlement_errored",),
            await crud.list_settlements_in(
                ["errored", "processing"], limit=INCIDENT_ROWS
            ),
        ):
            if s.status == "processing" and not s.error:
                continue
            if s.attempts < self.threshold(s.operator_user_id, "errored_attempts"):
                continue
            machine = self.names.machine(s.machine_id)
            self.add(
                "settlement_errored",
                f"settlement_errored:{s.id}",
                s.operator_user_id,
                s.machine_id,
                f"settlement errored at {machine}",
                f"Settlement {s.id} at {machine} "
                f"({format_fiat(s.fiat_amount_minor, s.currency)} {s.currency}, "
                f"{s.wire_sats} sats) errored after {s.attempts} attempts: "
                f"{s.error or 'no reason recorded'}",
            )
        for s in self.whole(
            ("settlement_stuck",),
            await crud.list_settlements_in(
                ["pending", "processing"], limit=INCIDENT_ROWS
            ),
        ):
            minutes = self.threshold(s.operator_user_id, "stuck_minutes")
            if s.updated_at >= self.now - minutes * 60:
                continue
            machine = self.names.machine(s.machine_id)
            self.add(
                "settlement_stuck",
                f"settlement_stuck:{s.id}",
                s.operator_user_id,
                s.machine_id,
                f"settlement stuck at {machine}",
                f"Settlement {s.id} at {machine} "
                f"({format_fiat(s.fiat_amount_minor, s.currency)} {s.currency}) has "
                f"been {s.status} without change for more than {minutes} minutes.",
            )
        for s in self.whole(
            ("payment_held",),
            await crud.list_settlements_in(["held"], limit=INCIDENT_ROWS),
        ):
            machine = self.names.machine(s.machine_id)
            self.add(
                "payment_held",
                f"payment_held:{s.id}",
                s.operator_user_id,
                s.machine_id,
                f"payment held at {machine}",
                f"A payment at {machine} "
                f"({format_fiat(s.fiat_amount_minor, s.currency)} {s.currency}, "
                f"{s.wire_sats} sats, settlement {s.id}) is held until you approve "
                f"or reject it: {s.error or ''}".rstrip(": "),
            )

    async def floats(self) -> None:
        needs = await crud.pending_needs_by_wallet()
        for machine in self.names.machines.values():
            need = needs.get(machine.wallet_id, 0)
            if need <= 0:
                continue
            wallet = await get_wallet(machine.wallet_id)
            balance = wallet.balance_msat // 1000 if wallet else 0
            if need <= balance:
                continue
            # What LNbits already took off the balance is not needed again.
            need -= await crud.unpaid_legs_lnbits_debited(machine.wallet_id)
            if need <= balance:
                continue
            self.add(
                "float_short",
                f"float_short:{machine.id}",
                machine.operator_user_id,
                machine.id,
                f"{machine.name} float short by {need - balance} sats",
                f"The float of {machine.name} is {balance} sats; its pending legs "
                f"need {need} sats. Add at least {need - balance} sats to its wallet "
                "and the waiting settlements are paid.",
            )

    async def lamassu(self) -> None:
        for row in await crud.list_lamassu_config_rows():
            op = row["operator_user_id"]
            if not row["enabled"]:
                continue
            failures = int(row["consecutive_failures"] or 0)
            if failures >= LAMASSU_BACKOFF_FAILURES:
                self.add(
                    "lamassu_unreachable",
                    f"lamassu_unreachable:{op}",
                    op,
                    None,
                    "Lamassu server unreachable",
                    f"The Lamassu server {row['host']} failed {failures} polls in a "
                    f"row; polls are backing off. Last error: {row['last_error']}",
                )
            lookback = int(row["lookback_hours"]) * 3600
            last_ok = row["last_success_at"] or row["created_at"]
            if failures and self.now - int(last_ok) >= lookback // 2:
                hours = (self.now - int(last_ok)) // 3600
                self.add(
                    "lamassu_lookback",
                    f"lamassu_lookback:{op}",
                    op,
                    None,
                    "Lamassu server down, approaching its lookback",
                    f"The Lamassu server {row['host']} has not answered for {hours} "
                    f"hours; its lookback is {row['lookback_hours']} hours. "
                    "Transactions older than the lookback may be missed.",
                )
            try:
                devices = json.loads(row["unknown_devices"] or "{}")
            except ValueError:
                devices = {}
            for device, info in devices.items():
                self.add(
                    "unknown_device",
                    f"unknown_device:{op}:{device}",
                    op,
                    None,
                    f"transactions from unlinked device {device[:16]}",
                    f"Lamassu device {device} has {info.get('transactions', 0)} "
                    f"transaction(s) that are not paid: {info.get('reason', '')}. "
                    "Link it to a machine (or pair it again in Lamassu).",
                )

    async def legs(self) -> None:
        for leg in self.whole(
            ("leg_pending",),
            await crud.list_in_flight_legs_before(self.now - 60, INCIDENT_ROWS),
        ):
            minutes = self.threshold(leg.operator_user_id, "leg_pending_minutes")
            if (leg.in_flight_since or self.now) >= self.now - minutes * 60:
                continue
            machine = self.names.machine(leg.machine_id)
            self.add(
                "leg_pending",
                f"leg_pending:{leg.id}",
                leg.operator_user_id,
                leg.machine_id,
                f"payment pending at {machine}",
                f"A {leg.leg_type} payment of {leg.amount_sats} sats from {machine} "
                f"to {leg.destination} has been pending for more than {minutes} "
                "minutes (the Lightning node has not answered).",
            )

    async def rejected(self) -> None:
        for s in self.whole(
            ("payment_rejected",),
            await crud.list_settlements_in(
                ["rejected"], _event_window(self.since), INCIDENT_ROWS
            ),
        ):
            machine = self.names.machine(s.machine_id)
            self.add(
                "payment_rejected",
                f"payment_rejected:{s.id}",
                s.operator_user_id,
                s.machine_id,
                f"payment rejected at {machine}",
                f"A payment at {machine} "
                f"({format_fiat(s.fiat_amount_minor, s.currency)} {s.currency}, "
                f"{s.wire_sats} sats, settlement {s.id}) was rejected: "
                f"{s.error or 'no reason recorded'}",
            )


def _event_window(since: int) -> int:
    now = crud.now()
    if _last_pass_at is not None:
        return max(since, _last_pass_at - PASS_MARGIN_SECONDS)
    return max(since, now - EVENT_WINDOW_SECONDS)


async def _lp_events(names: _Names, since: int, told: set[str]) -> int:
    """Record (and queue) every LP event since `since` not yet recorded; the LPs
    concerned are added to `told`."""
    window = _event_window(since)
    chosen: dict[str, dict] = {}
    recorded = 0

    async def lp(user_id: str) -> dict:
        if user_id not in chosen:
            chosen[user_id] = await lp_settings(user_id)
        return chosen[user_id]

    async def event(
        kind: str, key: str, user_id: str, machine_id: str, what: str, body: str
    ) -> None:
        nonlocal recorded
        machine = names.machines.get(machine_id)
        notify = bool((await lp(user_id)).get(kind, True))
        if await _record(
            key,
            kind,
            "lp",
            user_id,
            machine.operator_user_id if machine else None,
            machine_id,
            f"Sat Machine: {what}",
            f"{body}\n\nOpen the page: {page_link('lp')}",
            notify,
            event=True,
        ):
            recorded += 1
            told.add(user_id)

    for d in await crud.list_confirmed_deposits_since(window):
        machine = names.machine(d["machine_id"])
        amount = f"{format_fiat(d['amount_minor'], d['currency'])} {d['currency']}"
        await event(
            "deposit_confirmed",
            f"deposit_confirmed:{d['id']}",
            d["user_id"],
            d["machine_id"],
            f"deposit of {amount} confirmed at {machine}",
            f"Your deposit of {amount} at {machine} is confirmed; it is converted "
            "to sats as the machine is used.",
        )
    for client in await crud.list_cycle_complete_clients(window):
        machine = names.machine(client.machine_id)
        total = format_fiat(client.deposits_minor, _currency(names, client.machine_id))
        await event(
            "cycle_complete",
            f"cycle_complete:{client.id}:{client.deposits_minor}",
            client.user_id,
            client.machine_id,
            f"your cycle at {machine} is complete",
            f"All of your deposits at {machine} ({total} "
            f"{_currency(names, client.machine_id)}) are converted: "
            f"{client.sats_received} sats received in all.",
        )
    for leg in await crud.list_failed_autoforwards(window):
        machine = names.machine(leg["machine_id"])
        await event(
            "autoforward_failed",
            f"autoforward_failed:{leg['id']}",
            leg["user_id"],
            leg["machine_id"],
            f"autoforward of {leg['amount_sats']} sats failed",
            f"Forwarding {leg['amount_sats']} sats (from {machine}) to "
            f"{leg['destination']} failed: {leg['error'] or 'no reason given'}. "
            "The sats stay in your wallet; it is tried again a few times.",
        )
    # Not only since the last pass: a digest held back by its period is due later
    # whether or not anything else was paid in between.
    paid_since = max(since, crud.now() - EVENT_WINDOW_SECONDS)
    for user_id in await crud.lp_users_paid_since(paid_since):
        if await _payout_digest(names, user_id, since, await lp(user_id)):
            recorded += 1
            told.add(user_id)
    return recorded


def _currency(names: _Names, machine_id: str) -> str:
    machine = names.machines.get(machine_id)
    return machine.fiat_currency if machine else "XXX"


async def _payout_digest(names: _Names, user_id: str, since: int, chosen: dict) -> bool:
    """At most one digest per period: the LP's payouts completed since the last one
    (or since alerts began), summed per machine, with the average rate. The key
    holds the end of what it covers, so the next digest starts exactly there."""
    now = crud.now()
    last = await crud.latest_alert(user_id, "payout_digest")
    period = DIGEST_SECONDS.get(chosen.get("digest_period", "day"), 86_400)
    if last and now - last.opened_at < period:
        return False
    after = int(last.incident_key.split(":")[2]) if last else since - 1
    # Legs completing in this very second go to the next digest.
    until = now - 1
    rows = await crud.lp_payouts_between(user_id, after, until)
    if not rows or until <= after:
        return False
    lines = []
    total_sats = 0
    for row in rows:
        sats, fiat, currency = int(row["sats"]), int(row["fiat"]), row["currency"]
        total_sats += sats
        rate = cost_basis_fiat_per_btc(sats, fiat, currency) if currency else None
        lines.append(
            f"- {names.machine(row['machine_id'])}: {sats} sats in {row['legs']} "
            f"payment(s) for {format_fiat(fiat, currency)} {currency}"
            + (f", average rate {rate} {currency}/BTC" if rate is not None else "")
        )
    machine_id = rows[0]["machine_id"]
    machine = names.machines.get(machine_id)
    return await _record(
        f"payout_digest:{user_id}:{until}",
        "payout_digest",
        "lp",
        user_id,
        machine.operator_user_id if machine else None,
        machine_id if len(rows) == 1 else None,
        f"Sat Machine: you received {total_sats} sats",
        "Your payouts since the last summary:\n"
        + "\n".join(lines)
        + f"\n\nOpen the page: {page_link('lp')}",
        bool(chosen.get("payout_digest", True)),
        event=True,
    )


async def detect_once() -> dict[str, int]:
    """One pass: open new incidents, resolve cleared ones, record LP events.
    Returns the counts, and the users whose alerts changed are told live."""
    from .live import tell_users

    global _last_pass_at
    started = crud.now()
    since = await crud.get_alert_state("events_since") or started
    names = _Names(await crud.list_all_machines())
    operators = {m.operator_user_id for m in names.machines.values()}
    operators.update(
        r["operator_user_id"] for r in await crud.list_lamassu_config_rows()
    )
    chosen = {op: await operator_settings(op) for op in operators}
    detection = _Detection(names, chosen, since)
    await detection.run()
    found, failed = detection.found, detection.failed
    open_now = {alert.incident_key: alert for alert in await crud.list_open_incidents()}
    opened = resolved = 0
    touched: set[str] = set()
    for key, incident in found.items():
        if key in open_now:
            continue
        op = incident.operator_user_id
        notify = kind_enabled(
            chosen.get(op, operator_defaults()), incident.kind, incident.machine_id
        )
        if await _record(
            key,
            incident.kind,
            "operator",
            op,
            op,
            incident.machine_id,
            incident.subject,
            incident.body,
            notify,
            event=incident.kind == "payment_rejected",
        ):
            opened += 1
            touched.add(op)
    for key, alert in open_now.items():
        if key in found or alert.kind in failed:
            continue
        message = (
            _message(
                alert,
                "resolved",
                f"Resolved: {alert.subject}",
                f"Resolved: {alert.body}",
            )
            if alert.notify
            else None
        )
        if await crud.resolve_alert(alert.id, crud.now(), message):
            resolved += 1
            touched.add(alert.user_id)
    told_lps: set[str] = set()
    events = await _lp_events(names, since, told_lps)
    _last_pass_at = started
    if touched:
        await tell_users(touched, "alerts")
    if told_lps:
        await tell_users(told_lps, "lp")
    return {"opened": opened, "resolved": resolved, "events": events}
