"""The chaos report: operations, faults injected, deliveries, violations, time to drain — as Markdown (for
docs/reliability.md), on the console, and as JSON."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown


def _restart_line(seconds: dict[str, list[float]]) -> str:
    parts = [
        f"{role} median {statistics.median(values):.1f} s, max {max(values):.1f} s"
        for role, values in sorted(seconds.items())
        if values
    ]
    return "; ".join(parts) or "–"


def _market_lines(delivery: dict[str, Any]) -> list[str]:
    market = delivery.get("market")
    if not market:
        return []
    endings = "; ".join(f"{kind} {n}" for kind, n in market["endings"].items()) or "–"
    return [
        f"Market: {', '.join(market.get('symbols', []))}, close {market.get('close')}; quotes recorded "
        f"{market['quotes_recorded']} (gaps {market['quote_record_gaps']}); executions the record could not "
        f"confirm: {delivery.get('executions_unverifiable', '–')}; BUYs executed below what they reserved: "
        f"{delivery.get('buys_below_their_reservation', '–')}; MATCHED after the market service's last kill: "
        f"{market['matched_after_last_market_kill']}; resting orders cancelled at the end: "
        f"{delivery.get('resting_orders_swept', '–')}.",
        f"Orders other than LIMIT GTC, and every cancel, by how they ended: {endings}.",
    ]


def _spread(figures: dict[str, Any]) -> str:
    if not figures.get("count"):
        return "–"
    return f"median {figures['median_s']} s, max {figures['max_s']} s ({figures['count']})"


def _availability_lines(report: dict[str, Any]) -> list[str]:
    seen = report.get("availability")
    if not seen:
        return []
    servers = ", ".join(f"{name} {n}" for name, n in sorted(report["faults"].get("servers", {}).items()))
    lines = [
        "",
        "| availability (what the clients saw during the faults) | |",
        "| --- | --- |",
        f"| requests answered at the first attempt | {seen['answered_first_time']} of {seen['requests']} "
        f"({seen['answered_first_time_pct']} %) |",
        f"| longest time without a successful create | {seen['longest_without_a_create_s']} s "
        f"(from {seen['longest_without_a_create_from_s']} s into the load) |",
    ]
    if seen["relay_takeover"].get("count"):
        back = seen.get("relay_taken_back_by_the_killed_one", 0)
        first = f"; {back} times the killed one, restarted, took the slot first" if back else ""
        lines.append(
            "| active relay killed → a relay of its database streams again "
            f"| {_spread(seen['relay_takeover'])}{first} |"
        )
    if seen["leader_kills"]:
        lines += [
            f"| events stream leader killed → a leader again | {_spread(seen['leader_election'])} |",
            f"| … → the stream stores again (publish stall) | {_spread(seen['publish_stall'])} |",
        ]
    if servers:
        lines.append(f"| servers crashed | {servers} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    config, faults, delivery = report["config"], report["faults"], report["delivery"]
    server_errors = report.get("server_errors", [])
    lines = [
        f"Run {report['started']} → {report['finished']}"
        f"{' on a cluster (oms up --cluster)' if config.get('cluster') else ''}; workload and faults over "
        f"{report['load_seconds']} s "
        f"(planned {config['duration']:g} s), {config['customers']} customers, seed {config['seed']}.",
        "",
        "| operation | sent | accepted | refused | ambiguous | unresolved |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, counts in report["operations"].items():
        lines.append(
            f"| {kind} | {counts.get('sent', 0)} | {counts.get('accepted', 0)} | {counts.get('refused', 0)} "
            f"| {counts.get('ambiguous', 0)} | {counts.get('unresolved', 0)} |"
        )
    errors = ", ".join(f"{k} {v}" for k, v in sorted(report["http_errors"].items())) or "none"
    kills = ", ".join(f"{role} {n}" for role, n in sorted(faults["kills"].items()))
    lines += [
        "",
        f"Requests retried (same Idempotency-Key): {report['retries']}; failed attempts seen: {errors}.",
        "",
        "| fault | count |",
        "| --- | ---: |",
        f"| SIGKILL of a service or relay ({kills}) | {faults['total_kills']} |",
        f"| … of them, a service while its consumer held unacknowledged deliveries "
        f"| {faults.get('service_kills_while_busy', 0)} |",
        f"| NATS server crash (SIGKILL) + restart | {faults['nats_restarts']} |",
        f"| PostgreSQL crash (SIGKILL / immediate shutdown) + restart | {faults['pg_restarts']} |",
        f"| events published twice (new Nats-Msg-Id, same event) | {faults['duplicates_published']} |",
        "",
        f"Time from kill to the restarted process: {_restart_line(faults['restart_seconds'])}.",
        *_availability_lines(report),
        "",
        "| consumer | deliveries | messages | redeliveries | inbox rows "
        "| acked / retried / dead-lettered (≥) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    service_of = {"account": "account", "order": "order"}
    for consumer, stats in delivery["consumers"].items():
        seen = delivery.get("consumer_metrics", {}).get(consumer, {})
        inbox = delivery.get("inbox_rows", {}).get(service_of.get(consumer, consumer), "–")
        lines.append(
            f"| {consumer} | {stats['deliveries']} | {stats['messages']} | {stats['redeliveries']} | {inbox} "
            f"| {seen.get('acked', 0)} / {seen.get('retried', 0)} / {seen.get('dead_lettered', 0)} |"
        )
    orders = delivery.get("orders", {})
    lines += [
        "",
        f"Duplicates stopped by the inbox: {delivery.get('duplicates_stopped_by_inbox', 0)} of "
        f"{faults['duplicates_published']} published. Dead letters: {delivery.get('dead_letters', '–')}. "
        f"Outbox rows left after quiescence: {delivery.get('outbox_rows_left', '–')}.",
        f"Orders stored: {orders.get('stored', 0)} — MATCHED {orders.get('MATCHED', 0)}, "
        f"CANCELED {orders.get('CANCELED', 0)}, PENDING {orders.get('PENDING', 0)}.",
        f"Money: {json.dumps(delivery.get('money', {}))}.",
        *_market_lines(delivery),
        f"Time to drain after the faults stopped: {report['drain_seconds']} s.",
        f"Requests the services answered with 500, as they logged them: {len(server_errors)}.",
        *(f"- {error}" for error in server_errors[:5]),
        "",
        f"**Violations: {len(report['violations'])}**",
    ]
    lines += [f"- {v}" for v in report["violations"][:50]]
    return "\n".join(lines) + "\n"


def show(report: dict[str, Any], console: Console) -> None:
    console.print(Markdown(markdown(report)))


def save(report: dict[str, Any], directory: Path, stamp: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"chaos-{stamp}.json", directory / f"chaos-{stamp}.md"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
