"""The auth matrix over every route the coordinator app has, taken from ``app.routes`` so that a
new endpoint fails here until its roles are written down: no token, malformed and wrong tokens,
a revoked one, another session's tokens, a member on owner actions and the admin on player
actions. Tokens (and their secret halves) must never appear in a log record at any level, in
an answer body or header, nor in the output of a real uvicorn process.

``tests/test_server.py::test_auth_matrix`` checks the documented table by hand; this file
checks the app's own route list, every token kind, sessions that do not exist, and the logs.
Counts go to ``benchmarks/results/reliability/auth_matrix.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route
from test_server import ADMIN_ENDPOINTS, SESSION_ENDPOINTS
from test_server_uvicorn import free_port
from test_sync_support import Server, make_session, running

from peerhost_store.sync.protocol import MSGPACK

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "reliability"
PLAYERS = frozenset({"owner", "member"})

# Who may call each route (method, template). Every route of the app must be listed here, and
# nothing else: a new endpoint fails test_every_route_is_classified until it is.
PUBLIC = {("GET", "/v1/health"), ("GET", "/metrics")}
ADMIN_ONLY = {("GET", "/v1/status"), ("GET", "/v1/sessions"), ("POST", "/v1/sessions")}
S = "/v1/sessions/{session}"
SESSION_ROLES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", f"{S}/members"): frozenset({"owner"}),
    ("DELETE", f"{S}/members/{{member}}"): frozenset({"owner"}),
    ("POST", f"{S}/lease"): PLAYERS,
    ("POST", f"{S}/lease/renew"): PLAYERS,
    ("POST", f"{S}/lease/release"): PLAYERS,
    ("POST", f"{S}/lease/reset"): frozenset({"owner"}),
    ("GET", f"{S}/lease"): PLAYERS,
    ("POST", f"{S}/sync-request"): PLAYERS | {"admin"},
    ("POST", f"{S}/objects/missing"): PLAYERS,
    ("POST", f"{S}/objects/status"): PLAYERS,
    ("POST", f"{S}/objects"): PLAYERS,
    ("POST", f"{S}/objects/get"): PLAYERS,
    ("POST", f"{S}/objects/changed"): PLAYERS,
    ("POST", f"{S}/objects/delta"): PLAYERS,
    ("POST", f"{S}/objects/delta/get"): PLAYERS,
    ("POST", f"{S}/objects/tree"): PLAYERS,
    ("POST", f"{S}/objects/tree/get"): PLAYERS,
    ("GET", f"{S}/head"): PLAYERS,
    ("POST", f"{S}/head"): PLAYERS,
    # A member only with the lease's fencing token, where the owner allows it (settings).
    ("POST", f"{S}/rollback"): frozenset({"owner"}),
    ("GET", f"{S}/log"): PLAYERS,
    ("GET", f"{S}/retention"): PLAYERS,
    ("PUT", f"{S}/retention"): frozenset({"owner"}),
    ("POST", f"{S}/gc"): frozenset({"owner"}),
    ("GET", f"{S}/settings"): PLAYERS,
    ("PUT", f"{S}/settings"): frozenset({"owner"}),
}
# The dashboard's routes: signed in by a cookie, not a bearer token; who may use each.
D = "/s/{session}"
DASHBOARD: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/"): frozenset({"anyone"}),
    ("POST", "/signin"): frozenset({"anyone"}),
    ("POST", "/signout"): PLAYERS,
    ("GET", D): PLAYERS,
    ("GET", f"{D}/snapshots/{{snapshot}}"): PLAYERS,
    ("GET", f"{D}/snapshots/{{snapshot}}/map.svg"): PLAYERS,
    ("GET", f"{D}/snapshots/{{snapshot}}/area"): PLAYERS,
    ("POST", f"{D}/sync"): PLAYERS,
    ("POST", f"{D}/rollback"): frozenset({"owner"}),
    ("POST", f"{D}/release"): frozenset({"owner"}),
    ("POST", f"{D}/retention"): frozenset({"owner"}),
    ("POST", f"{D}/members"): frozenset({"owner"}),
    ("POST", f"{D}/members/{{member}}/revoke"): frozenset({"owner"}),
}
BODIES: dict[tuple[str, str], object] = {
    **{(m, f"{S}/{tail}".replace("members/bob", "members/{member}")): body
       for m, tail, body, _ in SESSION_ENDPOINTS},
    **{(m, path): body for m, path, body in ADMIN_ENDPOINTS},
}


def app_routes(server: Server) -> set[tuple[str, str]]:
    app: Any = server.http.app
    out = set()
    for route in app.routes:
        assert isinstance(route, Route), f"not an HTTP route: {route!r}"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                out.add((method, route.path))
    return out


@dataclass
class Matrix:
    server: Server
    tokens: dict[str, str]
    seen: list[tuple[str, str, int, str, dict[str, str]]] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=dict)

    def call(self, method: str, path: str, body: object, authorization: str | None,
             kind: str) -> tuple[int, dict[str, Any]]:
        headers = {} if authorization is None else {"Authorization": authorization}
        if isinstance(body, bytes):
            headers["Content-Type"] = MSGPACK
            content: bytes | None = body
        else:
            content = None if body is None else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        r = self.server.http.request(method, path, content=content, headers=headers)
        self.seen.append((method, path, r.status_code, r.text, dict(r.headers)))
        self.checks[kind] = self.checks.get(kind, 0) + 1
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, r.json() if is_json else {}


@pytest.fixture
def matrix(tmp_path: Path) -> Iterator[Matrix]:
    with running(tmp_path / "c") as server:
        s1 = make_session(server, "s1", ("alice", "bob", "carol"))
        s2 = make_session(server, "s2")
        s1["owner"].remove_member("carol")
        tokens = {"admin": server.admin_token, "owner": s1["owner"]._token,
                  "member": s1["alice"]._token, "revoked": s1["carol"]._token,
                  "other_owner": s2["owner"]._token, "other_member": s2["alice"]._token}
        yield Matrix(server, tokens)


def _wrong_tokens(tokens: dict[str, str]) -> dict[str, str]:
    """Authorization header values that must all be 401."""
    owner = tokens["owner"]
    _, token_id, secret = owner.split(".")
    return {
        "right id, wrong secret": f"Bearer phs.{token_id}.{secret[::-1]}",
        "right id, secret cut": f"Bearer phs.{token_id}.{secret[:-1]}",
        "right id, no secret": f"Bearer phs.{token_id}.",
        "unknown id": f"Bearer phs.{'f' * 16}.{secret}",
        "upper-case id": f"Bearer phs.{token_id.upper()}.{secret}",
        "no prefix": f"Bearer {token_id}.{secret}",
        "garbage": "Bearer garbage",
        "empty bearer": "Bearer ",
        "no scheme": owner,
        "basic scheme": f"Basic {owner}",
        "token twice": f"Bearer {owner} {owner}",
        "nul in token": f"Bearer {owner}\x00",
        "revoked": f"Bearer {tokens['revoked']}",
    }


def test_every_route_is_classified(matrix: Matrix) -> None:
    routes = app_routes(matrix.server)
    assert routes == PUBLIC | ADMIN_ONLY | set(SESSION_ROLES) | set(DASHBOARD)
    assert set(SESSION_ROLES) | ADMIN_ONLY <= set(BODIES)


def test_every_route_refuses_every_token_it_must(matrix: Matrix,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = matrix.tokens
    wrong = _wrong_tokens(tokens)
    routes = sorted(app_routes(matrix.server) - PUBLIC - set(DASHBOARD))
    for method, template in routes:
        body = BODIES[(method, template)]
        for session in ("s1", "nope"):
            path = template.replace("{session}", session).replace("{member}", "bob")
            status, answer = matrix.call(method, path, body, None, "no token")
            assert (status, answer["error"]["code"]) == (401, "unauthorized"), (method, path)
            for kind, header in wrong.items():
                status, answer = matrix.call(method, path, body, header, kind)
                assert (status, answer["error"]["code"]) == (401, "unauthorized"), \
                    (method, path, kind)
                assert matrix.seen[-1][4].get("www-authenticate") == "Bearer"
            if template in {t for _, t in ADMIN_ONLY}:
                for who in ("owner", "member", "other_owner", "other_member"):
                    status, _ = matrix.call(method, path, body, f"Bearer {tokens[who]}",
                                            f"{who} on an admin route")
                    assert status == 403, (method, path, who)
                break  # admin routes have no session in their path
            # Another session's tokens: the same 403 whether or not the session exists.
            answers = {matrix.call(method, path, body, f"Bearer {tokens[who]}",
                                   f"another session's {who.split('_')[1]}")[0:2].__repr__()
                       for who in ("other_owner", "other_member")}
            assert len(answers) == 1 and "403" in answers.pop(), (method, path)
            if session == "nope":
                # Players of s1 are "another session" for nope; the admin learns it is absent.
                for who in ("owner", "member"):
                    status, _ = matrix.call(method, path, body, f"Bearer {tokens[who]}",
                                            f"{who} of s1 on a session that does not exist")
                    assert status == 403, (method, path, who)
                allowed = SESSION_ROLES[(method, template)]
                status, answer = matrix.call(method, path, body, f"Bearer {tokens['admin']}",
                                             "admin on a session that does not exist")
                expected = (404, "no_session") if "admin" in allowed else (403, "forbidden")
                assert (status, answer["error"]["code"]) == expected, (method, path)
                continue
            for who in ("owner", "member", "admin"):
                if who not in SESSION_ROLES[(method, template)]:
                    status, answer = matrix.call(method, path, body, f"Bearer {tokens[who]}",
                                                 f"{who} on a route it may not use")
                    assert (status, answer["error"]["code"]) == (403, "forbidden"), \
                        (method, path, who)
    # Then the roles that may call each route get past authentication (any other answer).
    for method, template in routes:
        path = template.replace("{session}", "s1").replace("{member}", "bob")
        for who in SESSION_ROLES.get((method, template), {"admin"}):
            status, _ = matrix.call(method, path, BODIES[(method, template)],
                                    f"Bearer {tokens[who]}", f"{who}, allowed")
            assert status not in (401, 403), (method, path, who)
    for method, path in sorted(PUBLIC):
        status, _ = matrix.call(method, path, None, None, "public, no token")
        assert status == 200
        status, _ = matrix.call(method, path, None, wrong["garbage"], "public, bad token")
        assert status == 200
    _assert_no_secrets(matrix, caplog, wrong)
    assert "by=s1/alice" in caplog.text and "by=-" in caplog.text
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "auth_matrix.json").write_text(json.dumps({
        "file": "tests/test_auth_matrix.py",
        "routes": [f"{m} {p}" for m, p in sorted(app_routes(matrix.server))],
        "routes_count": len(app_routes(matrix.server)),
        "token_kinds": sorted(matrix.checks),
        "token_kinds_count": len(matrix.checks),
        "requests_by_token_kind": dict(sorted(matrix.checks.items())),
        "requests": len(matrix.seen),
        "log_records_checked": len(caplog.records),
    }, indent=2) + "\n")


def _secrets(tokens: dict[str, str], wrong: dict[str, str]) -> list[str]:
    out = []
    for token in tokens.values():
        out += [token, token.split(".")[2]]
    for header in wrong.values():
        value = header.split(" ", 1)[-1].strip()
        secret = value.split(".")[-1]
        out += [s for s in (value, secret) if len(s) >= 16]
    return out


def _assert_no_secrets(matrix: Matrix, caplog: pytest.LogCaptureFixture,
                       wrong: dict[str, str]) -> None:
    secrets = _secrets(matrix.tokens, wrong)
    # httpx logs the URLs this test sends; only a test puts a token in one (?token=).
    log = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records
                    if not (r.name == "httpx" and "?token=" in r.getMessage()))
    for secret in secrets:
        assert secret not in log
        for method, path, status, text, headers in matrix.seen:
            assert secret not in text, (method, path, status)
            assert secret not in json.dumps(headers), (method, path, status)


def test_unknown_routes_and_methods_reveal_nothing(matrix: Matrix,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    header = f"Bearer {matrix.tokens['other_owner']}"
    for method, path, status in [("GET", "/v1/sessions/s1/nope", 404),
                                 ("PUT", "/v1/sessions/s1/head", 405),
                                 ("PATCH", "/v1/sessions", 405),
                                 ("GET", "/v1/sessions/s1/members/bob", 405),
                                 ("GET", "/v1/sessions/s1/head?token=" + matrix.tokens["owner"],
                                  403)]:
        for authorization in (None, header):
            got, _ = matrix.call(method, path, None, authorization, "unknown route")
            assert got in (status, 401), (method, path, got)
    _assert_no_secrets(matrix, caplog, {})


def test_a_real_coordinator_process_logs_no_token(tmp_path: Path) -> None:
    """uvicorn's own logs and the access log of a real process on 127.0.0.1."""
    port = free_port()
    log_path = tmp_path / "coordinator.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "peerhost_server", "--data", str(tmp_path / "data"),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        admin = _admin_token(log_path, proc)
        with httpx.Client(base_url=base, timeout=10) as http:
            _wait_up(http)
            bearer = {"Authorization": f"Bearer {admin}"}
            owner = http.post("/v1/sessions", json={"name": "s1"}, headers=bearer).json()[
                "owner_token"]
            member = http.post("/v1/sessions/s1/members", json={"name": "alice"},
                               headers={"Authorization": f"Bearer {owner}"}).json()["token"]
            wrong = owner[:-6] + "AAAAAA"
            sent = 0
            for token in (admin, owner, member, wrong, "garbage"):
                for method, path in [("GET", "/v1/sessions/s1/head"), ("GET", "/v1/status"),
                                     ("POST", "/v1/sessions/s1/lease"),
                                     ("DELETE", "/v1/sessions/s1/members/zed"),
                                     ("GET", "/v1/sessions/s2/log")]:
                    r = http.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                     json={"holder": "h", "ttl": 5})
                    sent += 1
                    for secret in (admin, owner, member, wrong):
                        assert secret.split(".")[2] not in r.text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    lines = log_path.read_text().splitlines()
    # The admin token is printed once, on the first start, by design; nothing else ever is.
    assert sum(admin in line for line in lines) == 1 and lines[0].startswith("admin token")
    rest = "\n".join(lines[1:])
    for secret in (admin, owner, member, wrong):
        assert secret.split(".")[2] not in rest
    assert rest.count("by=s1/alice") >= 1 and rest.count("GET /v1/sessions/s1/head") >= 5
    assert sent == 25


def _admin_token(log_path: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        first = log_path.read_text().splitlines()[:1]
        if first and first[0].startswith("admin token"):
            return first[0].rsplit(" ", 1)[1].strip()
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.05)
    raise AssertionError("the coordinator printed no admin token")


def _wait_up(http: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if http.get("/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the coordinator did not come up")


# -- the dashboard: cookies, CSRF and roles on every route ----------------------------------


class Browser:
    """One visitor of the dashboard: its own cookie jar, every answer kept."""

    def __init__(self, app: Any, seen: list[httpx.Response], base: str = "http://testserver"
                 ) -> None:
        from starlette.testclient import TestClient

        self.http = TestClient(app, base_url=base, follow_redirects=False)
        self.seen = seen
        self.csrf = ""

    def get(self, path: str, **params: str) -> httpx.Response:
        r: httpx.Response = self.http.get(path, params=params)
        self.seen.append(r)
        return r

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
             ) -> httpx.Response:
        r: httpx.Response = self.http.post(path, data=form, headers=headers or {})
        self.seen.append(r)
        return r

    def sign_in(self, token: str) -> httpx.Response:
        form = self.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        r = self.post("/signin", {"csrf": csrf.group(1), "token": token})
        if r.status_code == 303:
            page = self.get(r.headers["location"])
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert found is not None
            self.csrf = found.group(1)
        return r


def _dashboard_paths(template: str, session: str, head: str) -> str:
    return (template.replace("{session}", session).replace("{snapshot}", head)
            .replace("{member}", "bob"))


AREA = {"dimension": "overworld", "x1": "0", "z1": "0", "x2": "15", "z2": "15"}


def _form_of(method: str, template: str, head: str) -> dict[str, str]:
    if template.endswith("/rollback"):
        return {"target": head}
    if template.endswith("/retention"):
        return {"keep_last": "50"}
    if template.endswith("/members"):
        return {"name": "zed"}
    return {}


def test_every_dashboard_route_refuses_what_it_must(matrix: Matrix,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from test_server import publish

    caplog.set_level(logging.DEBUG)
    app: Any = matrix.server.http.app
    member = matrix.server.client("s1", matrix.tokens["member"])
    lease = member.acquire("alice-pc", 30)
    head = publish(member, lease.fencing, None, "v1").hex()
    member.release(lease.fencing)
    seen: list[httpx.Response] = []
    anonymous = Browser(app, seen)
    forged = Browser(app, seen)
    forged.http.cookies.set("phs_session", "forged-" + "x" * 40)
    visitors = {who: Browser(app, seen) for who in ("owner", "member", "other_owner")}
    for who, visitor in visitors.items():
        assert visitor.sign_in(matrix.tokens[who]).status_code == 303, who
    checks = 0
    for (method, template), roles in sorted(DASHBOARD.items()):
        if "anyone" in roles or template == "/signout":  # not a session's: the next test
            continue
        for session in ("s1", "nope"):
            path = _dashboard_paths(template, session, head)
            form = _form_of(method, template, head)
            params = AREA if template.endswith("/area") else {}
            for visitor in (anonymous, forged):
                r = (visitor.get(path, **params) if method == "GET" else
                     visitor.post(path, form))
                if method == "GET" and not path.endswith(".svg"):
                    assert (r.status_code, r.headers.get("location")) == (303, "/"), path
                else:
                    assert r.status_code in (401, 403), (method, path, r.status_code)
                assert head not in r.text and "alice" not in r.text
                checks += 1
            # Another session's sign-in: the same 403 whether or not the session exists.
            other = visitors["other_owner"]
            r = (other.get(path, **params) if method == "GET" else
                 other.post(path, {**form, "csrf": other.csrf}))
            assert r.status_code == 403 and "another session" in r.text, (method, path)
            assert head not in r.text
            checks += 1
            if session == "nope":
                continue
            for who in ("owner", "member"):
                visitor = visitors[who]
                if method == "POST":
                    # Without the form token, with a wrong one, or from another site: refused.
                    for bad, headers in [({}, {}), ({"csrf": "wrong"}, {}),
                                         ({"csrf": visitor.csrf},
                                          {"Origin": "http://evil.example"})]:
                        r = visitor.post(path, {**form, **bad}, headers)
                        assert r.status_code == 403, (method, path, who, bad, headers)
                        checks += 1
                if who not in roles:
                    r = (visitor.get(path, **params) if method == "GET" else
                         visitor.post(path, {**form, "csrf": visitor.csrf}))
                    assert r.status_code == 403, (method, path, who)
                    checks += 1
    # Then the roles that may use each route get past the checks (any other answer).
    for (method, template), roles in sorted(DASHBOARD.items()):
        if "anyone" in roles or template == "/signout":
            continue
        path = _dashboard_paths(template, "s1", head)
        for who in sorted(roles):
            visitor = visitors[who]
            params = AREA if template.endswith("/area") else {}
            r = (visitor.get(path, **params) if method == "GET" else
                 visitor.post(path, {**_form_of(method, template, head), "csrf": visitor.csrf}))
            assert r.status_code not in (401, 403), (method, path, who, r.text[:300])
            checks += 1
    assert checks > 100
    # The invitation page shows the new member's token, once, and is not cached.
    invited = [r for r in seen if "--token phs." in r.text]
    assert len(invited) == 1 and invited[0].headers["cache-control"] == "no-store"
    # No token, nor a token's secret, in any page, header or log line.
    secrets = _secrets(matrix.tokens, {})
    log = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    for r in seen:
        text = r.text + json.dumps(dict(r.headers))
        for secret in secrets:
            assert secret not in text, (r.request.method, r.request.url)
        assert "phs." not in str(r.request.url) and "phs." not in r.headers.get("location", "")
    for secret in secrets:
        assert secret not in log


def test_dashboard_sign_in_cookie_and_revocation(matrix: Matrix) -> None:
    app: Any = matrix.server.http.app
    seen: list[httpx.Response] = []
    visitor = Browser(app, seen)
    r = visitor.sign_in(matrix.tokens["owner"])
    cookie = r.headers["set-cookie"]
    assert r.headers["location"] == "/s/s1"
    assert "phs_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie \
        and "Path=/" in cookie and "Secure" not in cookie  # plain HTTP: a browser would drop it
    page = visitor.get("/s/s1")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    secure = Browser(app, seen, base="https://testserver")
    assert "Secure" in secure.sign_in(matrix.tokens["owner"]).headers["set-cookie"]
    # Refused sign-ins: a wrong token, the admin's, a revoked one, and a stale form.
    for token in (matrix.tokens["owner"][:-4] + "AAAA", matrix.tokens["admin"],
                  matrix.tokens["revoked"], "garbage"):
        assert Browser(app, seen).sign_in(token).status_code == 401
    stale = Browser(app, seen)
    assert stale.post("/signin", {"csrf": "made-up", "token": matrix.tokens["owner"]}
                      ).status_code == 403
    # A member signed in, then revoked by the owner: the web session ends with the token.
    bob_token = matrix.server.client("s1", matrix.tokens["owner"]).add_member("dave")
    dave = Browser(app, seen)
    assert dave.sign_in(bob_token).status_code == 303
    assert dave.get("/s/s1").status_code == 200
    matrix.server.client("s1", matrix.tokens["owner"]).remove_member("dave")
    assert dave.get("/s/s1").headers.get("location") == "/"
    # Signing out needs the form token too, and ends the web session.
    assert Browser(app, seen).post("/signout", {}).status_code == 403
    assert visitor.post("/signout", {"csrf": "wrong"}).status_code == 403
    assert visitor.post("/signout", {"csrf": visitor.csrf}).status_code == 303
    assert visitor.get("/s/s1").headers.get("location") == "/"
