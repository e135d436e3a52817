"""The operator's commission split rules: per machine, or the operator's default
(docs/money.md, "Commission"); targets are validated when saved."""

from decimal import Decimal
from typing import Optional

from lnbits.core.crud import get_wallet, get_wallet_for_key

from .. import crud
from ..calculations import validate_percents
from ..errors import BadInput
from ..inputs import percent_input
from ..models import LN_ADDRESS, CommissionRule
from .access import operator_machine


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
        # Bounded before any exact arithmetic ("1e999999999" would take minutes);
        # trailing zeros carry no value ("50.00000" is fine).
        percents.append(percent_input(leg.get("percent"), f"legs[{position}].percent"))
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
    async with crud.audited(
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
    ) as tx:
        await crud.replace_commission_rules(tx, operator_user_id, machine_id, rules)
    return rules
