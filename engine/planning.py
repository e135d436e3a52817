"""Turn a settlement into its legs, once, before anything is paid.

The plan is written in one transaction together with the balance it reserves, so a
crash leaves either no plan or a whole one. Its idempotency keys are
`<settlement>:v<plan_version>:<leg>`: replaying a plan finds the same rows, and a
partial dispense (which bumps plan_version) gets fresh keys for its new plan.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Optional

from lnbits.db import POSTGRES

from .. import crud
from ..calculations import (
    allocate_principal,
    format_fiat,
    largest_remainder,
    split_commission,
)
from ..crud import Tx
from ..models import ClientWithPrefs, CommissionRule, Leg, Machine, Settlement
from .legs import lp_memo
from .payouts import ClaimLost


@dataclass
class PlanContext:
    settlement: Settlement
    machine: Machine
    rules: list[CommissionRule]
    fee_wallet_id: Optional[str]
    moment: int

    def key(self, suffix: str) -> str:
        return f"{self.settlement.id}:v{self.settlement.plan_version}:{suffix}"

    def leg(
        self, suffix: str, leg_type: str, amount_sats: int, **fields: object
    ) -> Leg:
        status = str(fields.pop("status", "pending"))
        # construct(): every field is computed here from typed values; validating a
        # thousand legs per settlement would cost more than planning them.
        return Leg.construct(
            id=crud.new_id(),
            idempotency_key=self.key(suffix),
            settlement_id=self.settlement.id,
            machine_id=self.machine.id,
            operator_user_id=self.machine.operator_user_id,
            leg_type=leg_type,
            status=status,
            amount_sats=amount_sats,
            currency=self.settlement.currency,
            exchange_rate=self.settlement.exchange_rate,
            source_wallet_id=self.machine.wallet_id,
            created_at=self.moment,
            updated_at=self.moment,
            **fields,  # type: ignore[arg-type]
        )


async def ensure_plan(settlement: Settlement, machine: Machine) -> list[Leg]:
    """The settlement's legs for its current plan version, planning them if needed."""
    current = await _current_legs(settlement)
    if current:
        return current
    rules = await crud.list_commission_rules(machine.operator_user_id, machine.id)
    if not rules:
        rules = await crud.list_commission_rules(machine.operator_user_id, None)
    config = await crud.get_platform_config()
    context = PlanContext(
        settlement=settlement,
        machine=machine,
        rules=rules,
        fee_wallet_id=config.fee_wallet_id,
        moment=crud.now(),
    )
    async with crud.transaction() as tx:
        # First, and a compare-and-swap: only the claim's holder writes this
        # version's plan (a stalled worker whose lease ran out while a partial
        # dispense rescaled the settlement must not write the old one back).
        if not await crud.update_settlement_plan(tx, settlement):
            raise ClaimLost(f"settlement {settlement.id}: not ours to plan any more")
        clients = await _lock_machine_clients(tx, machine.id)
        legs, orphan_sats, orphan_fiat = build_legs(context, clients)
        await crud.insert_plan(tx, legs)
        await crud.set_settlement_orphans(
            tx, settlement.id, orphan_sats, orphan_fiat, context.moment
        )
    # What was just written, in the order a re-read would give: no second read of a
    # plan that may hold a thousand legs.
    return sorted(legs, key=lambda leg: (leg.created_at, leg.idempotency_key))


async def _current_legs(settlement: Settlement) -> list[Leg]:
    prefix = f"{settlement.id}:v{settlement.plan_version}:"
    return [
        leg
        for leg in await crud.list_settlement_legs(settlement.id)
        if leg.idempotency_key.startswith(prefix) and leg.leg_type != "autoforward"
    ]


async def _lock_machine_clients(tx: Tx, machine_id: str) -> list[ClientWithPrefs]:
    # Two LNbits processes on one PostgreSQL may plan two settlements of the same
    # machine at once: row locks make the second wait for the first's reservations.
    # (SQLite has one writer at a time already.)
    if tx.conn.type == POSTGRES:
        await tx.fetchall(
            "SELECT id FROM satmachineadmin.clients WHERE machine_id = :machine "
            "ORDER BY id FOR UPDATE",
            {"machine": machine_id},
        )
    return await crud.list_machine_clients_with_prefs(machine_id, tx)


def flow_recipients(clients: list[ClientWithPrefs]) -> list[ClientWithPrefs]:
    return [
        c
        for c in clients
        if c.status == "active"
        and c.wallet_id
        and c.dca_mode == "flow"
        and c.remaining_minor > 0
    ]


def build_legs(
    context: PlanContext, clients: list[ClientWithPrefs]
) -> tuple[list[Leg], int, int]:
    """All legs of the plan, plus (orphan_sats, orphan_fiat_minor)."""
    legs = _platform_legs(context)
    legs += _operator_legs(context, clients)
    principal_legs, orphan_sats, orphan_fiat = _principal_legs(context, clients)
    return legs + principal_legs, orphan_sats, orphan_fiat


def _platform_legs(context: PlanContext) -> list[Leg]:
    amount = context.settlement.platform_fee_sats
    if amount <= 0:
        return []
    if not context.fee_wallet_id:
        return [
            context.leg(
                "super_fee",
                "super_fee",
                amount,
                status="skipped",
                error="no platform fee wallet is configured: the sats stay in the "
                "machine wallet",
                memo="Platform fee",
            )
        ]
    return [
        context.leg(
            "super_fee",
            "super_fee",
            amount,
            destination=context.fee_wallet_id,
            destination_kind="wallet",
            memo=f"Platform fee, {context.machine.name}",
        )
    ]


def _operator_legs(context: PlanContext, clients: list[ClientWithPrefs]) -> list[Leg]:
    amount = context.settlement.operator_fee_sats
    if amount <= 0:
        return []
    if not context.rules:
        return [
            context.leg(
                "operator_split",
                "operator_split",
                amount,
                status="skipped",
                error="no commission split rules: the sats stay in the machine wallet",
                memo="Commission",
            )
        ]
    split = split_commission(
        amount, Decimal(0), [Decimal(rule.percent) for rule in context.rules]
    )
    legs: list[Leg] = []
    for rule, part in zip(context.rules, split.operator_parts, strict=True):
        if part <= 0:
            continue
        suffix = f"operator_split:{rule.position}"
        label = rule.label or rule.target_kind
        if rule.target_kind != "lps":
            legs.append(
                context.leg(
                    suffix,
                    "operator_split",
                    part,
                    destination=rule.target,
                    destination_kind=rule.target_kind,
                    label=label,
                    memo=f"Commission ({label}), {context.machine.name}",
                )
            )
            continue
        legs += _commission_to_lps(context, clients, suffix, part, label)
    return legs


def _commission_to_lps(
    context: PlanContext,
    clients: list[ClientWithPrefs],
    suffix: str,
    amount: int,
    label: str,
) -> list[Leg]:
    recipients = flow_recipients(clients)
    if not recipients:
        return [
            context.leg(
                suffix,
                "operator_split",
                amount,
                status="skipped",
                error="commission share for LPs: no flow-mode LP has a balance; the "
                "sats stay in the machine wallet",
                label=label,
            )
        ]
    parts = largest_remainder(amount, [c.remaining_minor for c in recipients])
    return [
        context.leg(
            f"{suffix}:{client.id}",
            "operator_split",
            part,
            client_id=client.id,
            destination=client.wallet_id,
            destination_kind="wallet",
            label=label,
            memo=f"Commission share, {context.machine.name}",
        )
        for client, part in zip(recipients, parts, strict=True)
        if part > 0
    ]


def _unpaid_principal(
    context: PlanContext, sats: int, reason: str
) -> tuple[list[Leg], int, int]:
    """One skipped dca leg: the principal stays in the machine wallet, with why."""
    return [context.leg("dca", "dca", sats, status="skipped", error=reason)], 0, 0


def _principal_legs(
    context: PlanContext, clients: list[ClientWithPrefs]
) -> tuple[list[Leg], int, int]:
    settlement = context.settlement
    principal = settlement.principal_sats
    if settlement.tx_type == "cash_in":
        return _unpaid_principal(
            context, 0, "cash-in: no LP leg, the cash stays in the machine"
        )
    if principal <= 0:
        return [], 0, 0
    if settlement.fiat_amount_minor <= 0 or not settlement.exchange_rate:
        return _unpaid_principal(
            context,
            principal,
            "exchange rate unknown: LP legs cannot be paid without it; "
            "the sats stay in the machine wallet",
        )
    recipients = flow_recipients(clients)
    if not recipients:
        has_flow = any(c.dca_mode == "flow" and c.status == "active" for c in clients)
        reason = (
            "no flow-mode LP at this machine has a remaining balance"
            if has_flow
            else "no flow-mode LPs at this machine"
        )
        return _unpaid_principal(
            context, principal, f"{reason}: the sats stay in the machine wallet"
        )
    allocation = allocate_principal(
        principal,
        settlement.fiat_amount_minor,
        [c.remaining_minor for c in recipients],
    )
    currency = settlement.currency
    legs = []
    for client, fiat, sats in zip(
        recipients, allocation.fiat_parts, allocation.sat_parts, strict=True
    ):
        if fiat <= 0 and sats <= 0:
            continue
        memo = lp_memo(
            "DCA",
            fiat,
            currency,
            settlement.exchange_rate,
            context.machine.name,
            completes=fiat >= client.remaining_minor,
        )
        legs.append(
            context.leg(
                f"dca:{client.id}",
                "dca",
                sats,
                client_id=client.id,
                amount_fiat_minor=fiat,
                destination=client.wallet_id,
                destination_kind="wallet",
                memo=memo,
            )
        )
    if allocation.orphan_sats > 0:
        legs.append(
            context.leg(
                "dca:orphan",
                "dca",
                allocation.orphan_sats,
                status="skipped",
                amount_fiat_minor=allocation.orphan_fiat,
                error=_orphan_reason(
                    settlement, allocation.orphan_sats, allocation.orphan_fiat
                ),
            )
        )
    return legs, allocation.orphan_sats, allocation.orphan_fiat


def _orphan_reason(settlement: Settlement, orphan_sats: int, orphan_fiat: int) -> str:
    currency = settlement.currency
    out = format_fiat(settlement.fiat_amount_minor, currency)
    tracked = format_fiat(settlement.fiat_amount_minor - orphan_fiat, currency)
    return (
        f"orphan sats: {out} {currency} left the machine but LPs only had {tracked} "
        f"{currency} in it; {orphan_sats} sats ({format_fiat(orphan_fiat, currency)} "
        f"{currency}) stay in the machine wallet for reconciliation"
    )
