"""Wiring only: the invoice listener and the periodic loops, each a thin call.

The listener shares LNbits' queue with every extension, so it filters and hands off:
landing a settlement runs in a task of its own, and payouts run in the engine loop.
SATMACHINE_ENGINE_AUTORUN=0 leaves the engine and sweep loops off (the test suite
drives them step by step), and with them the alert detector and sender; the listener
and the live-update loop (read-only) always run.
"""

import asyncio
import os

from lnbits.core.models import Payment
from lnbits.settings import settings
from loguru import logger

from . import bitspire, distribution, intake
from .engine import books, fixed_mode, payouts
from .lamassu import connection as lamassu_connection
from .lamassu import poller as lamassu_poller
from .services import alerts, live, notify

ENGINE_IDLE_SECONDS = 5
SWEEP_INTERVAL_SECONDS = 30
# SATMACHINE_SCHEDULER_SECONDS shortens it for tests.
SCHEDULER_INTERVAL_SECONDS = int(os.environ.get("SATMACHINE_SCHEDULER_SECONDS", "30"))
LAMASSU_TICK_SECONDS = 10
# Alerts: how often incidents are looked for and the outbox is emptied; how soon the
# page hears of a change (each shortened by its variable for tests).
ALERT_DETECT_SECONDS = int(os.environ.get("SATMACHINE_ALERT_DETECT_SECONDS", "30"))
ALERT_SEND_SECONDS = int(os.environ.get("SATMACHINE_ALERT_SEND_SECONDS", "10"))
LIVE_TICK_SECONDS = int(os.environ.get("SATMACHINE_LIVE_SECONDS", "2"))

# asyncio keeps only weak references to tasks: hold them until they finish.
_handoffs: set[asyncio.Task] = set()


def _hand_off(coro) -> asyncio.Task:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(coro)
    _handoffs.add(task)
    task.add_done_callback(_handoffs.discard)
    return task


async def on_invoice_paid(payment: Payment) -> None:
    if bitspire.is_candidate(payment):
        _hand_off(bitspire.handle_listener_payment(payment))
    elif (payment.extra or {}).get("source") != "satmachineadmin":
        # Possibly a float top-up: settlements waiting for float are retried now.
        _hand_off(distribution.on_wallet_credited(payment.wallet_id))


async def engine_loop() -> None:
    try:
        await books.restore_since_start_up_window()
    except Exception:
        logger.exception("satmachineadmin: start-up books pass failed")
    await distribution.reconcile_open_legs()
    while settings.lnbits_running:
        done = 0
        try:
            done = await distribution.run_due_settlements()
        except Exception:
            logger.exception("satmachineadmin: engine pass failed")
        # A pass that paid something looks again at once: more may have landed
        # meanwhile, possibly through another LNbits process, which wakes only itself.
        if not done:
            await intake.wait_for_work(ENGINE_IDLE_SECONDS)


async def sweep_once() -> None:
    # Credits first: an ATM payment LNbits wrote back as failed lands once restored.
    # A failing books pass must not keep cash-outs from landing: the sweep still runs.
    try:
        await books.restore_recent()
    except Exception:
        logger.exception("satmachineadmin: books pass failed")
    await bitspire.sweep_all()


async def lamassu_once() -> None:
    await lamassu_poller.poll_all_due()


async def scheduler_once() -> None:
    await fixed_mode.run_due_slots()
    await payouts.retry_standalone_legs()
    await payouts.forward_sweep()


async def alerts_detect_once() -> None:
    await alerts.detect_once()


async def alerts_send_once() -> None:
    await notify.send_due()


async def live_once() -> None:
    await live.publish_changes()


def autorun() -> bool:
    return os.environ.get("SATMACHINE_ENGINE_AUTORUN", "1") != "0"


def start_background_work() -> None:
    from lnbits.task_manager import task_manager

    task_manager.register_invoice_listener(on_invoice_paid, "ext_satmachineadmin")
    task_manager.create_permanent_task(
        live_once, name="satmachineadmin_live", interval=LIVE_TICK_SECONDS
    )
    if autorun():
        task_manager.create_permanent_task(
            alerts_detect_once,
            name="satmachineadmin_alerts",
            interval=ALERT_DETECT_SECONDS,
        )
        task_manager.create_permanent_task(
            alerts_send_once,
            name="satmachineadmin_alert_sender",
            interval=ALERT_SEND_SECONDS,
        )
        task_manager.create_permanent_task(engine_loop, name="satmachineadmin_engine")
        task_manager.create_permanent_task(
            sweep_once, name="satmachineadmin_sweep", interval=SWEEP_INTERVAL_SECONDS
        )
        task_manager.create_permanent_task(
            lamassu_once, name="satmachineadmin_lamassu", interval=LAMASSU_TICK_SECONDS
        )
        task_manager.create_permanent_task(
            scheduler_once,
            name="satmachineadmin_scheduler",
            interval=SCHEDULER_INTERVAL_SECONDS,
        )


def stop_background_work() -> None:
    from lnbits.task_manager import task_manager

    for name in (
        "ext_satmachineadmin_invoice_listener",
        "satmachineadmin_engine",
        "satmachineadmin_sweep",
        "satmachineadmin_scheduler",
        "satmachineadmin_lamassu",
        "satmachineadmin_live",
        "satmachineadmin_alerts",
        "satmachineadmin_alert_sender",
    ):
        task = task_manager.get_task(name)
        if task:
            task_manager.cancel_task(task)
    try:
        _hand_off(lamassu_connection.close_connections())
    except RuntimeError:  # no running loop: nothing is connected either
        pass
