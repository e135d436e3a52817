"""Machines, LP preferences, clients, deposits and balances through the real API."""

API = "/satmachineadmin/api/v1"


async def test_operator_flow_machine_lp_deposit_balance(http, factory):
    operator = await factory.operator()
    machine = await factory.machine(operator)
    assert machine["fiat_currency"] == "GTQ"
    assert machine["status"] == "active"

    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp)
    assert client["onboarded"] is True
    assert client["dca_mode"] == "flow"

    response = await http.post(
        f"{API}/deposits",
        headers=operator.admin,
        json={"client_id": client["id"], "amount": "690.00"},
    )
    assert response.status_code == 201, response.text
    deposit = response.json()
    assert deposit["status"] == "pending"
    assert deposit["amount"] == "690.00"

    # A pending deposit does not count.
    balance = await factory.balance_of(operator, client["id"])
    assert balance["total_deposits"] == "0.00"
    assert balance["remaining_balance"] == "0.00"

    response = await http.post(
        f"{API}/deposits/{deposit['id']}/confirm", headers=operator.admin
    )
    assert response.status_code == 200
    assert response.json()["status"] == "confirmed"
    balance = await factory.balance_of(operator, client["id"])
    assert balance == {
        "client_id": client["id"],
        "machine_id": machine["id"],
        "currency": "GTQ",
        "total_deposits": "690.00",
        "total_distributed": "0.00",
        "remaining_balance": "690.00",
        "total_sats": 0,
        "cycle_complete": False,
    }

    # Confirming twice is a conflict and changes nothing.
    response = await http.post(
        f"{API}/deposits/{deposit['id']}/confirm", headers=operator.admin
    )
    assert response.status_code == 409
    assert (await factory.balance_of(operator, client["id"]))[
        "total_deposits"
    ] == "690.00"


async def test_every_change_leaves_an_audit_row_visible_only_to_its_operator(
    http, factory
):
    operator = await factory.operator()
    other = await factory.operator()
    machine = await factory.machine(operator)
    lp = await factory.lp()
    client = await factory.enrol(operator, machine, lp, deposit="12.00")
    response = await http.put(
        f"{API}/machines/{machine['id']}",
        headers=operator.admin,
        json={"name": "Zona 1"},
    )
    assert response.status_code == 200
    entries = (await http.get(f"{API}/audit", headers=operator.invoice)).json()
    actions = [entry["action"] for entry in entries]
    for action in (
        "machine.create",
        "client.create",
        "deposit.create",
        "deposit.confirm",
        "machine.update",
    ):
        assert action in actions
    assert all(entry["actor_user_id"] == operator.id for entry in entries)
    update = next(e for e in entries if e["action"] == "machine.update")
    assert update["detail"] == {"name": "Zona 1"}
    scoped = (
        await http.get(
            f"{API}/audit?entity_id={client['id']}", headers=operator.invoice
        )
    ).json()
    assert {e["entity_id"] for e in scoped} == {client["id"]}
    assert (await http.get(f"{API}/audit", headers=other.invoice)).json() == []
