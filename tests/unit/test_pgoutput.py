"""The pgoutput decoder, on messages built byte by byte as PostgreSQL sends them (protocol version 1)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from oms.kernel import pgoutput
from oms.kernel.broker import Outgoing
from oms.kernel.pgoutput import Begin, Commit, DecodeError, Insert, Relation, decode
from oms.kernel.walreader import OutboxDecoder

MICROS_2024 = int((datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC) - pgoutput.POSTGRES_EPOCH).total_seconds() * 1e6)


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def relation_message(oid: int, namespace: str, name: str, columns: list[str]) -> bytes:
    body = b"R" + struct.pack(">I", oid) + cstring(namespace) + cstring(name) + b"d"
    body += struct.pack(">h", len(columns))
    for index, column in enumerate(columns):
        body += struct.pack(">b", 1 if index == 0 else 0) + cstring(column) + struct.pack(">Ii", 25, -1)
    return body


def insert_message(oid: int, values: list[str | None]) -> bytes:
    body = b"I" + struct.pack(">I", oid) + b"N" + struct.pack(">h", len(values))
    for value in values:
        if value is None:
            body += b"n"
        else:
            data = value.encode()
            body += b"t" + struct.pack(">i", len(data)) + data
    return body


def test_begin_gives_final_lsn_commit_time_and_xid() -> None:
    message = decode(b"B" + struct.pack(">QqI", 0x16B3748, MICROS_2024, 735))
    assert message == Begin(0x16B3748, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), 735)


def test_commit_gives_commit_and_end_lsn() -> None:
    message = decode(b"C" + struct.pack(">bQQq", 0, 0x16B3748, 0x16B3778, MICROS_2024))
    assert message == Commit(0x16B3748, 0x16B3778, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_relation_gives_names_of_the_columns() -> None:
    message = decode(relation_message(16385, "public", "outbox", ["seq", "id", "subject", "payload"]))
    assert message == Relation(16385, "public", "outbox", ("seq", "id", "subject", "payload"))


def test_relation_in_pg_catalog_has_an_empty_namespace() -> None:
    message = decode(relation_message(1, "", "pg_class", ["oid"]))
    assert isinstance(message, Relation) and message.namespace == "pg_catalog"


def test_insert_gives_text_values_and_none_for_null_and_unchanged_toast() -> None:
    message = decode(insert_message(16385, ["7", "ü-id", None, '{"a": "1.5"}']))
    assert message == Insert(16385, ("7", "ü-id", None, '{"a": "1.5"}'))
    toast = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"u"
    assert decode(toast) == Insert(1, (None,))


@pytest.mark.parametrize("kind", [b"O", b"Y", b"U", b"D", b"T", b"M", b"S", b"E"])
def test_messages_the_relay_does_not_use_are_ignored(kind: bytes) -> None:
    assert decode(kind + b"\x00" * 16) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"B\x00\x01",
        b"C" + struct.pack(">bQ", 0, 1),
        relation_message(1, "public", "outbox", ["id"])[:-5],
        b"R" + struct.pack(">I", 1) + b"no terminator",
        insert_message(1, ["abc"])[:-1],
        b"I" + struct.pack(">I", 1) + b"K",
        b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"x",
        b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 2) + b"\xff\xfe",
    ],
)
def test_malformed_messages_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(payload)


def test_outbox_decoder_gives_each_committed_transaction_with_its_outbox_events_only() -> None:
    decoder = OutboxDecoder()
    begin = b"B" + struct.pack(">QqI", 200, MICROS_2024, 9)
    stream = [
        relation_message(10, "public", "outbox", ["seq", "id", "subject", "payload", "created_at"]),
        relation_message(11, "public", "orders", ["id", "status"]),
        begin,
        insert_message(11, ["o1", "PENDING"]),
        insert_message(10, ["1", "e1", "oms.order.created", '{"id": "e1"}', "2024-01-02"]),
        insert_message(10, ["2", "e2", "oms.order.canceled", '{"id": "e2"}', "2024-01-02"]),
    ]
    assert [decoder.feed(message) for message in stream] == [None] * len(stream)

    transaction = decoder.feed(b"C" + struct.pack(">bQQq", 0, 180, 200, MICROS_2024))

    assert transaction is not None
    assert transaction.end_lsn == 200
    assert transaction.events == [
        Outgoing("oms.order.created", b'{"id": "e1"}', "e1"),
        Outgoing("oms.order.canceled", b'{"id": "e2"}', "e2"),
    ]
    assert decoder.feed(begin) is None
    empty = decoder.feed(b"C" + struct.pack(">bQQq", 0, 220, 240, MICROS_2024))
    assert empty is not None and empty.events == []
