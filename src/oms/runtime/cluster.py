"""`oms up --cluster`: the layout of SPEC §5 on one machine, with real parts (docs/decisions/023).

- three NATS servers in one JetStream cluster (routes with a password of their own; the same identities and
  permissions as a single server), every stream and durable consumer R3;
- one PostgreSQL server per service, each provisioned as `oms up` provisions its single one;
- two replicas of every HTTP service sharing its port with SO_REUSEPORT: the kernel spreads the connections
  between them, and each also answers on a port of its own, where it is probed;
- two relays per relayed database: one streams the slot, the other stands by until the slot is free;
- the market feed active in one market replica, standing by in the other (market/feed.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console

from oms.kernel.nats_access import NatsAccess, identities_dir
from oms.kernel.secret_file import read_or_create_text
from oms.kernel.settings import SERVICES, Settings, port_env_name
from oms.kernel.topology import RELAYED
from oms.runtime.nats import ClusterNode, EmbeddedNats
from oms.runtime.ports import PortUnavailable, check_bindable
from oms.runtime.postgres import EmbeddedPostgres
from oms.runtime.provision import provision
from oms.runtime.supervisor import SERVICES_AFTER_AUTH, ChildSpec, StartError, System

NODES = 3  # NATS servers: a majority (2) keeps the cluster and its R3 streams going when one is lost
REPLICAS = 2  # of every HTTP service, and relays per relayed database
STREAM_REPLICAS = 3
ROUTE_SECRET = "nats-route-password"


@dataclass
class Ports:
    """The cluster's own ports: the first free ones from `base` on, each taken once."""

    base: int
    taken: set[int] = field(default_factory=set)

    def take(self, host: str, what: str) -> int:
        port = self.base
        while port < 65536:
            if port not in self.taken:
                try:
                    check_bindable(host, port, what, "OMS_CLUSTER_BASE_PORT")
                except PortUnavailable:
                    pass
                else:
                    self.taken.add(port)
                    return port
            port += 1
        raise StartError(f"no free port for {what} from {self.base} on: choose OMS_CLUSTER_BASE_PORT")


def configured_ports(settings: Settings) -> list[int]:
    """Every port a setting names (the services', NATS's, the relays', …)."""
    values = [getattr(settings, name) for name in Settings.model_fields if name.endswith("_port")]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def replica(component: str, number: int) -> str:
    return f"{component}-{number}"


class ClusterSystem(System):
    """The servers and services of one data folder, laid out as a cluster on this machine."""

    def __init__(self, settings: Settings, console: Console) -> None:
        if settings.external:
            raise StartError("--cluster runs servers of its own: it cannot be combined with --external")
        if "stream_replicas" not in settings.model_fields_set:
            settings = settings.model_copy(update={"stream_replicas": STREAM_REPLICAS})
        super().__init__(settings, console)
        self.nodes: list[EmbeddedNats] = []
        self.databases: dict[str, EmbeddedPostgres] = {}
        self.replica_ports: dict[str, int] = {}  # by child name: its own port (a relay's: its probes)

    # -- start ---------------------------------------------------------------------------------
    def check_ports(self) -> None:
        """Check the ports the settings name, and choose the cluster's own (the servers, each replica's)."""
        s = self.settings
        for c in self.components():
            check_bindable(s.host, s.port_of(c), f"the {c} service", port_env_name(c))
        # Never one of the ports set for something else, though nothing listens on it yet.
        ports = Ports(s.cluster_base_port, taken=set(configured_ports(s)))
        route_ports = [ports.take(s.host, f"NATS {n}'s routes") for n in range(1, NODES + 1)]
        password = read_or_create_text(s.secrets_dir / ROUTE_SECRET)
        for n in range(1, NODES + 1):
            node = ClusterNode(
                name=f"nats-{n}",
                route_port=route_ports[n - 1],
                peer_route_ports=tuple(p for i, p in enumerate(route_ports) if i != n - 1),
                route_password=password,
            )
            client_port = s.nats_port if n == 1 else ports.take(s.host, f"NATS {n}")
            self.nodes.append(
                EmbeddedNats(
                    self.data_dir,
                    client_port,
                    s.host,
                    s.nats_sync_interval,
                    monitor_port=s.nats_monitor_port if n == 1 else None,
                    identities=identities_dir(s),
                    node=node,
                )
            )
        check_bindable(s.host, s.nats_port, "NATS", "OMS_NATS_PORT")
        if s.nats_monitor_port:
            check_bindable("127.0.0.1", s.nats_monitor_port, "NATS monitoring", "OMS_NATS_MONITOR_PORT")
        for service in SERVICES:
            port = ports.take(s.host, f"the {service} database")
            self.databases[service] = EmbeddedPostgres(self.data_dir, port, s.host, name=service)
        for name, _, _ in self._replicas():
            self.replica_ports[name] = ports.take(s.host, f"{name}'s own port")
        for r in RELAYED:
            for n in range(1, REPLICAS + 1):
                name = replica(f"relay-{r}", n)
                self.replica_ports[name] = ports.take(s.metrics_host, f"{name}'s probes")

    def _replicas(self) -> list[tuple[str, str, int]]:
        """(child name, component, replica number) of every HTTP service replica, in start order."""
        return [(replica(c, n), c, n) for c in self.components() for n in range(1, REPLICAS + 1)]

    def start_groups(self) -> list[list[ChildSpec]]:
        s = self.settings
        http: dict[str, list[ChildSpec]] = {}
        for name, component, _ in self._replicas():
            port = self.replica_ports[name]
            args = [component, "--reuse-port", "--replica-port", str(port)]
            http.setdefault(component, []).append((name, args, f"http://{s.host}:{port}/readyz"))

        def relays(number: int, probe: str) -> list[ChildSpec]:
            found: list[ChildSpec] = []
            for r in RELAYED:
                name = replica(f"relay-{r}", number)
                port = self.replica_ports[name]
                args = ["relay", "--service", r, "--port", str(port)]
                found.append((name, args, f"http://{s.metrics_host}:{port}/{probe}"))
            return found

        # A service's second replica starts once its first is ready, so that what a first start does once
        # (the first admin, the shipped instruments) is done by one. The first relay of each database takes
        # the slot (ready); the second, started after it, stands by: live, not ready while the first streams.
        first, second = ([http[c][n] for c in SERVICES_AFTER_AUTH] for n in (0, 1))
        return [
            http["auth"][:1],
            [*http["auth"][1:], *first],
            [*second, http["backoffice"][0], *relays(1, "readyz")],
            [*http["backoffice"][1:], *relays(2, "livez")],
        ]

    def component_of(self, child: str) -> str:
        return child.rsplit("-", 1)[0]

    def _start_postgres(self) -> None:
        for server in self.databases.values():
            server.start()

    def _provision(self) -> None:
        for service, server in self.databases.items():
            self.database_urls |= provision(server.url(), self.settings.secrets_dir, (service,))

    def _start_nats(self) -> None:
        for node in self.nodes:  # together: none is ready before a majority runs
            node.launch()
        for node in self.nodes:
            node.wait_ready(60)

    @property
    def nats_url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def broker_access(self, identity: str) -> NatsAccess:
        return self.nodes[0].access(identity).with_servers(self.nats_url)

    def _create_topology(self) -> None:
        # Right after the cluster formed, its meta leader may still be being elected: try for a while.
        for attempt in range(10):
            try:
                return super()._create_topology()
            except StartError:
                if attempt == 9:
                    raise
                time.sleep(1)

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        env["OMS_NATS_URL"] = self.nats_url
        env["OMS_STREAM_REPLICAS"] = str(self.settings.stream_replicas)
        return env

    # -- run -------------------------------------------------------------------------------------
    def servers(self) -> list[tuple[str, EmbeddedPostgres | EmbeddedNats | None]]:
        nodes: list[tuple[str, EmbeddedPostgres | EmbeddedNats | None]] = [(n.name, n) for n in self.nodes]
        return nodes + [(f"PostgreSQL ({s})", db) for s, db in self.databases.items()]

    def state(self) -> dict[str, object]:
        return {
            **super().state(),
            "nats_url": self.nats_url,
            "pg_ports": {service: db.port for service, db in self.databases.items()},
            "children": {name: self.replica_ports[name] for name in self.replica_ports},
        }

    def places(self) -> list[tuple[str, str]]:
        s = self.settings
        found = []
        for component in self.components():
            own = ", ".join(str(self.replica_ports[replica(component, n)]) for n in range(1, REPLICAS + 1))
            note = "web back office" if component == "backoffice" else "API docs: /docs"
            found.append(
                (
                    component,
                    f"http://{s.host}:{s.port_of(component)}  ({note}; {REPLICAS} replicas, own ports {own})",
                )
            )
        for service, db in self.databases.items():
            found.append(("PostgreSQL", f"{s.host}:{db.port} (database {service})"))
        for node in self.nodes:
            assert node.node is not None
            found.append(
                (node.name, f"{node.url} (routes on {node.node.route_port}; streams R{s.stream_replicas})")
            )
        for r in RELAYED:
            probes = ", ".join(
                f"http://{s.metrics_host}:{self.replica_ports[replica(f'relay-{r}', n)]}"
                for n in range(1, REPLICAS + 1)
            )
            found.append(("relays", f"{r}: {probes} (active and standby; /metrics, /livez, /readyz)"))
        return found
