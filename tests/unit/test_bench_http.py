"""The bench's own HTTP client against a tiny real asyncio server on a free port: framing (Content-Length,
chunked, until close), keep-alive reuse and reconnects, and the transport errors."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import uvloop

from oms.bench import http
from oms.bench.http import HTTPClient, HTTPStatusError, Response, TransportError

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Every test on both loops: the bench runs on uvloop when it is installed."""
    return cast(Run, asyncio.run if request.param == "asyncio" else uvloop.run)


@dataclass
class Request:
    """A request as the server read it."""

    connection: int
    head: list[str]
    body: bytes

    @property
    def line(self) -> str:
        return self.head[0]

    def header(self, name: str) -> str | None:
        for line in self.head[1:]:
            key, _, value = line.partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return None


Reply = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]  # returns: keep the connection open


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def send(writer: asyncio.StreamWriter, *parts: bytes, pause: float = 0.0) -> None:
    for part in parts:
        writer.write(part)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)


async def answer_ok(request: Request, writer: asyncio.StreamWriter) -> bool:
    await send(writer, ok())
    return True


@dataclass
class Server:
    reply: Reply = answer_ok
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                head = raw.decode().split("\r\n")[:-2]
                request = Request(number, head, b"")
                request.body = await reader.readexactly(int(request.header("content-length") or 0))
                self.requests.append(request)
                if not await self.reply(request, writer):
                    return
        finally:
            self.open_now -= 1
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(
    reply: Reply = answer_ok, connections: int = 4, client_timeout: float = 2.0
) -> AsyncIterator[tuple[Server, HTTPClient]]:
    """A server answering with `reply`, and a client."""
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    client = HTTPClient(connections=connections, timeout=client_timeout)
    try:
        yield server, client
    finally:
        await client.aclose()
        listener.close()


def test_a_request_is_formatted_and_a_content_length_body_read(run: Run) -> None:
    async def echo(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, ok(json.dumps({"line": request.line, "body": request.body.decode()}).encode()))
        return True

    async def scenario() -> None:
        async with serving(echo) as (server, client):
            response = await client.request(
                "POST",
                f"{server.url}/api/v1/orders",
                json={"size": "1.5", "name": "ünïcode"},
                params={"limit": 10, "cursor": "a b&c"},
                headers={"Authorization": "Bearer t0k3n"},
            )
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.json() == {
            "line": "POST /api/v1/orders?limit=10&cursor=a+b%26c HTTP/1.1",
            "body": '{"size":"1.5","name":"\\u00fcn\\u00efcode"}',
        }
        assert json.loads(response.text)["line"].startswith("POST")
        sent = server.requests[0]
        assert sent.header("host") == f"127.0.0.1:{server.port}"
        assert sent.header("content-type") == "application/json"
        assert sent.header("content-length") == str(len(sent.body))
        assert sent.header("authorization") == "Bearer t0k3n"
        assert json.loads(sent.body) == {"size": "1.5", "name": "ünïcode"}

    run(scenario())


def test_a_get_without_body_has_no_content_headers(run: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, client):
            await client.request("GET", f"{server.url}/health")
        assert server.requests[0].line == "GET /health HTTP/1.1"
        assert server.requests[0].header("content-length") is None
        assert server.requests[0].header("content-type") is None

    run(scenario())


def test_a_body_split_across_many_packets_is_reassembled(run: Run) -> None:
    body = json.dumps({"orders": [{"id": n} for n in range(2000)]}).encode()

    async def trickle(request: Request, writer: asyncio.StreamWriter) -> bool:
        whole = ok(body)
        await send(writer, whole[:7], whole[7:40], whole[40:5000], whole[5000:], pause=0.01)
        return True

    async def scenario() -> None:
        async with serving(trickle) as (server, client):
            response = await client.request("GET", f"{server.url}/orders")
        assert response.content == body and len(response.json()["orders"]) == 2000

    run(scenario())


def test_a_chunked_body_is_decoded(run: Run) -> None:
    async def chunked(request: Request, writer: asyncio.StreamWriter) -> bool:
        head = b"HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n"
        await send(
            writer,
            head + b"5\r\nhel",
            b"lo\r",
            b"\nA;ext=1\r\n, world!!!\r\n",
            b"0\r\nx-trailer: 1\r\n",
            b"\r\n",
            pause=0.01,
        )
        return True

    async def scenario() -> None:
        async with serving(chunked) as (server, client):
            response = await client.request("GET", f"{server.url}/boom")
            assert response.status_code == 500 and response.content == b"hello, world!!!"
            again = await client.request("GET", f"{server.url}/boom")  # the framing kept it in step
        assert again.content == b"hello, world!!!" and server.connections == 1

    run(scenario())


def test_a_204_has_no_body_and_headers_are_parsed_on_demand(run: Run) -> None:
    async def no_content(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, b"HTTP/1.1 204 No Content\r\nX-Seen: a\r\nx-seen: b\r\nServer:  tiny \r\n\r\n")
        return True

    async def scenario() -> None:
        async with serving(no_content) as (server, client):
            first = await client.request("DELETE", f"{server.url}/a", params={"orderId": "1"})
            second = await client.request("DELETE", f"{server.url}/a", params={"orderId": "2", "all": True})
        assert first.status_code == second.status_code == 204 and second.content == b""
        assert first.headers == {"x-seen": "a, b", "server": "tiny"}
        assert server.requests[1].line == "DELETE /a?orderId=2&all=true HTTP/1.1" and server.connections == 1

    run(scenario())


def test_a_malformed_chunk_is_a_transport_error(run: Run) -> None:
    async def bad(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        return True

    async def scenario() -> None:
        async with serving(bad) as (server, client):
            with pytest.raises(http.RemoteProtocolError, match="chunk size"):
                await client.request("GET", f"{server.url}/bad")

    run(scenario())


def test_a_body_without_length_runs_until_the_server_closes(run: Run) -> None:
    async def until_close(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it", pause=0.01)
        return False

    async def scenario() -> None:
        async with serving(until_close) as (server, client):
            assert (await client.request("GET", f"{server.url}/x")).content == b"all of it"
            assert (await client.request("GET", f"{server.url}/x")).content == b"all of it"
        assert server.connections == 2

    run(scenario())


def test_keep_alive_reuses_one_connection(run: Run) -> None:
    async def scenario() -> None:
        async with serving() as (server, client):
            for _ in range(5):
                assert (await client.request("POST", f"{server.url}/a", json={"n": 1})).status_code == 200
        assert server.connections == 1 and len(server.requests) == 5

    run(scenario())


def test_connections_are_capped_and_each_carries_one_request(run: Run) -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        await send(writer, ok())
        return True

    async def scenario() -> None:
        async with serving(slow, connections=2) as (server, client):
            answers = await asyncio.gather(*(client.request("GET", f"{server.url}/s") for _ in range(6)))
        assert [r.status_code for r in answers] == [200] * 6
        assert server.most_open == 2 and server.connections == 2

    run(scenario())


def test_connection_close_is_honoured(run: Run) -> None:
    async def closing(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, ok(extra="connection: close\r\n"))
        return False

    async def scenario() -> None:
        async with serving(closing) as (server, client):
            await client.request("GET", f"{server.url}/a")
            await client.request("GET", f"{server.url}/a")
        assert server.connections == 2

    run(scenario())


def test_a_connection_the_server_closed_while_idle_is_replaced(run: Run) -> None:
    async def once(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, ok())
        return False  # the server's keep-alive timeout, at once

    async def scenario() -> None:
        async with serving(once) as (server, client):
            assert (await client.request("GET", f"{server.url}/a")).status_code == 200
            await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
            assert (await client.request("GET", f"{server.url}/a")).status_code == 200
        assert server.connections == 2 and len(server.requests) == 2

    run(scenario())


def test_a_connection_idle_too_long_is_replaced(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_IDLE", 0.05)

    async def scenario() -> None:
        async with serving() as (server, client):
            await client.request("GET", f"{server.url}/a")
            await asyncio.sleep(0.1)
            await client.request("GET", f"{server.url}/a")
        assert server.connections == 2

    run(scenario())


def test_a_response_cut_short_is_an_error_and_not_resent(run: Run) -> None:
    async def cut(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, ok(b'{"id": "12345678"}')[:-5])
        return False

    async def scenario() -> None:
        async with serving(cut) as (server, client):
            with pytest.raises(http.RemoteProtocolError, match="mid-response"):
                await client.request("POST", f"{server.url}/api/v1/orders", json={"n": 1})
        assert len(server.requests) == 1

    run(scenario())


def test_a_connection_closed_without_an_answer_is_an_error_and_not_resent(run: Run) -> None:
    async def hang_up(request: Request, writer: asyncio.StreamWriter) -> bool:
        return False

    async def scenario() -> None:
        async with serving(hang_up) as (server, client):
            with pytest.raises(TransportError, match="without sending a response"):
                await client.request("POST", f"{server.url}/api/v1/orders", json={"n": 1})
        assert len(server.requests) == 1

    run(scenario())


def test_a_reset_connection_is_a_transport_error(run: Run) -> None:
    async def reset(request: Request, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        await send(writer, b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await asyncio.sleep(0.02)
        return False

    async def scenario() -> None:
        async with serving(reset) as (server, client):
            with pytest.raises(TransportError):
                await client.request("GET", f"{server.url}/a")
        assert len(server.requests) == 1

    run(scenario())


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped(run: Run) -> None:
    async def late(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.line.startswith("GET /slow"):
            await asyncio.sleep(0.5)
        await send(writer, ok(request.line.encode()))
        return True

    async def scenario() -> None:
        async with serving(late, connections=1, client_timeout=0.2) as (server, client):
            with pytest.raises(http.ReadTimeout):
                await client.request("GET", f"{server.url}/slow")
            response = await client.request("GET", f"{server.url}/fast")  # not the late answer to /slow
        assert response.content == b"GET /fast HTTP/1.1" and server.connections == 2

    run(scenario())


def test_a_caller_giving_up_drops_the_connection(run: Run) -> None:
    async def late(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.2 if request.line.startswith("GET /slow") else 0)
        await send(writer, ok(request.line.encode()))
        return True

    async def scenario() -> None:
        async with serving(late) as (server, client):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.request("GET", f"{server.url}/slow")
            assert (await client.request("GET", f"{server.url}/fast")).content == b"GET /fast HTTP/1.1"

    run(scenario())


def test_nobody_listening_is_a_connect_error(run: Run) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        lonely = HTTPClient(timeout=1.0)
        with pytest.raises(http.ConnectError, match="cannot connect"):
            await lonely.request("GET", f"http://127.0.0.1:{port}/")
        await lonely.aclose()

    run(scenario())


def test_a_malformed_status_line_is_a_transport_error(run: Run) -> None:
    async def garbage(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, b"SSH-2.0-OpenSSH\r\n\r\n")
        return True

    async def scenario() -> None:
        async with serving(garbage) as (server, client):
            with pytest.raises(http.RemoteProtocolError, match="status line"):
                await client.request("GET", f"{server.url}/a")

    run(scenario())


def test_raise_for_status_names_the_status_and_url() -> None:
    response = Response(404, "Not Found", b'{"error":"no such order"}', "GET", "http://h:1/api/v1/x?id=1")
    with pytest.raises(HTTPStatusError, match=r"HTTP 404 Not Found for GET http://h:1/api/v1/x\?id=1"):
        response.raise_for_status()
    ok_response = Response(201, "Created", b"", "POST", "http://h:1/")
    assert ok_response.raise_for_status() is ok_response
