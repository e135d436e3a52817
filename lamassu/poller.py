"""The Lamassu poller: read each operator's Lamassu PostgreSQL, land settlements.

The Lamassu server writes every transaction to its own PostgreSQL; there is no NOTIFY
for them, so each operator's configuration is polled. A poll reads, within a lookback
window of `created`, the *successful* cash-outs and cash-ins, maps each device to one
of the operator's active machines and hands every new transaction to intake.py
(`rejected` when its numbers cannot be used). The settlement's unique key (machine,
"lamassu", Lamassu tx id) makes polling the same window again harmless; no cursor is
needed and none could be trusted, because a redeem-later cash-out becomes successful
up to a day after `created`.

Efficiency: a poll first reads only (id, device_id, created) of the successful rows in
the window, drops those already landed with one query on our side, and fetches full
rows only for the rest, in batches.
"""

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from loguru import logger

from .. import crud
from ..calculations import RETRY_MAX_SECONDS, retry_delay
from ..intake import current_super_fee_fraction, land_batch
from ..models import Machine, Settlement
from . import connection
from .config import LamassuConfig, require_config, status_out
from .connection import (
    CRYPTO_FILTER,
    SUCCESS,
    TX_TABLES,
    Target,
    check_catalog,
    close_quietly,
    decrypt_password,
    describe_failure,
    inspect_catalog,
    keep_connection,
    poll_connection,
    read,
    read_unpaired,
    select_list,
)
from .mapping import SOURCE, draft_row, epoch

# While a poll runs its row is leased this long: another LNbits process on the same
# database skips it, and a poller that died is retried after the lease.
POLL_LEASE_SECONDS = 600
FETCH_BATCH = 1000
MAX_UNKNOWN_DEVICES_SHOWN = 100
# Our clock and Lamassu's may differ; settlements landed this long before the window
# are still consulted when skipping known transactions.
CLOCK_MARGIN_SECONDS = 86_400
POLL_CONCURRENCY = 4


@dataclass
class PollResult:
    ok: bool
    found: int = 0
    new: int = 0
    rejected: int = 0
    already_known: int = 0
    not_paid: int = 0
    error: str | None = None
    duration_ms: int = 0
    unknown_devices: dict[str, dict] = field(default_factory=dict)
    newest_created: int | None = None


@dataclass
class _Keys:
    """Successful transactions in the window, grouped by device: ids only."""

    by_device: dict[str, list[tuple[str, str]]]  # device -> [(tx_type, tx id)]
    found: int = 0
    newest: int | None = None


async def _successful_keys(conn: asyncpg.Connection, lookback_hours: int) -> _Keys:
    keys = _Keys(by_device={})
    for tx_type, table in TX_TABLES.items():
        rows = await read(
            conn,
            f"SELECT device_id, array_agg(id::text) AS ids, max(created) AS newest "
            f"FROM {table} "
            "WHERE created >= now() - make_interval(hours => $1) "
            f"AND {SUCCESS[tx_type]} AND {CRYPTO_FILTER} GROUP BY device_id",
            lookback_hours,
        )
        for row in rows:
            device = str(row["device_id"] or "").lower()
            ids = row["ids"]
            keys.by_device.setdefault(device, []).extend((tx_type, i) for i in ids)
            keys.found += len(ids)
            newest = epoch(row["newest"])
            if newest is not None and (keys.newest is None or newest > keys.newest):
                keys.newest = newest
    return keys


def _operator_machines(
    operator_user_id: str, machines: Sequence[Machine]
) -> dict[str, list[Machine]]:
    by_device: dict[str, list[Machine]] = {}
    for machine in machines:
        if (
            machine.operator_user_id != operator_user_id
            or not machine.lamassu_device_id
        ):
            continue
        by_device.setdefault(machine.lamassu_device_id.lower(), []).append(machine)
    return by_device


def _not_paid_reason(
    device: str, machines: list[Machine], unpaired: set[str]
) -> str | None:
    if device in unpaired:
        return "unpaired in Lamassu: its transactions are not paid"
    if not machines:
        return "not linked to any of your machines (set lamassu_device_id on one)"
    active = [m for m in machines if m.status == "active"]
    if not active:
        return f"machine {machines[0].id} is inactive"
    if len(active) > 1:
        return "linked to more than one of your active machines: unlink all but one"
    return None


# Per operator: (machine id, Lamassu tx id) this process has seen as a settlement.
# Settlements are never deleted, so an entry can only save a lookup, never hide a
# transaction; each successful poll keeps only what is still in the window.
_known_cache: dict[str, set[tuple[str, str]]] = {}
# Above this many unchecked ids one window query beats per-id lookups.
WINDOW_QUERY_THRESHOLD = 2000


async def _known_keys(
    config: LamassuConfig, unchecked: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of `unchecked` (machine id, tx id) already are settlements."""
    if not unchecked:
        return set()
    machine_ids = sorted({m for m, _ in unchecked})
    if len(unchecked) > WINDOW_QUERY_THRESHOLD:
        since = int(time.time()) - config.lookback_hours * 3600 - CLOCK_MARGIN_SECONDS
        return await crud.known_lamassu_external_ids(machine_ids, since)
    found: set[tuple[str, str]] = set()
    for start in range(0, len(unchecked), 500):
        chunk = unchecked[start : start + 500]
        found |= await crud.known_lamassu_settlements(
            sorted({m for m, _ in chunk}), [e for _, e in chunk]
        )
    return found


async def _land_drafts(drafts: list[Settlement], result: PollResult) -> None:
    try:
        landed = await land_batch(drafts)
    except Exception:
        # Another poller (manual poll, second process) inserted one of them first and
        # the unique key refused the whole batch: land them one by one instead.
        landed = []
        for draft in drafts:
            try:
                landed += await land_batch([draft])
            except Exception:
                if not await crud.find_settlement(
                    draft.machine_id, SOURCE, draft.external_id
                ):
                    raise
    result.new += len(landed)
    result.rejected += sum(1 for s in landed if s.status == "rejected")
    result.already_known += len(drafts) - len(landed)


def _classify_devices(
    keys: _Keys, by_device: dict[str, list[Machine]], unpaired: set[str]
) -> tuple[dict[str, Machine], dict[str, dict]]:
    payable: dict[str, Machine] = {}
    unknown: dict[str, dict] = {}
    for device, ids in keys.by_device.items():
        reason = _not_paid_reason(device, by_device.get(device, []), unpaired)
        if reason is None:
            payable[device] = next(m for m in by_device[device] if m.status == "active")
        else:
            unknown[device] = {"transactions": len(ids), "reason": reason}
    shown = sorted(unknown.items(), key=lambda kv: (-kv[1]["transactions"], kv[0]))
    return payable, dict(shown[:MAX_UNKNOWN_DEVICES_SHOWN])


async def run_poll(config: LamassuConfig, target: Target) -> PollResult:
    """Read the window and land what is new. Raises on any connection/query failure.

    A kept connection that fails (the server restarted, an idle timeout closed it) is
    replaced by a fresh one once, so only a real problem counts as a failed poll.
    """
    conn, reused = await poll_connection(config.operator_user_id, target)
    try:
        try:
            result = await _poll_on(conn, config, target)
        except Exception:
            if not reused:
                raise
            await close_quietly(conn)
            conn = await connection.connect(target)
            result = await _poll_on(conn, config, target)
    except BaseException:
        conn.terminate()
        raise
    await keep_connection(
        config.operator_user_id, target, conn, config.poll_interval_seconds
    )
    return result


async def _poll_on(
    conn: asyncpg.Connection, config: LamassuConfig, target: Target
) -> PollResult:
    result = PollResult(ok=True)
    catalog = await inspect_catalog(conn)
    check_catalog(catalog, target)
    keys = await _successful_keys(conn, config.lookback_hours)
    unpaired = await read_unpaired(conn, catalog)
    result.found = keys.found
    result.newest_created = keys.newest

    machines = await crud.get_machines_by_device(sorted(keys.by_device))
    by_device = _operator_machines(config.operator_user_id, machines)
    payable, result.unknown_devices = _classify_devices(keys, by_device, unpaired)
    result.not_paid = sum(
        len(ids) for d, ids in keys.by_device.items() if d not in payable
    )

    cache = _known_cache.get(config.operator_user_id, set())
    candidates = [
        (tx_type, machine.id, tx_id)
        for device, machine in payable.items()
        for tx_type, tx_id in keys.by_device[device]
    ]
    unchecked = [(m, t) for _, m, t in candidates if (m, t) not in cache]
    known = cache | await _known_keys(config, unchecked)
    todo: dict[str, list[str]] = {"cash_out": [], "cash_in": []}
    for tx_type, machine_id, tx_id in candidates:
        if (machine_id, tx_id) in known:
            result.already_known += 1
        else:
            todo[tx_type].append(tx_id)

    for tx_type, pending in todo.items():
        columns = select_list(tx_type, catalog)
        table = TX_TABLES[tx_type]
        for start in range(0, len(pending), FETCH_BATCH):
            rows = await read(
                conn,
                f"SELECT {columns} FROM {table} "
                f"WHERE id = ANY($1::uuid[]) AND {SUCCESS[tx_type]} "
                f"AND {CRYPTO_FILTER} ORDER BY created, id",
                pending[start : start + FETCH_BATCH],
            )
            fraction = await current_super_fee_fraction()
            drafts = []
            for row in rows:
                machine = payable.get(str(row["device_id"] or "").lower())
                if machine is None:  # the row moved to another device meanwhile
                    continue
                drafts.append(draft_row(tx_type, row, machine, fraction))
            if drafts:
                await _land_drafts(drafts, result)
            known.update((d.machine_id, d.external_id) for d in drafts)
    window = {(m, t) for _, m, t in candidates}
    _known_cache[config.operator_user_id] = known & window
    return result


_locks: dict[str, asyncio.Lock] = {}


def _lock(operator_user_id: str) -> asyncio.Lock:
    lock = _locks.get(operator_user_id)
    if lock is None:
        lock = _locks[operator_user_id] = asyncio.Lock()
    return lock


def backoff_seconds(interval: int, failures: int) -> int:
    """min(interval * 2^failures, 1 h); never shorter than the interval itself."""
    return retry_delay(failures + 1, interval, RETRY_MAX_SECONDS)


async def poll_operator(operator_user_id: str) -> PollResult:
    """Poll one operator's Lamassu now; the outcome is kept in the status row.

    Never raises for a Lamassu problem: the error is stored (scrubbed) and the next
    poll is pushed back exponentially.
    """
    async with _lock(operator_user_id):
        config = await require_config(operator_user_id)
        started = time.monotonic()
        moment = crud.now()
        target = Target.of(config)
        try:
            target.password = decrypt_password(config.password_encrypted)
            result = await run_poll(config, target)
        except BaseException as exc:
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            _, message = describe_failure(exc, target)
            failures = config.consecutive_failures + 1
            delay = backoff_seconds(config.poll_interval_seconds, failures)
            await crud.save_lamassu_poll_status(
                operator_user_id,
                {
                    "last_poll_at": moment,
                    "last_error": message[:2000],
                    "consecutive_failures": failures,
                    "next_poll_at": crud.now() + delay,
                },
            )
            logger.warning(
                f"satmachineadmin: Lamassu poll for operator {operator_user_id} failed "
                f"({failures} in a row, next try in {delay} s): {message}"
            )
            return PollResult(
                ok=False,
                error=message,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        result.duration_ms = int((time.monotonic() - started) * 1000)
        await crud.save_lamassu_poll_status(
            operator_user_id,
            {
                "last_poll_at": moment,
                "last_success_at": crud.now(),
                "last_error": None,
                "last_found": result.found,
                "last_new": result.new,
                "unknown_devices": json.dumps(result.unknown_devices, sort_keys=True),
                "newest_created_seen": result.newest_created
                if result.newest_created is not None
                else config.newest_created_seen,
                "consecutive_failures": 0,
                "next_poll_at": crud.now() + config.poll_interval_seconds,
            },
        )
        if result.new:
            logger.info(
                f"satmachineadmin: Lamassu poll for operator {operator_user_id}: "
                f"{result.new} new ({result.rejected} rejected) of {result.found} "
                f"in the window, {result.duration_ms} ms"
            )
        return result


async def poll_all_due() -> None:
    """Poll every enabled configuration whose next_poll_at has come (tasks.py loop).

    Each due row is claimed with a conditional UPDATE first, so two LNbits processes
    on one database never poll the same operator at once. Never raises.
    """
    try:
        moment = crud.now()
        due = [
            LamassuConfig.parse_obj(dict(r))
            for r in await crud.list_due_lamassu_configs(moment)
        ]
        semaphore = asyncio.Semaphore(POLL_CONCURRENCY)

        async def one(config: LamassuConfig) -> None:
            async with semaphore:
                try:
                    if not await crud.claim_lamassu_poll(
                        config.operator_user_id,
                        config.next_poll_at,
                        moment + POLL_LEASE_SECONDS,
                    ):
                        return
                    await poll_operator(config.operator_user_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Our own database failed; Lamassu errors never get here.
                    logger.warning(
                        "satmachineadmin: Lamassu poll for operator "
                        f"{config.operator_user_id} could not run: "
                        f"{type(exc).__name__}"
                    )

        await asyncio.gather(*(one(c) for c in due))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning(
            f"satmachineadmin: Lamassu poller tick failed: {type(exc).__name__}"
        )


def poll_out(result: PollResult, config: LamassuConfig | None) -> dict:
    return {
        "ok": result.ok,
        "found": result.found,
        "new": result.new,
        "rejected": result.rejected,
        "already_known": result.already_known,
        "not_paid": result.not_paid,
        "error": result.error,
        "duration_ms": result.duration_ms,
        "status": status_out(config),
    }
