from tests.conftest import api_call


def test_cluster_answers_auth_test(cluster):
    ws = cluster.seed(2)
    body = api_call(cluster, "auth.test", ws["users"][0]["token"]).json()
    assert body["ok"] is True
    assert body["user_id"] == ws["users"][0]["id"]
    assert body["team_id"] == ws["team"]["id"]
