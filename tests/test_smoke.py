def test_ping(client):
    assert client.ping() is True
