"""What aiohttp's server does not bound by itself, bounded for every server of this process:

- a request's line and headers must arrive within `header_timeout_s` (a client that sends half a
  header and waits would hold its connection, and a file descriptor, for ever);
- at most `max_connections` connections are open per worker; one more is answered 503 with
  Retry-After and closed;
- a request aiohttp cannot parse (a header over 8 KB, a bad request line) is answered with a JSON
  400 that does not quote it, and logged without it: aiohttp's own answer quotes the offending
  line, which for an Authorization header is a credential.

The body's own timeout is in flow.py (it is read there). Installed by `install(settings)`, which
create_app calls: aiohttp's Server makes every connection's handler from this class.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web, web_server
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("ingest")

_BUSY = orjson.dumps({"error": "too many open connections to this server; retry later"})
BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
               b"Connection: close\r\nContent-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


class GuardedRequestHandler(RequestHandler):
    header_timeout_s = 10.0
    max_connections = 1024
    open_connections = 0  # of this process

    def connection_made(self, transport) -> None:
        cls = GuardedRequestHandler
        if cls.open_connections >= cls.max_connections:
            self._counted = False
            transport.write(BUSY_ANSWER)
            transport.close()
            return
        cls.open_connections += 1
        self._counted = True
        super().connection_made(transport)
        self._header_since: float | None = self._loop.time()  # waiting for the first request line
        self._header_check = self._loop.call_later(cls.header_timeout_s, self._check_header)

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if self._header_since is None and self._current_request is None and not self._messages:
            self._header_since = self._loop.time()  # the next request's head begins
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._header_since = None  # a whole head arrived

    def _check_header(self) -> None:
        if self.transport is None:
            return
        timeout = GuardedRequestHandler.header_timeout_s
        since = self._header_since
        if since is not None and self._loop.time() - since >= timeout:
            log.warning("closed a connection whose request head did not arrive within %g s", timeout)
            self.force_close()  # closes the transport
            return
        delay = timeout if since is None else since + timeout - self._loop.time()
        self._header_check = self._loop.call_later(max(delay, 0.05), self._check_header)

    def connection_lost(self, exc) -> None:
        if not getattr(self, "_counted", False):
            return
        GuardedRequestHandler.open_connections -= 1
        self._counted = False
        self._header_check.cancel()
        super().connection_lost(exc)

    def handle_error(self, request, status=500, exc=None, message=None):
        if not 400 <= status < 500:
            return super().handle_error(request, status, exc, message)
        log.warning("refused a malformed request from %s (%d %s)", request.remote, status, type(exc).__name__)
        response = web.Response(status=status, content_type="application/json", body=orjson.dumps(
            {"error": "malformed HTTP request (a header or the request line is too long, or it is not HTTP/1.1)"}))
        response.force_close()
        return response


def install(header_timeout_s: float, max_connections: int) -> None:
    GuardedRequestHandler.header_timeout_s = header_timeout_s
    GuardedRequestHandler.max_connections = max_connections
    web_server.RequestHandler = GuardedRequestHandler
