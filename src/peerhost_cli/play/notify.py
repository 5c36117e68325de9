"""Notifications to a chat webhook while hosting: "alice now hosts at ...", "hosting moved",
"histories diverged", "sync failed".

``webhook = "https://discord.com/api/webhooks/..."`` in ``peerhost.toml`` turns them on. The
body is Discord's (``{"content": "..."}``), which Slack-compatible and most self-hosted chat
webhooks accept too. Sending never blocks or fails hosting: messages go into a small queue that
one background thread posts, each with a short timeout; when the queue is full, new messages
are dropped (and counted). Nothing but the message goes out: no phs token, no header of ours,
no redirect followed. The webhook URL is a secret of its own, so it is never printed: messages
about it name its host only.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["MAX_PENDING", "Notifier"]

#: Messages waiting to be posted; past this, new ones are dropped.
MAX_PENDING = 16
#: Seconds one post may take.
POST_SECONDS = 5.0
#: Discord refuses longer contents.
MAX_CONTENT = 2000

Post = Callable[[str, dict[str, str]], int]


class Notifier:
    """Posts messages to ``url`` from a daemon thread (``url`` None: does nothing).

    Args:
        url: the webhook.
        log: told, once, when posting fails (the URL's host only).
        post: sends one JSON body to a URL and returns the HTTP status (tests replace it).
    """

    def __init__(self, url: str | None, *, log: Callable[[str], None] = lambda _: None,
                 post: Post | None = None) -> None:
        self.url = url
        self.log = log
        self.dropped = 0
        self.sent = 0
        self._post = post or _post
        self._queue: queue.Queue[str | None] = queue.Queue(MAX_PENDING)
        self._warned = False
        self._thread: threading.Thread | None = None
        if url is not None:
            self._thread = threading.Thread(target=self._run, name="phs-notify", daemon=True)
            self._thread.start()

    def send(self, text: str) -> None:
        """Queue ``text``; returns at once."""
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(text[:MAX_CONTENT])
        except queue.Full:
            self.dropped += 1

    def close(self, wait: float = POST_SECONDS + 1) -> None:
        """Let queued messages go out for at most ``wait`` seconds, then stop."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=wait)
        except queue.Full:
            return  # the thread is stuck on a post; it is a daemon and dies with phs
        self._thread.join(wait)

    def _run(self) -> None:
        assert self.url is not None
        while (text := self._queue.get()) is not None:
            try:
                status = self._post(self.url, {"content": text})
            except Exception as exc:  # noqa: BLE001 - a notification must never end hosting
                self._failed(type(exc).__name__)
                continue
            if 200 <= status < 300:
                self.sent += 1
            else:
                self._failed(f"HTTP {status}")

    def _failed(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            self.log(f"the webhook at {_host_of(self.url or '')} did not take a notification "
                     f"({why}); hosting goes on, and later notifications are tried too")


def _host_of(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]


def _post(url: str, body: dict[str, str]) -> int:
    import httpx

    # A client of its own: it carries no token, no cookie and follows no redirect.
    with httpx.Client(timeout=POST_SECONDS, follow_redirects=False) as http:
        return http.post(url, json=body).status_code
