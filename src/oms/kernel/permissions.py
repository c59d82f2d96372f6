"""Who may do what on the broker: one NATS identity per component, each allowed only what its job needs,
derived from the topology (docs/decisions/009).

- `relay-<service>` publishes its producer's subjects, and reads its stream's info while it waits for it.
- a service (`order`, `account`) pulls from and acknowledges its own durable consumer, reads its info,
  publishes its own dead letters and reads/removes dead letters (ops, replay); never an event subject.
- `backoffice` asks JetStream for its account info (the System page's broker health), and reads and writes
  its own key-value bucket (the audit's lease and last result, shared by its replicas), nothing more.
- `market` (the market service's feed) publishes market data, `oms.market.>`, and nothing else.
- the readers of market data (`MARKET_READERS`) may create an ephemeral consumer of OMS_MARKET (the stream
  holds market data only, which every signed-in user may see anyway) delivered to their own inbox.
- `operator` (`oms up`, `oms dlq`, bench, chaos) may do everything: streams, consumers, purges.

Every identity but the operator subscribes only under its own inbox prefix, so none can read another's
replies, and none can take a core subscription on the event or dead-letter subjects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from oms.kernel.market import MARKET_STREAM, MARKET_SUBJECTS
from oms.kernel.topology import (
    BACKOFFICE_BUCKET,
    BACKOFFICE_BUCKET_STREAM,
    CONSUMERS,
    EVENTS_STREAM,
    PRODUCERS,
    Consumer,
    Producer,
)

OPERATOR: Final = "operator"
BACKOFFICE: Final = "backoffice"
MARKET: Final = "market"
MARKET_READERS: Final = ("order", "account", BACKOFFICE, MARKET)
_JS_API: Final = "$JS.API"
# Creating a consumer of OMS_MARKET named anything, filtered on market subjects (kernel/market_view.py).
READ_MARKET: Final = f"{_JS_API}.CONSUMER.CREATE.{MARKET_STREAM}.*.{MARKET_SUBJECTS}"


@dataclass(frozen=True)
class Permissions:
    """The subjects an identity may publish to and subscribe to (None: anything — the operator only)."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None


def inbox_prefix(identity: str) -> str:
    """Where the replies to `identity`'s requests arrive (`_INBOX.order.<id>`): its own, no one else's."""
    return f"_INBOX.{identity}"


def _own_inbox(identity: str) -> tuple[str, ...]:
    return (f"{inbox_prefix(identity)}.>",)


def relay_permissions(producer: Producer) -> Permissions:
    return Permissions(
        publish=(producer.subjects, f"{_JS_API}.STREAM.INFO.{EVENTS_STREAM}"),
        subscribe=_own_inbox(producer.relay),
    )


def service_permissions(consumer: Consumer) -> Permissions:
    return Permissions(
        publish=(
            f"{_JS_API}.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{consumer.name}",
            f"{_JS_API}.CONSUMER.INFO.{EVENTS_STREAM}.{consumer.name}",
            f"$JS.ACK.{EVENTS_STREAM}.{consumer.name}.>",
            consumer.dead_letters,
            # Its own dead-letter queue only: JetStream cannot narrow these two by subject, so each
            # consumer's dead letters have a stream of their own (docs/decisions/009).
            f"{_JS_API}.STREAM.MSG.GET.{consumer.dead_letter_stream}",
            f"{_JS_API}.STREAM.MSG.DELETE.{consumer.dead_letter_stream}",
        ),
        subscribe=_own_inbox(consumer.name),
    )


BACKOFFICE_PUBLISHES: Final = (
    f"{_JS_API}.INFO",
    # Its own bucket only: bind to it, read a key, write (create, update, delete) a key.
    f"{_JS_API}.STREAM.INFO.{BACKOFFICE_BUCKET_STREAM}",
    f"{_JS_API}.DIRECT.GET.{BACKOFFICE_BUCKET_STREAM}.>",
    f"$KV.{BACKOFFICE_BUCKET}.>",
)


def _reading_market(identity: str, allowed: Permissions) -> Permissions:
    if identity not in MARKET_READERS or allowed.publish is None:
        return allowed
    return Permissions(publish=(*allowed.publish, READ_MARKET), subscribe=allowed.subscribe)


def _all() -> dict[str, Permissions]:
    allowed = {OPERATOR: Permissions(publish=None, subscribe=None)}
    allowed |= {p.relay: relay_permissions(p) for p in PRODUCERS.values()}
    allowed |= {c.name: service_permissions(c) for c in CONSUMERS.values()}
    allowed[BACKOFFICE] = Permissions(publish=BACKOFFICE_PUBLISHES, subscribe=_own_inbox(BACKOFFICE))
    allowed[MARKET] = Permissions(publish=(MARKET_SUBJECTS,), subscribe=_own_inbox(MARKET))
    return {identity: _reading_market(identity, rules) for identity, rules in allowed.items()}


PERMISSIONS: Final[Mapping[str, Permissions]] = MappingProxyType(_all())
# operator, relay-order, relay-account, account, order, backoffice, market
IDENTITIES: Final = tuple(PERMISSIONS)
