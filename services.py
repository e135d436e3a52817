"""Operator, LP and super-user actions: the rules of api.md, with an audit row each.

The API layer authenticates and hands over the caller's user id; everything here
re-checks ownership against the database, so a service called from a script or a test
is as safe as one called through HTTP.
"""

from decimal import Decimal, InvalidOperation
from typing import Optional

from lnbits.core.crud import get_account, get_wallet, get_wallet_for_key
from lnbits.core.models import Wallet

from . import crud
from .calculations import FiatError, parse_fiat, validate_percents
from .errors import BadInput, Conflict, Forbidden, NotFound, Refused
from .models import (
    Client,
    CommissionRule,
    CreateClient,
    CreateDeposit,
    CreateMachine,
    Deposit,
    LpPreferences,
    Machine,
    PlatformConfig,
    SetLpPreferences,
    UpdateClient,
    UpdateMachine,
)

MAX_FIAT_MINOR = 10**13


def to_minor(amount: str, currency: str, field: str = "amount") -> int:
    try:
        return parse_fiat(amount, currency)
    except FiatError as exc:
        raise BadInput(f"{field}: {exc}") from None


async def owned_wallet(
    user_id: str, wallet_id: str, field: str = "wallet_id"
) -> Wallet:
    """The wallet, if the caller owns it; a 403 that leaks nothing otherwise."""
    wallet = await get_wallet(wallet_id) if wallet_id else None
    if not wallet or wallet.user != user_id or wallet.deleted:
        raise Forbidden(f"{field}: wallet {wallet_id} is not one of your wallets")
    return wallet


async def operator_machine(operator_user_id: str, machine_id: str) -> Machine:
    machine = await crud.get_operator_machine(operator_user_id, machine_id)
    if not machine:
        raise NotFound(f"machine {machine_id} not found")
    return machine


async def operator_client(operator_user_id: str, client_id: str) -> Client:
    client = await crud.get_operator_client(operator_user_id, client_id)
    if not client:
        raise NotFound(f"client {client_id} not found")
    return client


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
    async with crud.transaction() as tx:
        await crud.insert_machine(tx, machine)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "machine.create",
            "machine",
            machine.id,
            data.dict(),
        )
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
    async with crud.transaction() as tx:
        await crud.save_machine(tx, updated)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "machine.update",
            "machine",
            machine.id,
            changes,
        )
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
    async with crud.transaction() as tx:
        await crud.upsert_lp_preferences(tx, prefs)
        await crud.add_audit(
            tx, user_id, None, "lp.preferences", "lp", user_id, data.dict()
        )
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
    async with crud.transaction() as tx:
        await crud.insert_client(tx, client)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "client.create",
            "client",
            client.id,
            data.dict(),
        )
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
    async with crud.transaction() as tx:
        await crud.update_client_fields(tx, client.id, username, status)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "client.update",
            "client",
            client.id,
            changes,
        )
    return client.copy(update={"username": username, "status": status})


# ---------------------------------------------------------------- deposits


async def create_deposit(operator_user_id: str, data: CreateDeposit) -> Deposit:
    client = await operator_client(operator_user_id, data.client_id)
    machine = await operator_machine(operator_user_id, client.machine_id)
    amount_minor = to_minor(data.amount, machine.fiat_currency)
    if amount_minor <= 0:
        raise BadInput("amount: must be greater than zero")
    if amount_minor > MAX_FIAT_MINOR:
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
    async with crud.transaction() as tx:
        await crud.insert_deposit(tx, deposit)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "deposit.create",
            "deposit",
            deposit.id,
            {"client_id": client.id, "amount_minor": amount_minor, "notes": data.notes},
        )
    return deposit


async def confirm_deposit(operator_user_id: str, deposit_id: str) -> Deposit:
    deposit = await crud.get_operator_deposit(operator_user_id, deposit_id)
    if not deposit:
        raise NotFound(f"deposit {deposit_id} not found")
    async with crud.transaction() as tx:
        if not await crud.transition_deposit(tx, deposit.id, "pending", "confirmed"):
            raise Conflict(
                f"deposit is {deposit.status}; only a pending deposit can be confirmed"
            )
        await crud.add_client_totals(
            tx, deposit.client_id, deposits_minor=deposit.amount_minor
        )
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "deposit.confirm",
            "deposit",
            deposit.id,
        )
    confirmed = await crud.get_operator_deposit(operator_user_id, deposit_id)
    assert confirmed
    return confirmed


async def cancel_deposit(operator_user_id: str, deposit_id: str) -> Deposit:
    deposit = await crud.get_operator_deposit(operator_user_id, deposit_id)
    if not deposit:
        raise NotFound(f"deposit {deposit_id} not found")
    async with crud.transaction() as tx:
        if not await crud.transition_deposit(tx, deposit.id, "pending", "cancelled"):
            raise Conflict(
                f"deposit is {deposit.status}; only a pending deposit can be cancelled "
                "(a confirmed deposit may already have been paid out against)"
            )
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "deposit.cancel",
            "deposit",
            deposit.id,
        )
    cancelled = await crud.get_operator_deposit(operator_user_id, deposit_id)
    assert cancelled
    return cancelled


# ---------------------------------------------------------------- platform config


def parse_fraction(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise BadInput("super_fee_fraction: must be a decimal between 0 and 1")
    try:
        fraction = Decimal(str(value))
    except InvalidOperation:
        raise BadInput(
            "super_fee_fraction: must be a decimal between 0 and 1"
        ) from None
    if not fraction.is_finite() or fraction < 0 or fraction > 1:
        raise BadInput("super_fee_fraction: must be between 0 and 1")
    if fraction.as_tuple().exponent < -8:  # type: ignore[operator]
        raise BadInput("super_fee_fraction: at most 8 decimal places")
    return fraction


async def set_platform_config(
    super_user_id: str, fraction: Decimal, fee_wallet_id: Optional[str]
) -> PlatformConfig:
    if fee_wallet_id:
        await owned_wallet(super_user_id, fee_wallet_id, "fee_wallet_id")
    config = PlatformConfig(
        super_fee_fraction=str(fraction),
        fee_wallet_id=fee_wallet_id or None,
        updated_at=crud.now(),
    )
    async with crud.transaction() as tx:
        await crud.save_platform_config(tx, config)
        await crud.add_audit(
            tx,
            super_user_id,
            None,
            "platform.config",
            "platform",
            "1",
            {"super_fee_fraction": str(fraction), "fee_wallet_id": fee_wallet_id},
        )
    return config


# ---------------------------------------------------------------- commission rules


async def resolve_split_target(target: str) -> tuple[str, str]:
    """(kind, stored target) of a commission destination, validated when saved."""
    target = target.strip()
    if target == "lps":
        return "lps", "lps"
    lowered = target.lower()
    if lowered.startswith("lnurl1") or lowered.startswith("lightning:lnurl1"):
        from lnurl import decode as decode_lnurl

        try:
            decode_lnurl(lowered.removeprefix("lightning:"))
        except Exception:  # any undecodable text is bad input
            raise BadInput(f"target {target}: not a valid LNURL") from None
        return "lnurl", lowered.removeprefix("lightning:")
    if "@" in target:
        from .models import LN_ADDRESS

        if not LN_ADDRESS.match(lowered):
            raise BadInput(f"target {target}: not a valid Lightning address")
        return "lnaddress", lowered
    wallet = await get_wallet(target)
    if wallet and not wallet.deleted:
        return "wallet", wallet.id
    keyed = await get_wallet_for_key(target)
    if keyed and not keyed.deleted:
        # Stored as the wallet id: a key is a secret and never needs to be shown again.
        return "wallet", keyed.id
    raise BadInput(
        f"target {target}: not a wallet id, invoice key, Lightning address, "
        "LNURL or 'lps'"
    )


async def set_commission_rules(
    operator_user_id: str,
    machine_id: Optional[str],
    legs: list[dict],
) -> list[CommissionRule]:
    if machine_id is not None:
        await operator_machine(operator_user_id, machine_id)
    percents: list[Decimal] = []
    for position, leg in enumerate(legs):
        try:
            percent = Decimal(str(leg["percent"]).strip())
        except (InvalidOperation, KeyError):
            raise BadInput(f"legs[{position}].percent: must be a decimal") from None
        # Bounded before any exact arithmetic: "1e999999999" would take minutes.
        if not percent.is_finite() or not 0 < percent <= 100:
            raise BadInput(f"legs[{position}].percent: must be > 0 and at most 100")
        # Judged on the digits, not normalize(): its context would round 1e-999999999
        # to 0. Trailing zeros carry no value ("50.00000" is fine).
        _, digits, exponent = percent.as_tuple()
        zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
        if exponent + zeros < -4:  # type: ignore[operator]
            raise BadInput(f"legs[{position}].percent: at most 4 decimal places")
        percents.append(percent)
    if legs:
        try:
            validate_percents(percents)
        except ValueError as exc:
            raise BadInput(f"legs: {exc}") from None
    moment = crud.now()
    rules = []
    for position, (leg, percent) in enumerate(zip(legs, percents, strict=True)):
        kind, target = await resolve_split_target(str(leg["target"]))
        rules.append(
            CommissionRule(
                id=crud.new_id(),
                operator_user_id=operator_user_id,
                machine_id=machine_id,
                position=position,
                target=target,
                target_kind=kind,
                percent=str(percent),
                label=leg.get("label"),
                created_at=moment,
            )
        )
    async with crud.transaction() as tx:
        await crud.replace_commission_rules(tx, operator_user_id, machine_id, rules)
        await crud.add_audit(
            tx,
            operator_user_id,
            operator_user_id,
            "commission.rules",
            "machine" if machine_id else "operator",
            machine_id or operator_user_id,
            # The rules as stored: a target given as an invoice key is kept as its
            # wallet id, never the key itself (the audit trail is readable, GET /audit).
            {
                "legs": [
                    {
                        "target": r.target,
                        "target_kind": r.target_kind,
                        "percent": r.percent,
                        "label": r.label,
                    }
                    for r in rules
                ]
            },
        )
    return rules
