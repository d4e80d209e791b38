"""The ingest service on a deployed stack, against real CrateDB: every host takes a batch, the
readings land once, and bad credentials are refused."""

import json
import ssl
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from ingest.tokens import issue


def call(stack, endpoint: str, path: str, *, token: str | None = None, body: dict | None = None):
    context = None
    if endpoint.startswith("https://"):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as ca:
            ca.write(stack.outputs["ingestCaCertificate"])
        context = ssl.create_default_context(cafile=ca.name)
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(endpoint + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def device_token(stack):
    return issue(stack.outputs["ingestTokenSecret"].encode(), f"it-{int(time.time())}")


def test_every_host_is_ready(stack):
    for endpoint in stack.outputs["ingestEndpoints"]:
        assert call(stack, endpoint, "/readyz") == (200, {"status": "ready"}), endpoint


def test_a_batch_to_each_host_lands_once_in_cratedb(stack, device_token):
    device = device_token.split(".")[1]
    now = int(time.time() * 1000)
    for n, endpoint in enumerate(stack.outputs["ingestEndpoints"]):
        body = {"readings": [{"ts": now - 1000 * n - i, "sensor": f"it-{n}", "value": float(i)} for i in range(50)]}
        for _ in range(2):  # the retry of an acknowledged batch stores nothing twice
            assert call(stack, endpoint, "/v1/readings", token=device_token, body=body) == (200, {"stored": 50, "device": device})
    stack.sql("REFRESH TABLE doc.readings")
    [[count]] = stack.sql(f"SELECT count(*) FROM doc.readings WHERE agent = '{device}'")[1]["rows"]
    assert count == 50 * len(stack.outputs["ingestEndpoints"])


@pytest.mark.parametrize("token", [None, "mds1.someone.forged"])
def test_bad_credentials_are_refused(stack, token):
    endpoint = stack.outputs["ingestEndpoints"][0]
    body = {"readings": [{"ts": int(time.time() * 1000), "sensor": "x", "value": 1}]}
    assert call(stack, endpoint, "/v1/readings", token=token, body=body)[0] == 401
