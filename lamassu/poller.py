"""The Lamassu poller: read each operator's Lamassu PostgreSQL, land settlements.

The Lamassu server writes every transaction to its own PostgreSQL; there is no NOTIFY
for them, so each operator's configuration is polled. A poll reads the *successful*
cash-outs and cash-ins created within a window, maps each device to one of the
operator's active machines and hands every new transaction to intake.py (`rejected`
when its numbers cannot be used). The settlement's unique key (machine, "lamassu",
Lamassu tx id) makes reading a transaction again harmless.

The window (docs/sources.md, "Polling"). A redeem-later cash-out becomes successful
up to a day after `created`, so a poll always reads `lookback_hours` back. And a
cursor kept in the database (`cursor_at`: the Lamassu server's time up to which the
last successful poll read) makes an outage of any length lose nothing: the window
starts at min(now, cursor_at) - lookback_hours, so what was created during the outage
is read, and so is a transaction created shortly before it that became successful
during it. `start_at`, the operator's, bounds the window below: history before it is
never read. The cursor moves only after a successful poll, and only to where that
poll read up to (Lamassu's `now()` when it began).

Memory and time: a poll reads only (id, device_id, created) of the successful rows,
KEY_PAGE at a time in (created, id) order, drops those already landed, and fetches
full rows only for the rest, FETCH_BATCH at a time; so a catch-up after a long outage
never holds more than a page.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

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
    Catalog,
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
# Successful transactions' (id, device_id, created) read per query, and full rows
# fetched per query: what a poll holds at once, however long the window.
KEY_PAGE = 10_000
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
    # Where this poll read up to (Lamassu's clock): the next cursor.
    cursor: int | None = None


@dataclass
class Window:
    """What a poll reads: successful transactions created in [start, end)."""

    start: int  # epoch seconds, Lamassu's clock
    end: datetime  # Lamassu's now() when the poll began
    lookback: int  # seconds

    @property
    def end_epoch(self) -> int:
        return int(self.end.timestamp())

    @property
    def catching_up(self) -> bool:
        """Longer than the lookback by more than a day: after an outage, or from the
        start date (a steady poll's is longer by its interval only)."""
        return self.start < self.end_epoch - self.lookback - CLOCK_MARGIN_SECONDS


def window_start(config: LamassuConfig, now: int) -> int:
    """min(now, cursor) - lookback; from the start date on the first poll; never
    before the start date."""
    lookback = config.lookback_hours * 3600
    if config.cursor_at is not None:
        start = min(now, config.cursor_at) - lookback
    elif config.start_at is not None:
        start = config.start_at
    else:
        start = now - lookback
    if config.start_at is not None:
        start = max(start, config.start_at)
    return start


async def _window(conn: asyncpg.Connection, config: LamassuConfig) -> Window:
    rows = await read(conn, "SELECT now() AS now")
    end: datetime = rows[0]["now"]
    return Window(
        start=window_start(config, int(end.timestamp())),
        end=end,
        lookback=config.lookback_hours * 3600,
    )


@dataclass
class KeyPage:
    """One page of a window's successful transactions: ids only, by device."""

    by_device: dict[str, list[str]]  # device (lower case) -> Lamassu tx ids
    count: int
    newest: int | None  # the page's newest `created`
    last: tuple[datetime, str]  # its last (created, id): the next page starts after


async def _key_pages(
    conn: asyncpg.Connection, tx_type: str, window: Window
) -> AsyncIterator[KeyPage]:
    """The window's successful transactions, KEY_PAGE at a time in (created, id)
    order; each page is one query, resumed after the last (created, id), that answers
    one row per device (its ids as an array) rather than one per transaction."""
    where = f"created >= $1 AND created < $2 AND {SUCCESS[tx_type]} AND {CRYPTO_FILTER}"
    start = datetime.fromtimestamp(window.start, timezone.utc)
    after: tuple[datetime, str] | None = None
    while True:
        size = KEY_PAGE
        args: list[Any] = [start, window.end]
        if after is not None:
            where_after = f"{where} AND (created, id) > ($3, $4::uuid)"
            args += [after[0], after[1]]
        else:
            where_after = where
        args.append(size)
        rows = await read(
            conn,
            f"""
            WITH page AS (
                SELECT id, device_id, created FROM {TX_TABLES[tx_type]}
                WHERE {where_after}
                ORDER BY created, id LIMIT ${len(args)}
            ), last AS (
                SELECT created, id FROM page ORDER BY created DESC, id DESC LIMIT 1
            )
            SELECT page.device_id, array_agg(page.id::text) AS ids,
                   max(page.created) AS newest,
                   (SELECT created FROM last) AS last_created,
                   (SELECT id::text FROM last) AS last_id
            FROM page GROUP BY page.device_id
            """,
            *args,
        )
        if not rows:
            return
        by_device: dict[str, list[str]] = {}
        for row in rows:
            device = str(row["device_id"] or "").lower()
            by_device.setdefault(device, []).extend(row["ids"])
        newest = [epoch(row["newest"]) for row in rows]
        page = KeyPage(
            by_device=by_device,
            count=sum(len(row["ids"]) for row in rows),
            newest=max((n for n in newest if n is not None), default=None),
            last=(rows[0]["last_created"], rows[0]["last_id"]),
        )
        yield page
        if page.count < size:
            return
        after = page.last


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


# Per operator: (machine id, Lamassu tx id) this process has seen as a settlement,
# for the transactions the next poll will read again. Settlements are never deleted,
# so an entry can only save a lookup, never hide a transaction.
_known_cache: dict[str, set[tuple[str, str]]] = {}
# Above this many unchecked ids in a page one window query beats per-id lookups
# (not while catching up: that window, and the query's answer, have no bound).
WINDOW_QUERY_THRESHOLD = 2000


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


class _Poll:
    """One poll's state: what it found so far, page after page."""

    def __init__(
        self,
        config: LamassuConfig,
        conn: asyncpg.Connection,
        catalog: Catalog,
        unpaired: set[str],
        window: Window,
    ):
        self.config = config
        self.conn = conn
        self.catalog = catalog
        self.unpaired = unpaired
        self.window = window
        self.result = PollResult(ok=True)
        self.payable: dict[str, Machine] = {}  # device -> the machine it pays
        self.reasons: dict[str, str] = {}  # device -> why it is not paid
        self.unknown: dict[str, dict] = {}
        self.cached = _known_cache.get(config.operator_user_id, set())
        self.keep: set[tuple[str, str]] = set()  # cache for the next poll
        self.keep_since = window.end_epoch - window.lookback
        self.window_known: set[tuple[str, str]] = set()
        self.window_machines: set[str] = set()

    async def _resolve_devices(self, devices: Sequence[str]) -> None:
        new = sorted(
            d for d in devices if d not in self.payable and d not in self.reasons
        )
        if not new:
            return
        machines = await crud.get_machines_by_device(new)
        by_device = _operator_machines(self.config.operator_user_id, machines)
        for device in new:
            candidates = by_device.get(device, [])
            reason = _not_paid_reason(device, candidates, self.unpaired)
            if reason is None:
                self.payable[device] = next(
                    m for m in candidates if m.status == "active"
                )
            else:
                self.reasons[device] = reason

    async def _known(self, unchecked: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of `unchecked` (machine id, tx id) already are settlements."""
        if not unchecked:
            return set()
        machine_ids = {m for m, _ in unchecked}
        if len(unchecked) > WINDOW_QUERY_THRESHOLD and not self.window.catching_up:
            missing = sorted(machine_ids - self.window_machines)
            if missing:
                since = self.window.start - CLOCK_MARGIN_SECONDS
                self.window_known |= await crud.known_lamassu_external_ids(
                    missing, since
                )
                self.window_machines.update(missing)
            return self.window_known
        found: set[tuple[str, str]] = set()
        for start in range(0, len(unchecked), 500):
            chunk = unchecked[start : start + 500]
            found |= await crud.known_lamassu_settlements(
                sorted({m for m, _ in chunk}), [e for _, e in chunk]
            )
        return found

    async def page(self, tx_type: str, page: KeyPage) -> None:
        """Land what is new among one page of keys."""
        result = self.result
        result.found += page.count
        if page.newest is not None and (
            result.newest_created is None or page.newest > result.newest_created
        ):
            result.newest_created = page.newest
        # What the next poll reads again is cached (a page straddling that line whole).
        keep = page.newest is not None and page.newest >= self.keep_since
        await self._resolve_devices(list(page.by_device))

        candidates: list[tuple[str, str]] = []
        for device, ids in page.by_device.items():
            machine = self.payable.get(device)
            if machine is None:
                result.not_paid += len(ids)
                entry = self.unknown.setdefault(
                    device, {"transactions": 0, "reason": self.reasons[device]}
                )
                entry["transactions"] += len(ids)
                continue
            candidates += [(machine.id, tx_id) for tx_id in ids]
        unchecked = [key for key in candidates if key not in self.cached]
        known = await self._known(unchecked)
        todo: list[str] = []
        for key in candidates:
            if key in self.cached or key in known:
                result.already_known += 1
                if keep:
                    self.keep.add(key)
            else:
                todo.append(key[1])
        await self._fetch_and_land(tx_type, todo, keep)

    async def _fetch_and_land(
        self, tx_type: str, pending: list[str], keep: bool
    ) -> None:
        columns = select_list(tx_type, self.catalog)
        table = TX_TABLES[tx_type]
        for start in range(0, len(pending), FETCH_BATCH):
            rows = await read(
                self.conn,
                f"SELECT {columns} FROM {table} "
                f"WHERE id = ANY($1::uuid[]) AND {SUCCESS[tx_type]} "
                f"AND {CRYPTO_FILTER} ORDER BY created, id",
                pending[start : start + FETCH_BATCH],
            )
            fraction = await current_super_fee_fraction()
            drafts = []
            for row in rows:
                machine = self.payable.get(str(row["device_id"] or "").lower())
                if machine is None:  # the row moved to another device meanwhile
                    continue
                drafts.append(draft_row(tx_type, row, machine, fraction))
            if drafts:
                await _land_drafts(drafts, self.result)
            if keep:
                self.keep.update((d.machine_id, d.external_id) for d in drafts)

    def finish(self) -> PollResult:
        shown = sorted(
            self.unknown.items(), key=lambda kv: (-kv[1]["transactions"], kv[0])
        )
        self.result.unknown_devices = dict(shown[:MAX_UNKNOWN_DEVICES_SHOWN])
        self.result.cursor = self.window.end_epoch
        _known_cache[self.config.operator_user_id] = self.keep
        return self.result


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
    catalog = await inspect_catalog(conn)
    check_catalog(catalog, target)
    unpaired = await read_unpaired(conn, catalog)
    poll = _Poll(config, conn, catalog, unpaired, await _window(conn, config))
    for tx_type in TX_TABLES:
        async for page in _key_pages(conn, tx_type, poll.window):
            await poll.page(tx_type, page)
    return poll.finish()


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
        if result.cursor is not None:
            # Not if the settings, the cursor or the start date changed meanwhile.
            await crud.advance_lamassu_cursor(
                operator_user_id,
                result.cursor,
                updated_at=config.updated_at,
                old_cursor_at=config.cursor_at,
                start_at=config.start_at,
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
