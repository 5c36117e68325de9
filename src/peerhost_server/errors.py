"""Errors at the HTTP edge: the one the routes raise (:class:`ApiError`), the table that gives
each domain error its status (:data:`STATUS`), and the handlers that make them JSON answers.

Every error answer is ``{"error": {"code": ..., "message": ..., **details}}``. Messages name
sessions, members and ids, never a token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from peerhost_store.errors import PeerhostError

from .domain import errors as e


class ApiError(PeerhostError):
    """A request refused at the HTTP edge (its token, rate, body or fields): an HTTP status, a
    stable ``code`` and details. What the domain refuses is a :class:`~.domain.errors.DomainError`.

    Attributes:
        status: the HTTP status code.
        code: a short machine-readable reason (``lease_held``, ``head_moved``, ...).
        details: extra JSON fields of the error object (the current lease, the actual head).
        headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        super().__init__(f"{status} {code}: {message}")


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message, **(details or {})}}


#: The status of each domain error (the first class of its MRO listed here).
STATUS: dict[type[e.DomainError], int] = {
    e.BadName: 400, e.Incomplete: 400, e.MalformedTree: 400, e.NotASnapshot: 400,
    e.BadObjects: 400, e.MalformedObject: 400, e.IdMismatch: 400, e.BadDelta: 400,
    e.Forbidden: 403,
    e.NoSession: 404, e.NoMember: 404, e.NoSnapshot: 404, e.ObjectNotStored: 404,
    e.SessionExists: 409, e.MemberExists: 409, e.LeaseRefused: 409, e.NoLease: 409,
    e.Fenced: 409, e.HeadMoved: 409, e.NothingToRollBack: 409,
    e.NodeTooLarge: 413, e.TooManyItems: 413, e.DeltaTooLarge: 413, e.PairingRefused: 413,
    e.RefusedTree: 422, e.TreeNotValidated: 422, e.TreeMismatch: 422, e.AreaRefused: 422,
    e.Cancelled: 499,  # nobody reads it; the access log and the metrics do
    e.StoredObjectCorrupt: 500, e.StoreProblem: 500,
    e.Unavailable: 503,
    e.QuotaExceeded: 507, e.DiskFull: 507,
}


def status_of(exc: e.DomainError) -> int:
    """The HTTP status of a domain error."""
    for kind in type(exc).__mro__:
        status = STATUS.get(kind)
        if status is not None:
            return status
    return 500


def domain_response(exc: e.DomainError) -> JSONResponse:
    """The answer to a domain error (with ``Retry-After`` when it says when to retry)."""
    headers = ({"Retry-After": str(exc.retry_after)} if isinstance(exc, e.Unavailable)
               else None)
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_of(exc), headers)


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.DomainError)
    return domain_response(exc)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, exc.headers)


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """A backend that failed: the domain error it means for the client when the backend says
    (:meth:`~.domain.protocols.Backends.classify`: 507 ``disk_full`` on a full disk, 503
    ``unavailable`` when the database or the object bucket does not answer, so a
    client learns what happened and that it may retry later); anything else is unexpected."""
    mapped = request.app.state.coordinator.backends.classify(exc)
    if mapped is not None:
        return domain_response(mapped)
    # Handled here, not by ServerErrorMiddleware: log what it would have logged.
    logging.getLogger("peerhost_server").error("%s %s failed", request.method,
                                               request.url.path, exc_info=exc)
    return await handle_unexpected(request, exc)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server log (ServerErrorMiddleware); the client learns nothing.
    return JSONResponse(error_body("internal", "internal error; see the coordinator's log"), 500)
