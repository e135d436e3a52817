"""Ownership, checked against the database: what the caller may see and move.

The API layer authenticates and hands over the caller's user id; every service looks
its objects up through these, so a service called from a script or a test is as safe
as one called through HTTP. Another operator's id answers 404 (docs/api.md, "Errors").
"""

from typing import Optional, TypeVar

from lnbits.core.crud import get_wallet
from lnbits.core.models import Wallet

from .. import crud
from ..errors import Forbidden, NotFound
from ..models import Client, Machine, Settlement

T = TypeVar("T")


async def owned_wallet(
    user_id: str, wallet_id: str, field: str = "wallet_id"
) -> Wallet:
    """The wallet, if the caller owns it; a 403 that leaks nothing otherwise."""
    wallet = await get_wallet(wallet_id) if wallet_id else None
    if not wallet or wallet.user != user_id or wallet.deleted:
        raise Forbidden(f"{field}: wallet {wallet_id} is not one of your wallets")
    return wallet


def _found(row: Optional[T], kind: str, row_id: str) -> T:
    if row is None:
        raise NotFound(f"{kind} {row_id} not found")
    return row


async def operator_machine(operator_user_id: str, machine_id: str) -> Machine:
    row = await crud.get_operator_machine(operator_user_id, machine_id)
    return _found(row, "machine", machine_id)


async def operator_client(operator_user_id: str, client_id: str) -> Client:
    row = await crud.get_operator_client(operator_user_id, client_id)
    return _found(row, "client", client_id)


async def operator_settlement(operator_user_id: str, settlement_id: str) -> Settlement:
    row = await crud.get_operator_settlement(operator_user_id, settlement_id)
    return _found(row, "settlement", settlement_id)
