"""The coordinator's domain: sessions, leases, heads, objects, deltas, storage and status.

It takes backends (:mod:`peerhost_server.domain.protocols`), a clock and limits, and raises
:mod:`peerhost_server.domain.errors`; it knows nothing of HTTP (no module here imports
starlette) nor of where state lives (no module here imports LMDB). The routes
(``peerhost_server/*_routes.py``) parse requests, call it and build answers.
"""
