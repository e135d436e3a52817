"""The operator's records and the LP's preferences: machines, enrolments (clients),
deposits; each change with its audit row (docs/api.md)."""

from lnbits.core.crud import get_account

from .. import crud
from ..calculations import MAX_CASH_MINOR
from ..errors import BadInput, Conflict, NotFound, Refused
from ..inputs import fiat_input
from ..models import (
    Client,
    CreateClient,
    CreateDeposit,
    CreateMachine,
    Deposit,
    LpPreferences,
    Machine,
    SetLpPreferences,
    UpdateClient,
    UpdateMachine,
)
from .access import operator_client, operator_machine, owned_wallet

# ---------------------------------------------------------------- machines


async def create_machine(operator_user_id: str, data: CreateMachine) -> Machine:
    await owned_wallet(operator_user_id, data.wallet_id)
    if await crud.get_machine_by_wallet(data.wallet_id):
        raise Conflict(f"wallet {data.wallet_id} already belongs to a machine")
    moment = crud.now()
    machine = Machine(
        id=crud.new_id(),
        operator_user_id=operator_user_id,
        name=data.name,
        wallet_id=data.wallet_id,
        fiat_currency=data.fiat_currency,
        machine_npub=data.machine_npub,
        lamassu_device_id=data.lamassu_device_id,
        # Start the payment sweep at creation: payments the wallet saw before it was
        # a machine are not ATM settlements of ours.
        sweep_cursor=moment,
        created_at=moment,
        updated_at=moment,
    )
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "machine.create",
        "machine",
        machine.id,
        data.dict(),
    ) as tx:
        await crud.insert_machine(tx, machine)
    return machine


async def update_machine(
    operator_user_id: str, machine_id: str, data: UpdateMachine
) -> Machine:
    machine = await operator_machine(operator_user_id, machine_id)
    changes = data.dict(exclude_unset=True)
    for required in ("name", "wallet_id", "fiat_currency", "status"):
        if required in changes and changes[required] is None:
            raise BadInput(f"{required}: may not be null")
    if "wallet_id" in changes and changes["wallet_id"] != machine.wallet_id:
        await owned_wallet(operator_user_id, changes["wallet_id"])
        other = await crud.get_machine_by_wallet(changes["wallet_id"])
        if other and other.id != machine.id:
            raise Conflict(
                f"wallet {changes['wallet_id']} already belongs to a machine"
            )
    if (
        "fiat_currency" in changes
        and changes["fiat_currency"] != machine.fiat_currency
        and await crud.list_clients(operator_user_id, machine.id)
    ):
        raise Conflict(
            "fiat_currency cannot change once LPs are enrolled: their balances are "
            f"in {machine.fiat_currency}"
        )
    updated = machine.copy(update={**changes, "updated_at": crud.now()})
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "machine.update",
        "machine",
        machine.id,
        changes,
    ) as tx:
        await crud.save_machine(tx, updated)
    return updated


# ---------------------------------------------------------------- LP preferences


async def set_lp_preferences(user_id: str, data: SetLpPreferences) -> LpPreferences:
    await owned_wallet(user_id, data.wallet_id)
    if data.dca_mode == "fixed" and not data.fixed_mode_daily_limit:
        raise BadInput("fixed_mode_daily_limit: required in fixed mode")
    if data.autoforward_enabled and not data.autoforward_ln_address:
        raise BadInput("autoforward_ln_address: required when autoforward is enabled")
    existing = await crud.get_lp_preferences(user_id)
    moment = crud.now()
    prefs = LpPreferences(
        user_id=user_id,
        wallet_id=data.wallet_id,
        dca_mode=data.dca_mode,
        fixed_mode_daily_limit=data.fixed_mode_daily_limit,
        autoforward_enabled=data.autoforward_enabled,
        autoforward_ln_address=data.autoforward_ln_address,
        created_at=existing.created_at if existing else moment,
        updated_at=moment,
    )
    async with crud.audited(
        user_id, None, "lp.preferences", "lp", user_id, data.dict()
    ) as tx:
        await crud.upsert_lp_preferences(tx, prefs)
    return prefs


# ---------------------------------------------------------------- clients


async def enrol_client(operator_user_id: str, data: CreateClient) -> Client:
    machine = await operator_machine(operator_user_id, data.machine_id)
    if not await get_account(data.user_id):
        raise NotFound(f"user {data.user_id} is not an LNbits user of this server")
    if await crud.get_client_by_machine_user(machine.id, data.user_id):
        raise Conflict(f"user {data.user_id} is already enrolled at this machine")
    moment = crud.now()
    client = Client(
        id=crud.new_id(),
        machine_id=machine.id,
        operator_user_id=operator_user_id,
        user_id=data.user_id,
        username=data.username,
        created_at=moment,
        updated_at=moment,
    )
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "client.create",
        "client",
        client.id,
        data.dict(),
    ) as tx:
        await crud.insert_client(tx, client)
    return client


async def update_client(
    operator_user_id: str, client_id: str, data: UpdateClient
) -> Client:
    client = await operator_client(operator_user_id, client_id)
    changes = data.dict(exclude_unset=True)
    if "status" in changes and changes["status"] is None:
        raise BadInput("status: may not be null")
    username = changes.get("username", client.username)
    status = changes.get("status") or client.status
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "client.update",
        "client",
        client.id,
        changes,
    ) as tx:
        await crud.update_client_fields(tx, client.id, username, status)
    return client.copy(update={"username": username, "status": status})


# ---------------------------------------------------------------- deposits


async def create_deposit(operator_user_id: str, data: CreateDeposit) -> Deposit:
    client = await operator_client(operator_user_id, data.client_id)
    machine = await operator_machine(operator_user_id, client.machine_id)
    amount_minor = fiat_input(data.amount, machine.fiat_currency, "amount")
    if amount_minor <= 0:
        raise BadInput("amount: must be greater than zero")
    if amount_minor > MAX_CASH_MINOR:
        raise BadInput("amount: is larger than any cash deposit this product accepts")
    if not await crud.get_lp_preferences(client.user_id):
        raise Refused(
            "this LP has not set their preferences yet (destination wallet and mode); "
            "nothing may accrue against them until they do"
        )
    deposit = Deposit(
        id=crud.new_id(),
        client_id=client.id,
        machine_id=machine.id,
        operator_user_id=operator_user_id,
        amount_minor=amount_minor,
        currency=machine.fiat_currency,
        notes=data.notes,
        created_at=crud.now(),
    )
    async with crud.audited(
        operator_user_id,
        operator_user_id,
        "deposit.create",
        "deposit",
        deposit.id,
        {"client_id": client.id, "amount_minor": amount_minor, "notes": data.notes},
    ) as tx:
        await crud.insert_deposit(tx, deposit)
    return deposit


async def confirm_deposit(operator_user_id: str, deposit_id: str) -> Deposit:
    """Only a confirmed deposit counts in the LP's balance, from this moment on."""
    return await _settle_pending_deposit(operator_user_id, deposit_id, "confirmed")


async def cancel_deposit(operator_user_id: str, deposit_id: str) -> Deposit:
    return await _settle_pending_deposit(operator_user_id, deposit_id, "cancelled")


async def _settle_pending_deposit(
    operator_user_id: str, deposit_id: str, outcome: str
) -> Deposit:
    """pending → confirmed or cancelled, once: a confirmed deposit may already have
    been paid out against, so it is never cancelled (nor confirmed twice)."""
    deposit = await crud.get_operator_deposit(operator_user_id, deposit_id)
    if not deposit:
        raise NotFound(f"deposit {deposit_id} not found")
    action = "deposit.confirm" if outcome == "confirmed" else "deposit.cancel"
    async with crud.audited(
        operator_user_id, operator_user_id, action, "deposit", deposit.id
    ) as tx:
        if not await crud.transition_deposit(tx, deposit.id, "pending", outcome):
            verb = "confirmed" if outcome == "confirmed" else "cancelled"
            reason = (
                f"deposit is {deposit.status}; only a pending deposit can be {verb}"
            )
            if outcome == "cancelled":
                reason += (
                    " (a confirmed deposit may already have been paid out against)"
                )
            raise Conflict(reason)
        if outcome == "confirmed":
            await crud.add_client_totals(
                tx, deposit.client_id, deposits_minor=deposit.amount_minor
            )
    settled = await crud.get_operator_deposit(operator_user_id, deposit_id)
    assert settled
    return settled
