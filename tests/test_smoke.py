async def test_extension_is_loaded_and_refuses_without_key(http, super_user):
    response = await http.get("/satmachineadmin/api/v1/machines")
    assert response.status_code == 401
    response = await http.get(
        "/satmachineadmin/api/v1/machines", headers=super_user.invoice
    )
    assert response.status_code == 200
    assert response.json() == []
