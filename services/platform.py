"""The super user's settings: the platform's fraction of every commission and the
wallet that collects it (docs/money.md, "Commission")."""

from decimal import Decimal
from typing import Optional

from .. import crud
from ..calculations import PLATFORM_FRACTION_PLACES
from ..inputs import decimal_input
from ..models import PlatformConfig
from .access import owned_wallet


def parse_fraction(value: object) -> Decimal:
    """The platform's fraction of every commission: 0 to 1, at most
    PLATFORM_FRACTION_PLACES decimals, parsed bounded before any arithmetic."""
    return decimal_input(
        value,
        "super_fee_fraction",
        minimum=0,
        maximum=1,
        places=PLATFORM_FRACTION_PLACES,
    )


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
    async with crud.audited(
        super_user_id,
        None,
        "platform.config",
        "platform",
        "1",
        {"super_fee_fraction": str(fraction), "fee_wallet_id": fee_wallet_id},
    ) as tx:
        await crud.save_platform_config(tx, config)
    return config
