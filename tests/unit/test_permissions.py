"""Who may do what on the broker, as derived from the topology (docs/decisions/009)."""

from __future__ import annotations

import json

from oms.kernel.permissions import (
    BACKOFFICE,
    IDENTITIES,
    MARKET,
    MARKET_READERS,
    OPERATOR,
    PERMISSIONS,
    READ_MARKET,
    inbox_prefix,
)
from oms.kernel.topology import CONSUMERS, PRODUCERS, SUBJECT_ROOT
from oms.runtime.identities import authorization


def test_each_relay_publishes_only_its_producers_subjects() -> None:
    assert PERMISSIONS["relay-order"].publish == ("oms.order.>", "$JS.API.STREAM.INFO.OMS_EVENTS")
    assert PERMISSIONS["relay-account"].publish == ("oms.funds.>", "$JS.API.STREAM.INFO.OMS_EVENTS")
    for producer in PRODUCERS.values():
        assert PERMISSIONS[producer.relay].subscribe == (f"_INBOX.{producer.relay}.>",)


def test_no_one_but_the_operator_may_publish_or_subscribe_an_event_subject_or_another_inbox() -> None:
    for identity in IDENTITIES:
        allowed = PERMISSIONS[identity]
        if identity == OPERATOR:
            assert allowed.publish is None and allowed.subscribe is None
            continue
        assert allowed.publish is not None and allowed.subscribe == (f"{inbox_prefix(identity)}.>",)
        events = [s for s in allowed.publish if s.startswith(f"{SUBJECT_ROOT}.")]
        relayed = [p.subjects for p in PRODUCERS.values() if p.relay == identity]
        assert events == (["oms.market.>"] if identity == MARKET else relayed), identity
        assert not any(
            s.startswith("$JS.API.STREAM.") and s.split(".")[3] in {"CREATE", "UPDATE", "DELETE", "PURGE"}
            for s in allowed.publish
        ), identity


def test_a_service_pulls_acks_and_dead_letters_only_for_its_own_consumer() -> None:
    for consumer in CONSUMERS.values():
        allowed = PERMISSIONS[consumer.name].publish
        assert allowed is not None
        assert f"$JS.API.CONSUMER.MSG.NEXT.OMS_EVENTS.{consumer.name}" in allowed
        assert f"$JS.ACK.OMS_EVENTS.{consumer.name}.>" in allowed
        assert consumer.dead_letters in allowed
        others = [c.name for c in CONSUMERS.values() if c is not consumer]
        assert not any(f".{other}" in s for s in allowed for other in others), allowed
    assert PERMISSIONS[BACKOFFICE].publish == (
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.KV_OMS_BACKOFFICE",
        "$JS.API.DIRECT.GET.KV_OMS_BACKOFFICE.>",
        "$KV.OMS_BACKOFFICE.>",
        READ_MARKET,
    )


def test_the_market_feed_publishes_market_data_only_and_its_readers_may_read_it() -> None:
    assert PERMISSIONS[MARKET].publish == ("oms.market.>", READ_MARKET)
    assert READ_MARKET == "$JS.API.CONSUMER.CREATE.OMS_MARKET.*.oms.market.>"
    readers = {i for i in IDENTITIES if READ_MARKET in (PERMISSIONS[i].publish or ())}
    assert readers == set(MARKET_READERS) == {"order", "account", "backoffice", "market"}


def test_the_server_configuration_lists_every_identity_and_no_anonymous_user() -> None:
    keys = {identity: f"U{identity.upper()}" for identity in IDENTITIES}
    block = json.loads(authorization(keys).removeprefix("authorization: "))
    assert [u["nkey"] for u in block["users"]] == list(keys.values())
    assert block["users"][0]["permissions"] == {}  # the operator
    assert set(block) == {"users"}  # no no_auth_user, no default permissions
