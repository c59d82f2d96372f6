"""All configuration in one place: environment variables with the prefix `OMS_` (see README)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from oms.kernel.market import DEFAULT_COLLAR

SERVICES = ("auth", "order", "account", "market")
log = logging.getLogger(__name__)


class ExecutionMode(StrEnum):
    MARKET = "market"  # executed whole at the market's price when a quote crosses it (SPEC §3b)
    IMMEDIATE = "immediate"  # executed at once at its limit price (the original system)
    MANUAL = "manual"  # executed by an admin's match, at the market's price


class QuoteSource(StrEnum):
    """Where the market service's quotes come from."""

    SIM = "sim"  # a seeded random walk around each reference price
    REPLAY = "replay"  # the rows of a CSV file (OMS_MARKET_REPLAY_FILE)


class DepositPolicy(StrEnum):
    """What a customer's deposit does (an admin's is always credited at once)."""

    REQUEST = "request"  # waits for an admin's approval
    INSTANT = "instant"  # credited at once: demos only
    OFF = "off"  # deposits are admin-only


_DEPRECATED_POLICIES: Final = {"true": DepositPolicy.INSTANT, "false": DepositPolicy.OFF}


def _deposit_policy(value: object) -> object:
    """OMS_CUSTOMER_DEPOSITS, with the old true/false read as instant/off (and a deprecation line)."""
    old = str(value).strip().lower()
    if old in _DEPRECATED_POLICIES:
        new = _DEPRECATED_POLICIES[old]
        log.warning("OMS_CUSTOMER_DEPOSITS=%s is deprecated: it means %s; set that instead", old, new.value)
        return new
    return value


@dataclass(frozen=True)
class MarketClose:
    """When the market closes each day (DAY orders still PENDING then expire): a wall-clock time in a zone."""

    at: time
    zone: ZoneInfo

    def last(self, now: datetime) -> datetime:
        """The latest close at or before `now`."""
        local = now.astimezone(self.zone)
        today = datetime.combine(local.date(), self.at, self.zone)
        return (
            today
            if today <= local
            else datetime.combine(local.date() - timedelta(days=1), self.at, self.zone)
        )

    def next(self, now: datetime) -> datetime:
        """The first close after `now`."""
        local = now.astimezone(self.zone)
        today = datetime.combine(local.date(), self.at, self.zone)
        return (
            today if today > local else datetime.combine(local.date() + timedelta(days=1), self.at, self.zone)
        )

    @staticmethod
    def parse(text: str) -> MarketClose:
        """OMS_MARKET_CLOSE: "HH:MM" (Europe/Istanbul) or "HH:MM Area/City"; ValueError otherwise."""
        at, _, zone = text.strip().partition(" ")
        try:
            return MarketClose(time.fromisoformat(at), ZoneInfo(zone.strip() or "Europe/Istanbul"))
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ValueError(f"market close {text!r}: expected HH:MM and an optional time zone") from exc


def _market_close(value: object) -> object:
    MarketClose.parse(str(value))
    return value


def _local_url(scheme: str, given: dict[str, Any], port_setting: str) -> str:
    """The URL of a server of this machine, from the settings read so far (those above in the class)."""
    host = str(given["host"])
    # Listening on every address: reached through the loopback one.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{given[port_setting]}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMS_", extra="ignore")

    data_dir: Path = Path(".oms")
    host: str = "127.0.0.1"
    order_port: int = 666
    account_port: int = 667
    auth_port: int = 668
    backoffice_port: int = 669
    market_port: int = 670
    # Each relay serves its Prometheus metrics (events relayed, lag, commit→ack latency) and its probes on its
    # own port.
    order_relay_port: int = 16666
    account_relay_port: int = 16667
    metrics_host: str = "127.0.0.1"  # where each relay's port (/metrics, /livez, /readyz) listens
    # Who may read a service's /metrics on its API port: comma-separated addresses or networks ("*": anyone).
    metrics_clients: str = "127.0.0.0/8,::1"

    # Embedded servers: kept off the machine's own 5432/4222.
    pg_port: int = 15432
    nats_port: int = 14222
    # NATS's HTTP monitoring has no authentication: off unless a port is given, and then on 127.0.0.1 only.
    nats_monitor_port: int | None = None
    # JetStream fsync: "always" (every message on disk before its ack) or an interval such as "1s", "2m".
    nats_sync_interval: str = "1s"
    # Seconds the relay holds an acknowledged event before it deletes its row and confirms its WAL position.
    # Unset: 0 with "always", else 2 × the sync interval, when JetStream has surely synced it (decision 007).
    relay_confirm_delay: float | None = Field(default=None, ge=0)

    # External servers (`oms up --external`, or any single `oms serve`): full URLs.
    external: bool = False
    auth_database_url: str | None = None
    order_database_url: str | None = None
    account_database_url: str | None = None
    market_database_url: str | None = None
    # Each relay's replication role, and the audit's read-only role (`oms up` sets them; docs/decisions/010).
    order_relay_database_url: str | None = None
    account_relay_database_url: str | None = None
    audit_order_database_url: str | None = None
    audit_account_database_url: str | None = None
    # Unset: the embedded server on OMS_HOST:OMS_NATS_PORT (every URL not given follows the port settings).
    nats_url: str = Field(default_factory=lambda given: _local_url("nats", given, "nats_port"))

    # This process's broker identity (docs/decisions/009): one kind of credentials — a .creds file, an nkey
    # seed file, or a user with a password file — and TLS. Unset: the identity's file in the identities folder
    # (default <data-dir>/secrets/nats, where `oms up` keeps the identities it generates).
    nats_identities_dir: Path | None = None
    nats_creds_file: Path | None = None
    nats_nkey_file: Path | None = None
    nats_user: str | None = None
    nats_password_file: Path | None = None
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None

    # Tokens.
    auth_url: str = Field(default_factory=lambda given: _local_url("http", given, "auth_port"))
    token_issuer: str = "oms-auth"
    token_audience: str = "oms"
    token_lifetime_seconds: int = Field(default=3600, ge=60, le=86400)
    private_key_file: Path | None = None
    # How often every service asks auth for revoked tokens, and how old that list may grow (auth unreachable)
    # before tokens are refused with 503 rather than accepted unchecked (docs/decisions/012).
    revocation_poll_seconds: float = Field(default=1.0, gt=0, le=5)
    revocation_max_staleness_seconds: float = Field(default=30.0, ge=5)

    # HTTP, in every service. The client address is the TCP peer; X-Forwarded-For/-Proto are believed only
    # from these proxies (comma-separated addresses or networks; none by default).
    trusted_proxies: str = ""
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Secrets shared by services (default: <data-dir>/secrets/…, created on first use; replicas on other
    # hosts need the same files): the back office signs the browser's address for auth with the first;
    # services read auth's revocations with the second.
    client_address_key_file: Path | None = None
    service_key_file: Path | None = None

    # The back office: where it finds the services (`oms up` sets them), and the key that encrypts its
    # session cookies (a Fernet key; default: <data-dir>/secrets/backoffice-session.key).
    order_url: str = Field(default_factory=lambda given: _local_url("http", given, "order_port"))
    account_url: str = Field(default_factory=lambda given: _local_url("http", given, "account_port"))
    market_url: str = Field(default_factory=lambda given: _local_url("http", given, "market_port"))
    backoffice_session_key: SecretStr | None = None
    # The back office's ticker strip: symbols shown to admins (and after a customer's own), comma-separated;
    # empty: admins see the most ordered symbols, then the first listed.
    backoffice_ticker: str = ""

    # The first admin.
    admin_username: str | None = None
    admin_password: SecretStr | None = None

    # Brute-force protection of /login.
    login_user_max_failures: int = 5
    login_address_max_failures: int = 20
    login_failure_window_seconds: int = 900
    login_max_lockout_seconds: int = 900
    # Registrations per address (admins creating users are not counted), then slower and slower.
    register_address_max_attempts: int = 10
    register_window_seconds: int = 3600

    # The market service's quotes (SPEC §3b): the source, the random walk's seed, quotes per second of each
    # symbol, and for `replay` the file and its speed (1: as recorded; 0: as fast as the broker takes them).
    market_source: QuoteSource = QuoteSource.SIM
    market_seed: int = 1
    # 0.2 a second per symbol (~105 quotes/s over 524 symbols): at 1 a second the quote traffic alone raised
    # create→MATCHED p99 at 250 orders/s from ~29 to 43 ms on 2 cores (docs/benchmarks.md, run F).
    market_quotes_per_second: float = Field(default=0.2, gt=0, le=10_000)
    market_replay_file: Path | None = None
    market_replay_speed: float = Field(default=1.0, ge=0)

    # How a reserved order executes (SPEC §3b). In every mode the order service follows the market service's
    # instruments and quotes, and refuses orders the market would not take (unlisted, halted, off the band).
    execution: ExecutionMode = ExecutionMode.MARKET
    # A MARKET BUY reserves size × ask × (1 + collar); it is canceled if the ask has moved further by the
    # time it executes. DAY orders still PENDING at the close expire.
    market_order_collar: Decimal = Field(default=DEFAULT_COLLAR, ge=0, le=1)
    market_close: Annotated[str, AfterValidator(_market_close)] = "18:00 Europe/Istanbul"
    customer_deposits: Annotated[DepositPolicy, BeforeValidator(_deposit_policy)] = DepositPolicy.REQUEST
    # TRY: a withdrawal above it waits for an admin's approval (four eyes), its amount held meanwhile.
    withdrawal_approval_threshold: Decimal = Field(default=Decimal(50_000), ge=0)
    log_format: str = "auto"  # auto | json | text
    log_level: str = "INFO"

    def relay_hold_seconds(self) -> float:
        """OMS_RELAY_CONFIRM_DELAY, or by default what OMS_NATS_SYNC_INTERVAL calls for (ValueError if that
        is not a duration)."""
        if self.relay_confirm_delay is not None:
            return self.relay_confirm_delay
        return confirm_delay_for(self.nats_sync_interval)

    def close(self) -> MarketClose:
        """OMS_MARKET_CLOSE as a time and zone."""
        return MarketClose.parse(self.market_close)

    def port_of(self, component: str) -> int:
        port: int = getattr(self, f"{component}_port")
        return port

    def database_url(self, connection: str) -> str:
        """The URL of a service's database (`order`), or of a relay's or the audit's (`order_relay`,
        `audit_order`): OMS_<CONNECTION>_DATABASE_URL."""
        url: str | None = getattr(self, f"{connection}_database_url")
        if not url:
            raise RuntimeError(
                f"no database configured for {connection.replace('_', ' ')}: "
                f"set OMS_{connection.upper()}_DATABASE_URL"
            )
        return url

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def key_file(self) -> Path:
        return self.private_key_file or self.secrets_dir / "auth-ed25519.pem"

    @property
    def client_address_key(self) -> Path:
        return self.client_address_key_file or self.secrets_dir / "client-address.key"

    @property
    def service_key(self) -> Path:
        return self.service_key_file or self.secrets_dir / "service.key"


_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_DURATION = re.compile(f"(?:{_DURATION_PART})+")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a NATS (Go) duration: "100ms", "1s", "2m", "1m30s", "1.5h"; ValueError otherwise."""
    text = text.strip()
    if text == "0":
        return 0.0
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {text!r} (e.g. 100ms, 1s, 2m)")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in re.findall(_DURATION_PART, text))


def confirm_delay_for(sync_interval: str) -> float:
    """How long an acknowledged event is held: 0 when JetStream fsyncs every message before its ack
    ("always"), otherwise two sync intervals, by when the broker has surely written it to disk."""
    if sync_interval.strip() == "always":
        return 0.0
    return 2 * parse_duration(sync_interval)


def port_env_name(component: str) -> str:
    return f"OMS_{component.upper()}_PORT"
