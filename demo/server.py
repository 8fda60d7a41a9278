"""How the page is served to strangers: fair shares of the queue, a cap on request bodies, and which sessions have
a page open.

- `share_queue_fairly`: Gradio's queue has one size for everyone, so one visitor could fill it. Each session may have
  a few requests pending per kind of work (one training, one indexing, a few quick ones), and the slow kinds may
  hold only a few waiting places in all, so the quick endpoints always keep most of the queue. A visitor past their
  share is told so; nobody else's requests are touched.
- `LimitBody`: an ASGI middleware that answers 413 to a request body over a size (uploads excepted: Gradio's
  `max_file_size` bounds those), before the body is parsed.
- `PromptBudget`: how many prompts (labels x templates, texts to rank) one session may have embedded in the last
  minute, so one visitor's stream of the largest classifications cannot take a core from everyone else.
- `OpenPages`: an ASGI middleware that counts the heartbeat connections Gradio's page (and `gradio_client`) holds
  open per session, so the session sweep can tell a visitor with an open page from a script that left.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from mbm.errors import InputError

SLOW = {"learn": "training", "indexing": "indexing"}  # concurrency ids of the slow kinds of work -> their name


@dataclass(frozen=True)
class Shares:
    """How much of the queue one session, and each slow kind of work, may hold."""
    per_session: dict[str, int] = field(default_factory=lambda: {"learn": 1, "indexing": 1})  # pending per kind
    per_session_quick: int = 4  # pending requests of every other endpoint together, per session
    waiting: dict[str, int] = field(default_factory=lambda: {"learn": 3, "indexing": 6})  # all sessions, per kind


def share_queue_fairly(demo, shares: Shares = Shares()) -> None:
    """Refuse, at the door of Gradio's queue, a request past its session's share or its kind's waiting places.

    Gradio has no per-session cap, so this wraps `Queue.push`, the one call every queued request goes through
    (call it after `demo.queue()`). A refused request gets Gradio's validation answer (HTTP 422): the page shows the
    message at the button's inputs, and `gradio_client` raises it as a `ValidationError`.
    """
    queue = demo._queue
    push = queue.push

    async def fair_push(body, request, username):
        fn = queue.blocks.fns.get(body.fn_index) if body.fn_index is not None else None
        message = _over_share(queue, fn, body.session_hash, shares) if fn is not None else None
        if message:
            return False, [_refusal(message)] + [_fine()] * (len(fn.inputs) - 1), "validator_error"
        return await push(body, request, username)

    queue.push = fair_push


def _over_share(queue, fn, session_hash: str | None, shares: Shares) -> str | None:
    """Why `fn` may not join the queue for this session now, or None."""
    kind = fn.concurrency_id if fn.concurrency_id in SLOW else None
    if kind is not None:
        waiting = queue.event_queue_per_concurrency_id.get(kind)
        if waiting is not None and len(waiting.queue) >= shares.waiting[kind]:
            return (f"{len(waiting.queue)} {SLOW[kind]} requests are already waiting, the most this server queues; "
                    "try again in a minute.")
    if not session_hash:
        return None
    pending = [queue.event_ids_to_events.get(i) for i in list(queue.pending_event_ids_session.get(session_hash, ()))]
    mine = [e for e in pending if e is not None and (e.concurrency_id if e.concurrency_id in SLOW else None) == kind]
    cap = shares.per_session[kind] if kind is not None else shares.per_session_quick
    if len(mine) >= cap:
        what = f"a {SLOW[kind]} request" if cap == 1 and kind else f"{cap} requests"
        return f"You already have {what} waiting or running; wait for it to finish, then try again."
    return None


def _refusal(message: str) -> dict:
    return {"__type__": "validate", "is_valid": False, "message": message}


def _fine() -> dict:
    return {"__type__": "validate", "is_valid": True, "message": ""}


class PromptBudget:
    """Prompts each session may have embedded in the last minute (`per_minute`); the oldest of more than `sessions`
    sessions are forgotten."""

    def __init__(self, per_minute: int, sessions: int = 10_000):
        self.per_minute, self.sessions = per_minute, sessions
        self._spent: OrderedDict[str, deque] = OrderedDict()  # session -> (monotonic time, prompts), oldest first
        self._lock = threading.Lock()

    def spend(self, session: str, prompts: int) -> None:
        """Count `prompts` for `session`, or raise `InputError` saying how long to wait when they do not fit."""
        now = time.monotonic()
        with self._lock:
            spent = self._spent.pop(session, None) or deque()
            while spent and spent[0][0] < now - 60:
                spent.popleft()
            self._spent[session] = spent
            if len(self._spent) > self.sessions:
                self._spent.popitem(last=False)
            used = sum(n for _, n in spent)
            if used + prompts > self.per_minute:
                wait = max(1, round(60 - (now - spent[0][0]))) if spent else 60
                raise InputError(f"You have had {used:,} prompts embedded in the last minute, and this asks for "
                                 f"{prompts:,} more; one visitor may have {self.per_minute:,} a minute on this shared "
                                 f"page. Wait {wait} s, or use fewer labels or templates.")
            spent.append((now, prompts))


class LimitBody:
    """ASGI middleware: a request whose body is over `max_bytes` gets 413 before the app reads it (a declared
    Content-Length), or as soon as the streamed bytes pass the limit. Paths ending in `/upload` are left to Gradio's
    own `max_file_size`."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "").rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen, over, started = 0, False, False

        async def counted_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}  # the app stops reading; we answer below
            return message

        async def guarded_send(message):
            nonlocal started
            if over:
                return  # whatever the app says about the cut body, the answer is ours
            started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"Request body too large: at most {self.max_bytes:,} bytes."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


_HEARTBEAT = re.compile(r"/heartbeat/([^/]+)/?$")


class OpenPages:
    """ASGI middleware counting open heartbeat connections per session id; `is_open(session_hash)` asks."""

    def __init__(self, app, pages: Counter | None = None):
        self.app, self.pages, self._lock = app, pages if pages is not None else Counter(), threading.Lock()

    async def __call__(self, scope, receive, send):
        match = _HEARTBEAT.search(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            return await self.app(scope, receive, send)
        session = match.group(1)
        with self._lock:
            self.pages[session] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.pages[session] -= 1
                if self.pages[session] <= 0:
                    del self.pages[session]


def is_open(pages: Counter, session_hash: str) -> bool:
    """Whether a page (or client) of this session holds its heartbeat open now."""
    return pages.get(session_hash, 0) > 0
