async def test_first_turn(api):
    r = await api.post("/v1/conversations", json={"model": "sim-zero", "message": {"content": "hello"}})
    print(r.status_code, r.json())
    assert r.status_code == 201
    cid = r.json()["conversation"]["id"]
    r = await api.post(f"/v1/conversations/{cid}/messages", json={"content": "again"})
    print(r.status_code, r.json())
    r = await api.get(f"/v1/conversations/{cid}")
    print(r.json())
