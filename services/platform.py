"""The super user's settings: the platform's fraction of every commission and the
wallet that collects it (docs/money.md, "Commission")."""

from decimal import Decimal, InvalidOperation
from typing import Optional

from .. import crud
from ..errors import BadInput
from ..models import PlatformConfig
from .access import owned_wallet


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
