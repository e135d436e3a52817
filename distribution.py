"""The distribution engine: pending settlements in, legs out, each paid exactly once.

Life of a settlement (how it lands is intake.py's job):
1. The engine claims it (`crud.claim_settlement`: one conditional UPDATE, so two
   workers or two LNbits processes never both take it; a dead worker's lease expires).
2. The first claim plans every leg (engine/planning.py, with the arithmetic of
   calculations.py) and writes all of them in one transaction, each with a
   deterministic idempotency key, *before* any is paid.
3. Each payable leg gets an invoice on its destination (stored on the row), then is
   paid from the source wallet, then its outcome is recorded (engine/payouts.py).
4. A crash anywhere leaves rows that say what to do next: `reconcile_leg` asks LNbits
   whether the leg's invoice was paid before paying anything again.
"""

import asyncio
import os
import random
import time
from typing import Optional

from loguru import logger

from . import crud
from .calculations import retry_delay
from .engine import payouts
from .engine.faults import EngineCrash, checkpoint
from .engine.payouts import (
    Claim,
    ClaimLost,
    forward_quietly,
    pay_legs,
    reconcile_leg,
)
from .engine.planning import ensure_plan
from .engine.small_balances import auto_settle_after
from .intake import wake_engine
from .models import Leg, Machine, Settlement

# How long a claim on a settlement lasts before another worker may take it over (a
# worker that died mid-distribution). SATMACHINE_LEASE_SECONDS shortens it for tests
# that kill the server process and restart it.
LEASE_SECONDS = int(os.environ.get("SATMACHINE_LEASE_SECONDS", "120"))
# How many machines one process pays at the same time (one settlement in flight per
# machine). The wait on each payment is mostly I/O, so a few overlap well in one
# process; more processes are what scale the CPU (README, "Scale-out").
MACHINES_IN_FLIGHT = max(1, int(os.environ.get("SATMACHINE_ENGINE_CONCURRENCY", "4")))


async def process_settlement(settlement_id: str) -> Optional[str]:
    """Claim, plan (once) and pay one settlement. Returns its final status, or None
    when another worker holds it or it is not due."""
    token = crud.new_id()
    if not await crud.claim_settlement(settlement_id, token, LEASE_SECONDS):
        return None
    # The lease started now, not after planning: renewals count from here.
    extended_at = time.monotonic()
    checkpoint("after_claim")
    settlement = await crud.get_settlement(settlement_id)
    assert settlement
    machine = await crud.get_machine(settlement.machine_id)
    try:
        if machine is None:
            raise RuntimeError("machine no longer exists")
        legs = await ensure_plan(settlement, machine)
        checkpoint("after_plan")
        claim = Claim(token, LEASE_SECONDS)

        async def keep_claim() -> None:
            # Renew the lease well before it runs out, not after every payment; a
            # renewal refused means another worker owns the settlement now.
            nonlocal extended_at
            if time.monotonic() - extended_at > LEASE_SECONDS / 4:
                if not await crud.extend_claim(settlement_id, token, LEASE_SECONDS):
                    raise ClaimLost(f"settlement {settlement_id}: lease lost")
                extended_at = time.monotonic()

        open_at = [
            i for i, leg in enumerate(legs) if leg.status in ("pending", "failed")
        ]
        for start in range(0, len(open_at), payouts.PAY_BATCH):
            batch = open_at[start : start + payouts.PAY_BATCH]
            # pay_legs returns the rows as they now stand: nothing is read back.
            paid = await pay_legs([legs[i] for i in batch], claim, keep_claim)
            for i, leg in zip(batch, paid, strict=True):
                legs[i] = leg
        await forward_quietly(legs)
    except EngineCrash:
        raise
    except ClaimLost as exc:
        # Not ours any more: no outcome is written (the new owner writes it).
        logger.warning(f"satmachineadmin: {exc}; this worker stops paying")
        return None
    except Exception as exc:
        logger.exception(f"satmachineadmin: settlement {settlement_id} errored")
        await _finish_errored(settlement, token, f"engine error: {exc}")
        return "errored"
    return await _finish(settlement, token, machine, legs)


async def _finish(
    settlement: Settlement, token: str, machine: Machine, legs: list[Leg]
) -> str:
    """`legs` is the plan (no autoforwards: their failures never hold a settlement)."""
    open_legs = [leg for leg in legs if leg.status in ("pending", "failed")]
    if not open_legs:
        await crud.finish_settlement(settlement.id, token, "processed", None)
        await after_processed(settlement, machine)
        return "processed"
    failed = [leg for leg in open_legs if leg.status == "failed"]
    in_flight = [leg for leg in open_legs if leg.in_flight_since is not None]
    if any(_is_insufficient(leg.error) for leg in failed):
        need = sum(payouts.float_need(leg) for leg in open_legs)
        reason = f"insufficient float: need {need} sats"
    elif in_flight and len(in_flight) == len(open_legs):
        reason = (
            f"waiting for {len(in_flight)} payment(s) in flight: LNbits reports them "
            f"pending; asked again every {payouts.PENDING_RECHECK_SECONDS} s"
        )
    else:
        reason = "; ".join(
            f"{leg.leg_type} leg {leg.id[:8]}: {leg.error or leg.status}"
            for leg in open_legs
        )
    # A payment in flight is asked about again soon, whatever the attempts so far.
    delay = payouts.PENDING_RECHECK_SECONDS if in_flight else None
    await _finish_errored(settlement, token, reason, delay)
    return "errored"


async def _finish_errored(
    settlement: Settlement, token: str, reason: str, delay: Optional[int] = None
) -> None:
    current = await crud.get_settlement(settlement.id)
    attempts = current.attempts if current else 1
    if delay is None:
        delay = retry_delay(attempts)
    else:
        delay = min(delay, retry_delay(attempts))
    await crud.finish_settlement(
        settlement.id, token, "errored", reason[:1000], crud.now() + delay
    )


def _is_insufficient(error: Optional[str]) -> bool:
    return bool(error) and "insufficient" in (error or "").lower()


async def run_due_settlements(limit: int = 100) -> int:
    """One engine pass: every settlement that is pending, due for retry or abandoned.

    Machines are paid concurrently, at most MACHINES_IN_FLIGHT at a time, and each
    machine's settlements one after the other, oldest first, so that its float is
    spent in order. A claim refused (another worker, maybe another LNbits process,
    has that machine's settlement) leaves the machine to that worker for this pass.
    Each pass starts at a random machine: two processes begin on different ones."""
    by_machine: dict[str, list[str]] = {}
    for settlement_id, machine_id in await crud.list_due_settlement_refs(limit):
        by_machine.setdefault(machine_id, []).append(settlement_id)
    queues = list(by_machine.values())
    if not queues:
        return 0
    start = random.randrange(len(queues))
    queues = queues[start:] + queues[:start]

    errors: list[Exception] = []

    async def machine_worker() -> int:
        done = 0
        while queues:
            try:
                for settlement_id in queues.pop(0):
                    if not await process_settlement(settlement_id):
                        break
                    done += 1
            except Exception as exc:
                # (The database gone, say.) This machine waits for the next pass; the
                # others in flight finish what they are paying.
                errors.append(exc)
        return done

    workers = [
        asyncio.create_task(machine_worker())
        for _ in range(min(MACHINES_IN_FLIGHT, len(queues)))
    ]
    try:
        done = sum(await asyncio.gather(*workers))
    finally:
        # EngineCrash (a BaseException: a killed process, in tests) stops every
        # worker at once, and they are gone before it leaves the pass.
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if errors:
        raise errors[0]
    return done


async def after_processed(settlement: Settlement, machine: Machine) -> None:
    """Auto-settlement follows a completed distribution; its failures stay its own."""
    try:
        await auto_settle_after(settlement, machine)
    except Exception:
        logger.exception(
            f"satmachineadmin: auto-settlement after {settlement.id} failed"
        )


async def reconcile_open_legs() -> int:
    """Start-up: before paying anything, settle every in-flight leg against LNbits."""
    fixed = 0
    for status in ("pending", "failed"):
        for leg in await crud.list_legs_by_status(status, limit=100_000):
            if leg.payment_hash and (await reconcile_leg(leg)).status == "completed":
                fixed += 1
    if fixed:
        logger.info(f"satmachineadmin: reconciled {fixed} legs paid before a restart")
    return fixed


async def on_wallet_credited(wallet_id: str) -> None:
    machine = await crud.get_machine_by_wallet(wallet_id)
    if machine and await crud.make_errored_due(machine.id):
        wake_engine()
