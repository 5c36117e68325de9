"""The web dashboard at ``/``: routes rendering HTML over the domain (who hosts, the snapshot
timeline, each snapshot's map of changes, area rollback, the owner's actions).

* **Sign-in.** A member or owner token is posted once (``POST /signin``) and exchanged for a
  random session id in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over HTTPS).
  The coordinator keeps, per web session, the token's id and digest (what it stores anyway),
  never the token, and identifies the caller through the directory on every request, so a
  revoked token's web sessions end at once. The token never appears in a URL, a page or a log.
* **CSRF.** Every state-changing form carries the web session's own random token (the
  sign-in form a per-visit one, in a second cookie), compared in constant time; a request
  whose ``Origin`` is another site is refused too.
* **Roles.** The same as the JSON routes': members read, ask for a sync; the owner also rolls
  back, invites and revokes, sets retention and force-releases. The domain checks its own
  rules again (a rollback without the owner's role is ``Forbidden`` there too).

Web sessions are the backends' (:meth:`~.domain.protocols.Directory.create_web_session`),
stored under a hash of the cookie, never the cookie: with several coordinators on one
database a browser signed in through one is signed in through all; the embedded coordinator
keeps them in memory (a restart signs everyone out). This module keeps only a memo of
snapshot diffs, keyed by content ids, so right in any number of processes.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from peerhost_store.area import Area, AreaError
from peerhost_store.diff import ChunkChange
from peerhost_store.ids import ObjectId, from_hex
from peerhost_store.objects import Snapshot

from . import changemap
from . import dashboard_pages as pages
from .auth import MEMBER, OWNER, Identity, digest_token, token_id_of
from .domain import heads, history, leasing, sessions, storage
from .domain.coordinator import Coordinator
from .domain.errors import DomainError, NoLease
from .domain.protocols import WebSession
from .errors import ApiError, status_of
from .http_limits import read_body
from .storage_routes import policy_from_json
from .web import coordinator, limits, loop_first, spend

COOKIE = "phs_session"
SIGNIN_COOKIE = "phs_signin"
SESSION_SECONDS = 12 * 3600
MAX_WEB_SESSIONS = 10_000
#: Snapshot diffs kept (by their two trees' ids, so never stale).
MAX_CACHED = 64
TIMELINE = 20
MAX_FORM_BYTES = 8192


class DashboardError(Exception):
    """A page the dashboard refuses, with its status and a sentence for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Dashboard:
    """The dashboard's state in this process: a memo of snapshot diffs (by their trees' ids,
    so never stale)."""

    def __init__(self) -> None:
        self._changes: OrderedDict[tuple[ObjectId | None, ObjectId], history.Changes] = \
            OrderedDict()
        self._lock = threading.Lock()

    def changes(self, coord: Coordinator, session: str, old: ObjectId | None, new: ObjectId
                ) -> history.Changes:
        key = (old, new)
        with self._lock:
            if key in self._changes:
                self._changes.move_to_end(key)
                return self._changes[key]
        found = history.tree_changes(coord, session, old, new)
        with self._lock:
            self._changes[key] = found
            while len(self._changes) > MAX_CACHED:
                self._changes.popitem(last=False)
        return found


def _dashboard(request: Request) -> Dashboard:
    return cast(Dashboard, request.app.state.dashboard)


# -- answers -----------------------------------------------------------------------------------


def _html(text: str, request: Request, status: int = 200) -> HTMLResponse:
    nonce = request.state.nonce
    response = HTMLResponse(text, status)
    response.headers.update({
        "Content-Security-Policy": (f"default-src 'none'; style-src 'nonce-{nonce}'; "
                                    f"script-src 'nonce-{nonce}'; img-src 'self' data:; "
                                    "form-action 'self'; frame-ancestors 'none'; "
                                    "base-uri 'none'"),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    })
    return response


def _redirect(to: str) -> RedirectResponse:
    response = RedirectResponse(to, 303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _cookie(response: Response, request: Request, name: str, value: str, seconds: int) -> None:
    response.set_cookie(name, value, max_age=seconds, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Run a dashboard handler; turn what it refuses into an HTML page with the right status."""

    async def run(request: Request) -> Response:
        request.state.nonce = secrets.token_urlsafe(16)
        request.state.viewer = None
        try:
            return await handler(request)
        except DashboardError as exc:
            status, text = exc.status, exc.message
        except DomainError as exc:
            status, text = status_of(exc), exc.message
        except AreaError as exc:
            status, text = 400, str(exc)
        except ApiError as exc:
            status, text = exc.status, exc.message
        title = {400: "Bad request", 401: "Not signed in", 403: "Not allowed",
                 404: "Not found", 429: "Too many requests"}.get(status, "Refused")
        return _html(pages.message_page(title, text, nonce=request.state.nonce,
                                        viewer=request.state.viewer), request, status)

    run.__name__ = handler.__name__
    return run


# -- who is asking ----------------------------------------------------------------------------


async def _signed_in(request: Request) -> tuple[Identity, WebSession] | None:
    """The caller's identity through its web session, re-checked against the directory."""
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    key = digest_token(sid)  # what the backend stores: a leaked table signs nobody in
    coord = coordinator(request)
    directory = coord.backends.directory

    def check(wait: bool) -> tuple[WebSession, Identity | None] | None:
        web = directory.web_session(key)
        return None if web is None else (web, coord.identify(web.token_id, web.digest))

    got = await loop_first(request, check)
    if got is None:
        return None
    web, who = got
    if who is None or who.role not in (OWNER, MEMBER):
        # Revoked since it signed in.
        await loop_first(request, lambda wait: directory.drop_web_session(key))
        return None
    request.state.identity = who  # the access log names the member
    spend(request, f"token:{who.token_id}")
    return who, web


async def _viewer(request: Request, *, owner: bool = False, post: bool = False
                  ) -> tuple[pages.Viewer, Identity, dict[str, str]]:
    """The signed-in member of the path's session (the owner, with ``owner``); with ``post``,
    the form, refused unless it carries this web session's CSRF token."""
    session = cast(str, request.path_params["session"])
    got = await _signed_in(request)
    if got is None:
        if not post:
            raise _SignIn()
        raise DashboardError(403, "sign in first")
    who, web = got
    if who.session != session:  # the same answer whether or not that session exists
        raise DashboardError(403, "this sign-in belongs to another session")
    viewer = pages.Viewer(session, who.member, who.role, web.csrf)
    request.state.viewer = viewer
    form: dict[str, str] = {}
    if post:
        form = await _form(request)
        if not hmac.compare_digest(form.get("csrf", ""), web.csrf):
            raise DashboardError(403, "this form is stale or was not sent from the dashboard "
                                      "(its CSRF token is missing or wrong): reload the page")
    if owner and who.role != OWNER:
        raise DashboardError(403, "only the session's owner can do this")
    return viewer, who, form


class _SignIn(DashboardError):
    def __init__(self) -> None:
        super().__init__(401, "sign in first")


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form (the first value of each field), from this site only."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        here = urlsplit(str(request.base_url))
        there = urlsplit(origin)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            raise DashboardError(403, "this form was sent from another site")
    data = await read_body(request, MAX_FORM_BYTES, limits(request).body_timeout)
    try:
        pairs = parse_qsl(data.decode(), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise DashboardError(400, "the form could not be read") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


# -- sign-in ------------------------------------------------------------------------------------


@page
async def home(request: Request) -> Response:
    got = await _signed_in(request)
    if got is not None:
        return _redirect(f"/s/{got[0].session}")
    return _signin_form(request)


def _signin_form(request: Request, problem: str | None = None, status: int = 200) -> Response:
    csrf = secrets.token_urlsafe(24)
    response = _html(pages.signin_page(csrf, nonce=request.state.nonce, problem=problem),
                     request, status)
    _cookie(response, request, SIGNIN_COOKIE, csrf, 3600)
    return response


@page
async def signin(request: Request) -> Response:
    form = await _form(request)
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
        return _signin_form(request, "The sign-in form was stale: try again.", 403)
    client = request.client.host if request.client else "unknown"
    spend(request, f"addr:{client}")  # guessing tokens is as slow here as on the API
    token = form.get("token", "").strip()
    coord = coordinator(request)
    who = None if token_id_of(token) is None else await loop_first(
        request, lambda wait: coord.authenticate(token))
    if who is None or who.role not in (OWNER, MEMBER):
        return _signin_form(request, "That token was refused (sign in with an owner or member "
                                     "token of a session).", 401)
    request.state.identity = who
    assert who.session is not None
    sid, token_id, digest = secrets.token_urlsafe(32), who.token_id, digest_token(token)
    await loop_first(request, lambda wait: coord.backends.directory.create_web_session(
        digest_token(sid), token_id, digest, secrets.token_urlsafe(32),
        seconds=SESSION_SECONDS, keep=MAX_WEB_SESSIONS))
    response = _redirect(f"/s/{who.session}")
    _cookie(response, request, COOKIE, sid, SESSION_SECONDS)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@page
async def signout(request: Request) -> Response:
    got = await _signed_in(request)
    form = await _form(request)
    if got is None or not hmac.compare_digest(form.get("csrf", ""), got[1].csrf):
        raise DashboardError(403, "this form is stale: reload the page")
    key = digest_token(request.cookies.get(COOKIE, ""))
    directory = coordinator(request).backends.directory
    await loop_first(request, lambda wait: directory.drop_web_session(key))
    response = _redirect("/")
    response.delete_cookie(COOKIE, path="/")
    return response


# -- pages -------------------------------------------------------------------------------------


@page
async def session_page(request: Request) -> Response:
    try:
        viewer, _, _ = await _viewer(request)
    except _SignIn:
        return _redirect("/")
    coord, dash = coordinator(request), _dashboard(request)
    overview = await run_in_threadpool(_overview, coord, dash, viewer.session)
    return _html(pages.session_page(viewer, overview, nonce=request.state.nonce), request)


def _overview(coord: Coordinator, dash: Dashboard, session: str) -> pages.Overview:
    info = coord.session(session)
    lease = leasing.status(coord, session)
    head = coord.backends.leases.head(session)
    rows: list[tuple[ObjectId, Snapshot, pages.Counts | None]] = []
    for oid, snap in history.timeline(coord, session, TIMELINE):
        parent = history.parent_tree(coord, session, snap)
        counts = None
        with contextlib.suppress(DomainError):
            found = dash.changes(coord, session, parent, snap.root)
            counts = pages.Counts.of(found.chunks, len(found.files))
        rows.append((oid, snap, counts))
    head_snap = rows[0][1] if rows and rows[0][0] == head else None
    return pages.Overview(info.members, lease, head, head_snap, rows,
                          storage.storage(coord, session))


def _snapshot_id(request: Request) -> ObjectId:
    text = cast(str, request.path_params["snapshot"])
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise DashboardError(404, "there is no such snapshot")
    return from_hex(text)


def _maps(coord: Coordinator, dash: Dashboard, session: str, oid: ObjectId,
          zoom: Area | None = None
          ) -> tuple[Snapshot, bool, list[tuple[str, str, pages.Counts]], history.Changes]:
    """A snapshot, whether its parent is here, a map per dimension it changed (``zoom``: the
    map of its dimension shows that box) and its changes."""
    snap = history.read_snapshot(coord, session, oid)
    parent = history.parent_tree(coord, session, snap)
    found = dash.changes(coord, session, parent, snap.root)
    maps = []
    by_dimension: dict[str, list[ChunkChange]] = {}
    for change in found.chunks:
        by_dimension.setdefault(change.dimension, []).append(change)
    states = changemap.chunk_states(found.chunks)
    for dimension in sorted(states, key=_dimension_order):
        frame = (changemap.frame_of([], zoom) if zoom is not None
                 and zoom.dimension == dimension else None)
        svg = changemap.render_svg(states[dimension], frame=frame,
                                   box=zoom if frame is not None else None,
                                   title=f"chunks changed in {dimension} by {oid.hex()[:12]}")
        counts = pages.Counts.of(by_dimension[dimension], 0)
        maps.append((dimension, svg, counts))
    return snap, parent is not None, maps, found


def _dimension_order(dimension: str) -> tuple[int, str]:
    order = ["minecraft:overworld", "minecraft:the_nether", "minecraft:the_end"]
    return (order.index(dimension) if dimension in order else len(order), dimension)


@page
async def snapshot_page(request: Request) -> Response:
    try:
        viewer, _, _ = await _viewer(request)
    except _SignIn:
        return _redirect("/")
    oid = _snapshot_id(request)
    zoom = _area_of(dict(request.query_params)) if request.query_params.get("zoom") else None
    snap, has_parent, maps, found = await run_in_threadpool(
        _maps, coordinator(request), _dashboard(request), viewer.session, oid, zoom)
    return _html(pages.snapshot_page(viewer, oid, snap, has_parent, maps, found.files,
                                     found.classified, nonce=request.state.nonce, box=zoom),
                 request)


@page
async def map_svg(request: Request) -> Response:
    viewer, _, _ = await _viewer(request)
    oid = _snapshot_id(request)
    dimension = request.query_params.get("dimension", "minecraft:overworld")
    _, _, maps, _ = await run_in_threadpool(_maps, coordinator(request), _dashboard(request),
                                            viewer.session, oid)
    for name, svg, _ in maps:
        if name == dimension:
            response = Response(svg, media_type="image/svg+xml")
            response.headers.update({"Cache-Control": "no-store",
                                     "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'"})
            return response
    raise DashboardError(404, f"snapshot {oid.hex()[:12]} changed nothing in {dimension}")


def _area_of(fields: dict[str, str]) -> Area:
    try:
        x1, z1, x2, z2 = (int(fields.get(k, "")) for k in ("x1", "z1", "x2", "z2"))
    except ValueError:
        raise DashboardError(400, "the area's corners must be whole block coordinates") from None
    return Area.parse(f"{x1},{z1}:{x2},{z2}", fields.get("dimension") or "overworld")


@page
async def area_page(request: Request) -> Response:
    try:
        viewer, _, _ = await _viewer(request)
    except _SignIn:
        return _redirect("/")
    oid = _snapshot_id(request)
    area = _area_of(dict(request.query_params))
    coord = coordinator(request)

    def work() -> tuple[ObjectId, list[ChunkChange]]:
        snap = history.read_snapshot(coord, viewer.session, oid)
        use_parent = request.query_params.get("to", "parent") == "parent" and snap.parents
        target = snap.parents[0] if use_parent else oid
        return target, history.area_preview(coord, viewer.session, target, area)

    target, changes = await run_in_threadpool(work)
    states = changemap.chunk_states(changes)
    svg = changemap.render_svg(states.get(area.dimension, {}), box=area,
                               title=f"what rolling back {area.describe()} changes")
    return _html(pages.area_page(viewer, oid, target, area, changes, svg,
                                 nonce=request.state.nonce), request)


# -- actions -----------------------------------------------------------------------------------


@page
async def rollback(request: Request) -> Response:
    viewer, who, form = await _viewer(request, owner=True, post=True)
    target_text = form.get("target", "")
    if len(target_text) != 64 or any(c not in "0123456789abcdef" for c in target_text):
        raise DashboardError(400, "which snapshot to roll back to is missing")
    target = from_hex(target_text)
    area = _area_of(form) if form.get("x1") else None
    new, old = await run_in_threadpool(heads.rollback, coordinator(request), viewer.session,
                                       who, target, None, area)
    what = "the world" if area is None else area.describe()
    undo = "" if old is None else pages.post_button(viewer, f"/s/{viewer.session}/rollback",
                                                    "Undo (roll back to the head before)",
                                                    {"target": old.hex()})
    text = (f"Rolled back {what} to snapshot {target.hex()[:12]}: the head is now "
            f"{new.hex()[:12]}. Nothing was deleted."
            + (" Whoever hosts is asked to take it before their server saves over it."
               if area is not None else ""))
    return _html(pages.message_page("Rolled back", text, nonce=request.state.nonce,
                                    viewer=viewer, ok=True, extra=f"<p>{undo}</p>"), request)


@page
async def sync(request: Request) -> Response:
    viewer, _, _ = await _viewer(request, post=True)
    coord = coordinator(request)
    try:
        holder = await loop_first(request, lambda wait: leasing.request_sync(
            coord, viewer.session, wait=wait))
    except NoLease:
        raise DashboardError(409, "nobody hosts now: there is no one to ask") from None
    return _html(pages.message_page(
        "Sync requested", f"{holder} was asked to snapshot and push (it hears it at its next "
        "lease renewal, within seconds).", nonce=request.state.nonce, viewer=viewer, ok=True),
        request)


@page
async def release(request: Request) -> Response:
    viewer, _, _ = await _viewer(request, owner=True, post=True)
    ended, dropped, _ = await run_in_threadpool(leasing.reset, coordinator(request),
                                                viewer.session)
    text = (f"The lease of {ended} was ended" if ended else "Nobody held the lease") + (
        f"; the standby queue ({', '.join(dropped)}) was emptied." if dropped else ".")
    return _html(pages.message_page("Lease released", text, nonce=request.state.nonce,
                                    viewer=viewer, ok=True), request)


@page
async def retention(request: Request) -> Response:
    viewer, _, form = await _viewer(request, owner=True, post=True)
    body: dict[str, object] = {}
    for name in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly"):
        value = form.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise DashboardError(400, f"{name} must be a whole number")
            body[name] = int(value)
    policy = policy_from_json(body)
    await run_in_threadpool(storage.set_retention, coordinator(request), viewer.session, policy)
    return _html(pages.message_page("Retention saved", "The next gc applies it.",
                                    nonce=request.state.nonce, viewer=viewer, ok=True), request)


@page
async def invite(request: Request) -> Response:
    viewer, _, form = await _viewer(request, owner=True, post=True)
    name = sessions.require_name(form.get("name", ""), "member")
    token = await run_in_threadpool(sessions.add_member, coordinator(request), viewer.session,
                                    name)
    url = str(request.base_url).rstrip("/")
    return _html(pages.invited_page(viewer, name, token, url, nonce=request.state.nonce),
                 request)


@page
async def revoke(request: Request) -> Response:
    viewer, _, _ = await _viewer(request, owner=True, post=True)
    name = cast(str, request.path_params["member"])
    await run_in_threadpool(sessions.remove_member, coordinator(request), viewer.session, name)
    return _html(pages.message_page("Member revoked", f"{name}'s token no longer works; their "
                                    "lease and standby place (if any) ended with it.",
                                    nonce=request.state.nonce, viewer=viewer, ok=True), request)


S = "/s/{session}"
routes = [
    Route("/", home, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route(S, session_page, methods=["GET"]),
    Route(f"{S}/snapshots/{{snapshot}}", snapshot_page, methods=["GET"]),
    Route(f"{S}/snapshots/{{snapshot}}/map.svg", map_svg, methods=["GET"]),
    Route(f"{S}/snapshots/{{snapshot}}/area", area_page, methods=["GET"]),
    Route(f"{S}/rollback", rollback, methods=["POST"]),
    Route(f"{S}/sync", sync, methods=["POST"]),
    Route(f"{S}/release", release, methods=["POST"]),
    Route(f"{S}/retention", retention, methods=["POST"]),
    Route(f"{S}/members", invite, methods=["POST"]),
    Route(f"{S}/members/{{member}}/revoke", revoke, methods=["POST"]),
]
