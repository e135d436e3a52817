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
