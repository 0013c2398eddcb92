"""OnMemOSClient against the real server: the document's methods and their shapes, the legacy routes, the context
managers (deleting when the body raises too), typed errors, retries on 503 only, timeouts, and the key kept out of
URLs, logs and reprs."""

from __future__ import annotations

import logging
from typing import Callable, List

import httpx
import pytest
from conftest import SCOPED_NAMESPACE, Server

from onmemos import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OnMemOSClient,
    OnmemosError,
    RequestTimeoutError,
    UnavailableError,
    UnsupportedError,
    UserError,
)


def test_session_methods_have_the_documents_shapes(client: OnMemOSClient) -> None:
    session = client.create_session({"template": "python", "namespace": "shapes", "user": "alice", "ttl_minutes": 30})
    try:
        assert session["id"].startswith("ws-shapes-alice-")
        assert session["namespace"] == "shapes" and session["user"] == "alice"
        assert session["status"] == "running"
        assert session["websocket"] == f"/v1/sessions/{session['id']}/shell"
        assert client.get_session(session["id"])["id"] == session["id"]
        assert [s["id"] for s in client.list_sessions(namespace="shapes")] == [session["id"]]
        assert [s["id"] for s in client.list_sessions(namespace="shapes", user="alice", provider="local")] == [session["id"]]
        assert client.list_sessions(namespace="shapes", user="bob") == []
        r = client.execute_session(session["id"], "echo out; echo err >&2; exit 3")
        assert r == {"stdout": "out\n", "stderr": "err\n", "returncode": 3, "success": False}
        assert client.execute_session(session["id"], "sleep 5", timeout=1)["returncode"] == 124
        assert client.execute_session(session["id"], "echo $NAMESPACE $USER")["stdout"] == "shapes alice\n"
        info = client.connect_session(session["id"])
        assert info["exec"] == {"url": f"/v1/sessions/{session['id']}/exec", "protocol": "v5.channel.k8s.io"}
        assert info["json_shell"] == f"/v1/sessions/{session['id']}/shell"
        extended = client.extend_session(session["id"], 45)
        assert extended["id"] == session["id"]
        with pytest.raises(UnsupportedError):
            client.stop_session(session["id"])
        # keywords merge into the request dict
    finally:
        assert client.delete_session(session["id"]) == {"id": session["id"], "deleted": True}
    with pytest.raises(NotFoundError) as e:
        client.get_session(session["id"])
    assert e.value.code == "not_found" and e.value.status == 404


def test_create_session_takes_keywords_too(client: OnMemOSClient) -> None:
    s = client.create_session(namespace="kw", user="u", env={"GREETING": "hi"})
    try:
        assert client.execute_session(s["id"], "echo $GREETING")["stdout"] == "hi\n"
    finally:
        client.delete_session(s["id"])


def test_legacy_cloudrun_routes(client: OnMemOSClient) -> None:
    w = client.create_cloudrun_workspace("python", "legacy", "alice", ttl_minutes=30)
    try:
        assert w["websocket"] == f"/v1/cloudrun/workspaces/{w['id']}/shell"
        # Cloud Run is not configured here: the provider `auto` picks stands in, and says so.
        assert w["provider"] == "local"
        assert "stands in" in w["details"]["provider_reason"]
        assert client.get_cloudrun_workspace(w["id"])["id"] == w["id"]
        r = client.execute_in_cloudrun_workspace(w["id"], "pwd", timeout=30)
        assert r == {"stdout": "/workspace\n", "stderr": "", "returncode": 0, "success": True}
        with client.json_shell(w["id"], legacy=True) as sh:
            assert sh.run("echo legacy")["stdout"] == "legacy\n"
    finally:
        assert client.delete_cloudrun_workspace(w["id"])["deleted"] is True
    with pytest.raises(NotFoundError):
        client.get_cloudrun_workspace(w["id"])


def test_context_managers_delete_on_exit(client: OnMemOSClient) -> None:
    with client.session(namespace="ctx", user="u", ttl_minutes=10) as ws:
        assert ws.execute("echo $NAMESPACE") == {"stdout": "ctx\n", "stderr": "", "returncode": 0, "success": True}
        assert ws["namespace"] == "ctx"
        first = ws.id
    with pytest.raises(NotFoundError):
        client.get_session(first)
    with client.gke_workspace_session("python", "ctx-gke", "researcher", ttl_minutes=30) as ws:
        # The document's rule puts a long-lived session on GKE; without GKE here, local stands in and says so.
        assert ws.info["provider"] == "local"
        assert "gke" in ws.info["details"]["provider_reason"]
        gke = ws.id
    with pytest.raises(NotFoundError):
        client.get_session(gke)


class Boom(Exception):
    pass


def test_context_managers_delete_when_the_body_raises(client: OnMemOSClient) -> None:
    ids: List[str] = []
    with pytest.raises(Boom), client.session(namespace="ctx-raise", user="u") as ws:
        ids.append(ws.id)
        raise Boom()
    with pytest.raises(Boom), client.cloudrun_workspace_session("python", "ctx-raise", "v", ttl_minutes=10) as ws:
        ids.append(ws.id)
        assert ws.execute("true")["success"] is True
        raise Boom()
    with pytest.raises(Boom), client.gke_workspace_session("python", "ctx-raise", "w") as ws:
        ids.append(ws.id)
        ws.delete()  # already deleted inside: the exit does not fail on it
        raise Boom()
    assert len(ids) == 3
    for i in ids:
        with pytest.raises(NotFoundError):
            client.get_session(i)


def test_typed_errors_carry_the_servers_code_and_message(server: Server, client: OnMemOSClient) -> None:
    with pytest.raises(NotFoundError) as nf:
        client.get_session("ws-none-x-1-abcd")
    assert nf.value.code == "not_found" and nf.value.status == 404 and "ws-none-x-1-abcd" in str(nf.value)
    with pytest.raises(AuthError) as auth, OnMemOSClient(server.url, "wrong-key-0123456789abcdef") as wrong:
        wrong.list_sessions()
    assert auth.value.code == "auth" and auth.value.status == 401
    with pytest.raises(AuthError), OnMemOSClient(server.url) as keyless:
        keyless.list_sessions()
    scoped = OnMemOSClient(server.url, server.scoped_key)
    with pytest.raises(ForbiddenError) as fb:
        scoped.create_session(namespace="elsewhere")
    assert fb.value.code == "forbidden" and fb.value.status == 403
    with pytest.raises(UserError) as ue:
        client.create_session(namespace="Not A Label")
    assert ue.value.code == "invalid_argument" and ue.value.status == 422
    with pytest.raises(UserError):
        OnMemOSClient("ftp://example.com")
    # A scoped key sees its own namespace only, and other namespaces' sessions as not found.
    other = client.create_session(namespace="not-scoped", user="u")
    try:
        with pytest.raises(UserError) as bad:
            client.execute_session(other["id"], "")
        assert bad.value.code == "bad_request" and bad.value.status == 400
        with pytest.raises(NotFoundError):
            scoped.get_session(other["id"])
        mine = scoped.create_session(namespace=SCOPED_NAMESPACE, user="u")
        assert [s["id"] for s in scoped.list_sessions()] == [mine["id"]]
        scoped.delete_session(mine["id"])
    finally:
        client.delete_session(other["id"])
        scoped.close()
    assert all(issubclass(c, OnmemosError) for c in (NotFoundError, AuthError, ForbiddenError, ConflictError))


def test_unreachable_server_is_unavailable() -> None:
    with pytest.raises(UnavailableError), OnMemOSClient("http://127.0.0.1:9", "k" * 20, retries=0, timeout=5) as c:
        c.list_sessions()


def test_retries_503_with_backoff_and_nothing_else() -> None:
    calls: List[int] = []

    def answer(status: int, times: int) -> Callable[[httpx.Request], httpx.Response]:
        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(status)
            if len(calls) <= times:
                return httpx.Response(status, json={"error": {"code": "unavailable" if status == 503 else "internal", "message": "busy"}})
            return httpx.Response(200, json=[])

        return handler

    c = OnMemOSClient("http://onmemos.test", "k" * 20, retries=2, backoff=0.01, transport=httpx.MockTransport(answer(503, 2)))
    assert c.list_sessions() == []
    assert len(calls) == 3
    calls.clear()
    c = OnMemOSClient("http://onmemos.test", "k" * 20, retries=2, backoff=0.01, transport=httpx.MockTransport(answer(503, 5)))
    with pytest.raises(UnavailableError) as e:
        c.list_sessions()
    assert e.value.message == "busy" and len(calls) == 3
    calls.clear()
    c = OnMemOSClient("http://onmemos.test", "k" * 20, retries=2, backoff=0.01, transport=httpx.MockTransport(answer(500, 5)))
    with pytest.raises(OnmemosError) as e2:
        c.list_sessions()
    assert e2.value.status == 500 and len(calls) == 1


def test_timeouts_are_typed() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    c = OnMemOSClient("http://onmemos.test", "k" * 20, transport=httpx.MockTransport(slow))
    with pytest.raises(RequestTimeoutError) as e:
        c.get_session("ws-a-b-1-abcd")
    assert isinstance(e.value, TimeoutError) and isinstance(e.value, UnavailableError)


def test_the_key_stays_out_of_urls_logs_and_reprs(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    seen: List[httpx.Request] = []
    c = OnMemOSClient(server.url, server.key)
    c._http.event_hooks["request"].append(seen.append)
    caplog.set_level(logging.DEBUG)
    with c.session(namespace="secret", user="u") as ws:
        ws.execute("true")
        assert ws.exec(["true"]).exit_code == 0
        with ws.json_shell() as sh:
            sh.run("true")
    assert seen and all(server.key not in str(r.url) for r in seen)
    assert all(r.headers["x-api-key"] == server.key for r in seen)
    assert server.key not in repr(c)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "x-api-key" in logged.lower()  # websockets did log its handshake...
    assert server.key not in logged  # ...without the key
    c.close()
