"""A decoder of PostgreSQL's `pgoutput` logical replication messages, protocol version 1.

Only what the relay needs: Begin, Commit, Relation and Insert (text tuple data). Every other message type
decodes to None, so a server that sends more (Type, Origin, Update, Truncate, ...) does no harm.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

POSTGRES_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)

_BEGIN = struct.Struct(">QqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct(">bQQq")  # flags, commit LSN, end LSN, commit time
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")


class DecodeError(ValueError):
    """A pgoutput message that is cut short or not what its type byte says."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    values: tuple[str | None, ...]  # text form; None for SQL NULL or a value not sent (unchanged TOAST)


Message = Begin | Commit | Relation | Insert


def timestamp(micros: int) -> datetime:
    """A pgoutput timestamp (microseconds since 2000-01-01 UTC) as an aware datetime."""
    return POSTGRES_EPOCH + timedelta(microseconds=micros)


def decode(payload: bytes) -> Message | None:
    """The message in `payload`, or None for a type the relay does not use."""
    if not payload:
        raise DecodeError("empty pgoutput message")
    try:
        kind = payload[:1]
        if kind == b"B":
            final_lsn, micros, xid = _BEGIN.unpack_from(payload, 1)
            return Begin(final_lsn, timestamp(micros), xid)
        if kind == b"C":
            _, commit_lsn, end_lsn, micros = _COMMIT.unpack_from(payload, 1)
            return Commit(commit_lsn, end_lsn, timestamp(micros))
        if kind == b"R":
            return _relation(payload)
        if kind == b"I":
            return _insert(payload)
    except DecodeError:
        raise
    except (struct.error, ValueError) as exc:  # also a missing string terminator, bad UTF-8
        raise DecodeError(f"malformed pgoutput {payload[:1]!r} message: {exc}") from exc
    return None


class _Reader:
    __slots__ = ("buffer", "offset")

    def __init__(self, buffer: bytes, offset: int) -> None:
        self.buffer = buffer
        self.offset = offset

    def unpack(self, fmt: struct.Struct) -> int:
        (value,) = fmt.unpack_from(self.buffer, self.offset)
        self.offset += fmt.size
        return int(value)

    def byte(self) -> bytes:
        value = self.buffer[self.offset : self.offset + 1]
        if not value:
            raise DecodeError("message cut short")
        self.offset += 1
        return value

    def string(self) -> str:
        end = self.buffer.index(b"\0", self.offset)
        value = self.buffer[self.offset : end].decode()
        self.offset = end + 1
        return value

    def take(self, length: int) -> bytes:
        value = self.buffer[self.offset : self.offset + length]
        if len(value) != length:
            raise DecodeError("message cut short")
        self.offset += length
        return value


def _relation(payload: bytes) -> Relation:
    reader = _Reader(payload, 1)
    oid = reader.unpack(_UINT32)
    namespace = reader.string()
    name = reader.string()
    reader.byte()  # replica identity
    columns = []
    for _ in range(reader.unpack(_INT16)):
        reader.byte()  # flags: part of the key
        columns.append(reader.string())
        reader.take(8)  # type oid, type modifier
    return Relation(oid, namespace or "pg_catalog", name, tuple(columns))


def _insert(payload: bytes) -> Insert:
    reader = _Reader(payload, 1)
    oid = reader.unpack(_UINT32)
    if reader.byte() != b"N":
        raise DecodeError("insert without a new tuple")
    values: list[str | None] = []
    for _ in range(reader.unpack(_INT16)):
        kind = reader.byte()
        if kind == b"t":
            values.append(reader.take(reader.unpack(_INT32)).decode())
        elif kind in (b"n", b"u"):
            values.append(None)
        else:
            raise DecodeError(f"unknown tuple column kind {kind!r}")
    return Insert(oid, tuple(values))
