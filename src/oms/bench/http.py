"""A lean asyncio HTTP/1.1 keep-alive client for the load generator.

The bench shares the machine's cores with the system it measures, so its client must cost little CPU:
each connection is an `asyncio.Protocol` carrying one request at a time, the request is written in one
piece and the response parsed straight from the bytes the loop hands over (no streams, no tasks, no
`select` per request). A request is never re-sent once written: a connection that breaks mid-request
raises a `TransportError` for that request, and only a connection found closed before writing is replaced.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlencode, urlsplit

MAX_HEAD = 64 * 1024
# uvicorn closes a keep-alive connection idle for 5 s; one idle longer than this is replaced rather than
# reused, so a request is not written into a connection the server is closing at that very moment.
MAX_IDLE = 4.0
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Each header line follows a CRLF and cannot contain one, so a search finds exactly the header lines.
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding|connection):([^\r]*)", re.IGNORECASE)
_NO_BODY = frozenset((204, 304))


class TransportError(Exception):
    """A request that got no complete answer: connect refused, connection reset, timeout, bad response."""


class ConnectError(TransportError):
    """The connection could not be opened."""


class ConnectTimeout(TransportError):
    """The connection was not opened within the timeout."""


class ReadError(TransportError):
    """The connection failed (e.g. reset) before the whole response arrived."""


class RemoteProtocolError(TransportError):
    """The server closed the connection before the whole response, or answered something malformed."""


class ReadTimeout(TransportError):
    """No complete response within the timeout."""


class HTTPStatusError(Exception):
    """A response that is not 2xx, from `Response.raise_for_status`."""

    def __init__(self, response: Response) -> None:
        excerpt = response.text[:200]
        super().__init__(
            f"HTTP {response.status_code} {response.reason} for {response.method} {response.url}"
            + (f": {excerpt}" if excerpt else "")
        )
        self.response = response


class Response:
    """A complete response: status, headers (lower-case names), body."""

    __slots__ = ("_headers", "_raw_headers", "content", "method", "reason", "status_code", "url")

    def __init__(
        self, status_code: int, reason: str, content: bytes, method: str, url: str, raw_headers: bytes = b""
    ) -> None:
        self.status_code = status_code
        self.reason = reason
        self.content = content
        self.method = method
        self.url = url
        self._raw_headers = raw_headers
        self._headers: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.method} {self.url}>"

    @property
    def headers(self) -> dict[str, str]:
        """The headers by lower-case name (repeated ones joined with ", "), parsed when first asked for."""
        if self._headers is None:
            self._headers = _headers(self._raw_headers)
        return self._headers

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> Response:
        """This response, or `HTTPStatusError` if it is not 2xx."""
        if not 200 <= self.status_code < 300:
            raise HTTPStatusError(self)
        return self


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(b"\r\n") if raw else ():
        name, _, value = line.partition(b":")
        key, text = name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class _Head:
    """What the status line and the framing headers say about the response and its body.

    Only the three headers that frame the body are read here (one regex pass over the head); the others
    are parsed only if someone asks for `Response.headers`: the bench never does.
    """

    __slots__ = ("chunked", "keep_alive", "length", "raw_headers", "reason", "status")

    def __init__(self, raw: bytes, method: str) -> None:
        status_line, _, self.raw_headers = raw.partition(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise RemoteProtocolError(f"malformed status line {status_line[:100]!r}")
        self.status = int(code)
        self.reason = reason.decode("latin-1")
        framing = _framing(raw)
        self.keep_alive = _keep_alive(version, framing.get(b"connection"))
        self.chunked = False
        self.length: int | None = 0
        if method != "HEAD" and self.status not in _NO_BODY and self.status >= 200:
            self._body_framing(framing)

    def _body_framing(self, framing: dict[bytes, bytes]) -> None:
        if (coding := framing.get(b"transfer-encoding")) is not None:
            if coding.lower() != b"chunked":
                raise RemoteProtocolError(f"unsupported Transfer-Encoding {coding!r}")
            self.chunked = True
        elif (length := framing.get(b"content-length")) is not None:
            self.length = _content_length(length)
        else:  # the body runs until the server closes the connection
            self.length = None
            self.keep_alive = False


def _framing(raw: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for match in _FRAMING.finditer(raw):
        name, value = match[1].lower(), match[2].strip()
        found[name] = found[name] + b", " + value if name in found else value
    return found


def _keep_alive(version: bytes, connection: bytes | None) -> bool:
    if not connection:
        return version == b"HTTP/1.1"
    tokens = {token.strip() for token in connection.lower().split(b",")}
    return b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens


def _content_length(value: bytes) -> int:
    values = {v.strip() for v in value.split(b",")}  # a repeated header must repeat the same value
    if len(values) != 1 or not (length := values.pop()).isdigit():
        raise RemoteProtocolError(f"malformed Content-Length {value!r}")
    return int(length)


class _Chunked:
    """Decodes a chunked body as its bytes arrive."""

    __slots__ = ("body", "left", "state")

    def __init__(self) -> None:
        self.body = bytearray()
        self.left = 0
        self.state = "size"  # size → data → crlf → size … → trailer

    def feed(self, buffer: bytearray) -> bool:
        """Consume what `buffer` holds of the body; True once the whole body is in."""
        while True:
            if self.state == "data":
                taken = min(self.left, len(buffer))
                self.body += buffer[:taken]
                del buffer[:taken]
                self.left -= taken
                if self.left:
                    return False
                self.state = "crlf"
            elif self.state == "crlf":
                if len(buffer) < 2:
                    return False
                if buffer[:2] != b"\r\n":
                    raise RemoteProtocolError("malformed chunked body: no CRLF after a chunk")
                del buffer[:2]
                self.state = "size"
            else:
                line = _line(buffer)
                if line is None:
                    return False
                if self.state == "trailer":
                    if not line:
                        return True
                elif (size := _chunk_size(line)) == 0:
                    self.state = "trailer"
                else:
                    self.left, self.state = size, "data"


def _line(buffer: bytearray) -> bytes | None:
    end = buffer.find(b"\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise RemoteProtocolError("malformed chunked body: line too long")
        return None
    line = bytes(buffer[:end])
    del buffer[: end + 2]
    return line


def _chunk_size(line: bytes) -> int:
    size = line.partition(b";")[0].strip()
    if not _HEX.fullmatch(size):
        raise RemoteProtocolError(f"malformed chunk size {line[:100]!r}")
    return int(size, 16)


class Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = loop.time()
        self._waiter: asyncio.Future[Response] | None = None
        self._method = ""
        self._url = ""
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._chunks: _Chunked | None = None
        self._received = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, though not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._received = True
        self._buffer += data
        try:
            self._advance()
        except RemoteProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close; connection_lost settles a pending request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if exc is None and self._head is not None and self._head.length is None:
            self._finish(bytes(self._buffer))
        elif exc is not None:
            self._fail(ReadError(f"{self._method} {self._url}: connection failed: {exc!r}"))
        else:
            what = "mid-response" if self._received else "without sending a response"
            self._fail(RemoteProtocolError(f"{self._method} {self._url}: server disconnected {what}"))

    # -- requests -------------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Open, idle and not idle for so long that the server may be closing it."""
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and self.loop.time() - self.idle_since < MAX_IDLE
        )

    async def send(self, data: bytes, method: str, url: str, deadline: float) -> Response:
        """Write one request and wait for its response until `deadline` (loop time)."""
        assert self.transport is not None and self._waiter is None
        if self.closed or self.transport.is_closing():  # lost while connecting: nothing was sent
            raise RemoteProtocolError(f"{method} {url}: connection closed before the request was sent")
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self._waiter = waiter
        self._method, self._url = method, url
        self._head, self._chunks, self._received = None, None, False
        self.transport.write(data)
        timer = self.loop.call_at(deadline, self._timed_out)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None
            if waiter.cancelled():  # our caller gave up: what arrives next would be out of step
                self.close()

    def close(self) -> None:
        """Drop the connection at once (whatever is in flight is lost)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _timed_out(self) -> None:
        self._fail(ReadTimeout(f"{self._method} {self._url}: no complete response within the timeout"))

    def _fail(self, exc: TransportError) -> None:
        if self._waiter is None or self._waiter.done():
            return  # e.g. the timer firing just after the response was complete
        self._waiter.set_exception(exc)
        self.close()

    def _advance(self) -> None:
        buffer = self._buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise RemoteProtocolError("response head too large")
                return
            head = _Head(bytes(buffer[:end]), self._method)
            del buffer[: end + 4]
            if head.status >= 200 or head.status == 101:
                self._head = head  # interim 1xx answers are skipped
        if self._head.chunked:
            self._chunks = self._chunks or _Chunked()
            if self._chunks.feed(buffer):
                self._finish(bytes(self._chunks.body))
        elif self._head.length is not None and len(buffer) >= self._head.length:
            body = bytes(buffer[: self._head.length])
            del buffer[: self._head.length]
            self._finish(body)

    def _finish(self, body: bytes) -> None:
        head = self._head
        assert head is not None and self._waiter is not None
        response = Response(head.status, head.reason, body, self._method, self._url, head.raw_headers)
        self._head, self._chunks = None, None
        if self._buffer or not head.keep_alive:  # extra bytes: out of step, never reuse
            self.close()
        self.idle_since = self.loop.time()
        self._waiter.set_result(response)


class Origin:
    """The connections to one scheme://host:port: at most `size` at once, idle ones reused newest first."""

    def __init__(self, scheme: str, host: str, port: int, size: int, timeout: float) -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self.host_header = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self.ssl = ssl.create_default_context() if scheme == "https" else None
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Connection] = []
        self._closed = False

    async def send(self, data: bytes, method: str, url: str) -> Response:
        """Send one request on an idle connection, or on a new one if none is usable."""
        async with self._slots:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            connection = self._reusable() or await self._connect(loop, deadline, url)
            try:
                return await connection.send(data, method, url, deadline)
            finally:
                if self._closed:
                    connection.close()
                elif not connection.closed:
                    self._idle.append(connection)

    def _reusable(self) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
            connection.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float, url: str) -> Connection:
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"{url}: cannot connect to {self.host}:{self.port} in time") from None
        except OSError as exc:
            raise ConnectError(f"{url}: cannot connect to {self.host}:{self.port}: {exc}") from exc
        return connection

    def close(self) -> None:
        """Close the idle connections now, the busy ones once their request is over."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class HTTPClient:
    """HTTP/1.1 over keep-alive connections: up to `connections` per origin, one request on each at a time.

    `timeout` bounds connecting and then the whole response (waiting for a free connection is not counted).
    """

    def __init__(self, *, connections: int = 100, timeout: float = 30.0) -> None:
        self.connections = connections
        self.timeout = timeout
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._routes: dict[str, tuple[Origin, str]] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request; `json` is the body, serialised with `json.dumps`."""
        origin, target = self._route(url)
        if params:
            query = urlencode({k: _param(v) for k, v in params.items()})
            target += ("&" if "?" in target else "?") + query
            url += ("&" if "?" in url else "?") + query
        body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        data = _encode(method, target, origin.host_header, headers, body, json is not None)
        return await origin.send(data, method, url)

    async def aclose(self) -> None:
        """Close every connection."""
        for origin in self._origins.values():
            origin.close()
        await asyncio.sleep(0)  # let the transports report their closing

    def _route(self, url: str) -> tuple[Origin, str]:
        if (route := self._routes.get(url)) is not None:
            return route
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        if (origin := self._origins.get(key)) is None:
            origin = Origin(parts.scheme, parts.hostname, port, self.connections, self.timeout)
            self._origins[key] = origin
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if len(self._routes) < 1000:  # the bench calls a handful of URLs; parameters go in `params`
            self._routes[url] = (origin, target)
        return origin, target


def _param(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return "" if value is None else str(value)


def _encode(
    method: str, target: str, host: str, headers: Mapping[str, str] | None, body: bytes, is_json: bool
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    if is_json:
        lines.append("Content-Type: application/json\r\n")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}\r\n")
    if headers:
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body
