"""Where events go, in one place: the streams, which service publishes which subjects, which durable consumer
reads them, and the names that tie a relayed database to the broker (outbox table, publication, replication
slot). The relay, the consumers, the broker's set-up and permissions, ops, audit, bench and chaos all read it
here instead of spelling the names again.

An event of type `funds.reserved` travels on the subject `oms.funds.reserved`; the account service is the
only one whose events start with `funds.`, so only its relay may publish `oms.funds.>`, and only the order
service's durable consumer reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

SUBJECT_ROOT: Final = "oms"
EVENTS_STREAM: Final = "OMS_EVENTS"  # every relayed event, subjects `EVENT_SUBJECTS`
# What consumers gave up on: each consumer's own stream `OMS_DLQ_<CONSUMER>`, subjects
# `oms_dlq.<consumer>.<original subject>`, so that a service may read and remove its own dead letters only.
DLQ_ROOT: Final = "oms_dlq"
# Until 2026-12-06 all consumers shared this one; `oms up` moves what it holds into the consumers' own.
SHARED_DLQ_STREAM: Final = "OMS_DLQ"

# In every relayed database (created by the service's migrations).
OUTBOX_TABLE: Final = "outbox"
RELAY_SLOTS_TABLE: Final = "relay_slots"
PUBLICATION: Final = "oms_outbox"


def slot_name(service: str) -> str:
    """The logical replication slot the relay of `service`'s database streams."""
    return f"oms_{service}_outbox"


def subject_of(event_type: str) -> str:
    """The broker subject of an event type: `order.created` → `oms.order.created`."""
    return f"{SUBJECT_ROOT}.{event_type}"


def type_of(subject: str) -> str:
    """The event type a subject carries: `oms.order.created` → `order.created`."""
    return subject.removeprefix(f"{SUBJECT_ROOT}.")


@dataclass(frozen=True)
class Producer:
    """A service whose outbox a relay publishes: its event types are `<prefix>.<what>`."""

    service: str
    prefix: str

    @property
    def subjects(self) -> str:
        """The subjects its relay publishes, as a wildcard."""
        return f"{SUBJECT_ROOT}.{self.prefix}.>"

    @property
    def slot(self) -> str:
        return slot_name(self.service)

    @property
    def relay(self) -> str:
        """The name of its relay, as a component (`relay-order`)."""
        return f"relay-{self.service}"

    def publishes(self, event_type: str) -> bool:
        return event_type.startswith(f"{self.prefix}.")


@dataclass(frozen=True)
class Consumer:
    """The durable consumer of `name` (shared by its replicas): reads what `reads` publishes."""

    name: str
    reads: Producer

    @property
    def subjects(self) -> str:
        return self.reads.subjects

    @property
    def dead_letter_stream(self) -> str:
        """The stream holding its dead letters, and no one else's."""
        return f"OMS_DLQ_{self.name.upper()}"

    @property
    def dead_letters(self) -> str:
        """The subjects its dead letters are kept under."""
        return f"{DLQ_ROOT}.{self.name}.>"

    def dead_letter_subject(self, original_subject: str) -> str:
        return f"{DLQ_ROOT}.{self.name}.{original_subject}"

    def accepts(self, subject: str, event_type: str) -> bool:
        """True when an event of `event_type` on `subject` is one its producer may publish: the subject is the
        type's own, and the type is the producer's."""
        return subject == subject_of(event_type) and self.reads.publishes(event_type)

    def refusal(self, subject: str, event_type: str) -> str | None:
        """Why an event of `event_type` on `subject` is not one this consumer applies (None: it is)."""
        if self.accepts(subject, event_type):
            return None
        return (
            f"refused: a {event_type!r} event on {subject}; the {self.name} consumer applies only events of"
            f" the {self.reads.service} service ({self.reads.prefix}.*), each on its own subject"
        )


ORDER: Final = Producer("order", "order")
ACCOUNT: Final = Producer("account", "funds")

PRODUCERS: Final[Mapping[str, Producer]] = MappingProxyType({p.service: p for p in (ORDER, ACCOUNT)})
RELAYED: Final = tuple(PRODUCERS)  # the services with an outbox and a relay
# The subjects of the events stream: only what the relays publish. Market data (`oms.market.>`) has a stream
# of its own (kernel/market.py), and a stream may not take subjects another one has.
EVENT_SUBJECTS: Final = tuple(p.subjects for p in PRODUCERS.values())

CONSUMERS: Final[Mapping[str, Consumer]] = MappingProxyType(
    {c.name: c for c in (Consumer("account", reads=ORDER), Consumer("order", reads=ACCOUNT))}
)


def producer_of(event_type: str) -> Producer | None:
    """The service that publishes events of `event_type`, if any."""
    return next((p for p in PRODUCERS.values() if p.publishes(event_type)), None)


def consumer_of(event_type: str) -> Consumer | None:
    """The durable consumer that receives events of `event_type` (whose inbox records them), if any."""
    producer = producer_of(event_type)
    return next((c for c in CONSUMERS.values() if c.reads is producer), None)


DLQ_STREAMS: Final = tuple(c.dead_letter_stream for c in CONSUMERS.values())

# State the back office's replicas share (the audit's lease and last result; docs/decisions/018): a JetStream
# key-value bucket, i.e. the stream `KV_<bucket>` on the subjects `$KV.<bucket>.<key>`.
BACKOFFICE_BUCKET: Final = "OMS_BACKOFFICE"
BACKOFFICE_BUCKET_STREAM: Final = f"KV_{BACKOFFICE_BUCKET}"
