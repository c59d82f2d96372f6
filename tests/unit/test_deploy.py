"""deploy/ checked without a Docker engine: compose.yaml against the Compose Specification's JSON schema;
every container's command parsed by the real `oms` command line and its environment read by the real
Settings; each secret a component reads mounted where it reads it, and nothing else; the Dockerfile's stages;
the load balancer's, Prometheus's, NATS's and Grafana's files against the compose file; the dashboard's
queries against the metrics the code defines."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any, Final
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer
import yaml
from prometheus_client import PROCESS_COLLECTOR
from prometheus_client.metrics import MetricWrapperBase

import oms
from oms.backoffice.sessions import KEY_FILE as SESSION_KEY_FILE
from oms.cli import app
from oms.kernel.nats_access import access_for
from oms.kernel.permissions import IDENTITIES, OPERATOR
from oms.kernel.settings import SERVICES as DATABASES
from oms.kernel.settings import Settings
from oms.runtime.nats import nats_server_binary
from oms.runtime.roles import connections, connections_of, env_name

DEPLOY: Final = Path(__file__).parents[2] / "deploy"
COMPOSE: Final[dict[str, Any]] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
CONTAINERS: Final[dict[str, Any]] = COMPOSE["services"]
IMAGE: Final = "oms:latest"
OMS_CONTAINERS: Final = sorted(n for n, c in CONTAINERS.items() if c.get("image") == IMAGE and n != "keygen")
# Settings the compose file uses that another part of issue 14 is adding to Settings (not there yet).
AWAITED: Final = {"OMS_STREAM_REPLICAS": "the streams' replicas (R3 on a cluster)"}
HTTP_SECRETS: Final = {  # the secret files each HTTP component reads besides its database and broker ones
    "auth": ("key_file", "client_address_key", "service_key"),
    "order": ("service_key",),
    "account": ("service_key",),
    "market": ("service_key",),
    "backoffice": ("client_address_key", "service_key", "session_key"),
}


def _load_keygen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oms_deploy_keygen", DEPLOY / "keygen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


keygen = _load_keygen()


# --- the Dockerfile ---------------------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages() -> list[Stage]:
    """The stages of deploy/Dockerfile, each with its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        elif stages:
            stages[-1].instructions.append((keyword.upper(), " ".join(rest.split())))
    return stages


def image_env() -> dict[str, str]:
    """The OMS_* variables the image's last stage sets."""
    env = {}
    for keyword, rest in dockerfile_stages()[-1].instructions:
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return {k: v for k, v in env.items() if k.startswith("OMS_")}


def test_the_image_is_built_in_stages_and_runs_the_wheel_as_a_user_that_is_not_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    builders, final = stages[:-1], stages[-1]
    commands = [rest for stage in builders for keyword, rest in stage.instructions if keyword == "RUN"]
    assert any("pip wheel" in run for run in commands), "the wheel is built in a builder stage"
    assert any(re.search(r"pip install .*/wheels/oms-\*\.whl", run) for run in commands), "from that wheel"
    everything = " ".join(rest for stage in stages for _, rest in stage.instructions)
    assert "[dev]" not in everything and "pip install -e" not in everything, (
        "no dev extras, no editable install"
    )
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, "the last stage names its user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    copies = [rest for keyword, rest in final.instructions if keyword == "COPY"]
    names = {s.name for s in builders}
    assert copies and all(re.match(r"--from=(\S+) ", c) and c.split()[0][7:] in names for c in copies), (
        "the last stage takes only what a builder stage made, nothing from the build context"
    )
    assert not any(keyword == "RUN" and "pip" in rest for keyword, rest in final.instructions)


def test_the_image_is_built_from_the_repository_with_only_what_it_copies() -> None:
    root = DEPLOY.parent
    for name in [*OMS_CONTAINERS, "keygen"]:
        build = CONTAINERS[name]["build"]
        assert (DEPLOY / build["context"]).resolve() == root.resolve()
        assert (root / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
    for stage in dockerfile_stages():
        for keyword, rest in stage.instructions:
            if keyword == "COPY" and not rest.startswith("--from="):
                for source in rest.split()[:-1]:
                    assert (root / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    kept = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert kept[0] == "*" and {"!pyproject.toml", "!README.md", "!src/"} <= set(kept)


# --- the compose file -------------------------------------------------------------------------------------
def test_the_compose_file_follows_the_compose_specification() -> None:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(COMPOSE)
    ]
    assert errors == []


@dataclass(frozen=True)
class Run:
    """One container's `oms …` command as the real command line parses it, under its environment."""

    path: tuple[str, ...]
    params: dict[str, Any]
    envvars: frozenset[str]
    settings: Settings
    environment: dict[str, str]


def environment_of(container: dict[str, Any]) -> dict[str, str]:
    given = container.get("environment", {})
    assert isinstance(given, dict), "environment as a mapping"
    return {**image_env(), **{k: str(v) for k, v in given.items()}}


@pytest.fixture
def run_of(monkeypatch: pytest.MonkeyPatch) -> Any:
    def parse(name: str) -> Run:
        environment = environment_of(CONTAINERS[name])
        for variable in [v for v in os.environ if v.startswith(("OMS_", "PG"))]:
            monkeypatch.delenv(variable)
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        argv = CONTAINERS[name]["command"]
        assert argv[0] == "oms", argv
        command: Any = typer.main.get_command(app)
        path: list[str] = []
        args = list(argv[1:])
        while hasattr(command, "commands"):
            word = args.pop(0)
            assert word in command.commands, f"`oms {' '.join(path)}` has no command {word!r}"
            command, path = command.commands[word], [*path, word]
        context = command.make_context(" ".join(["oms", *path]), args)  # parses, checks, starts nothing
        envvars = frozenset(str(p.envvar) for p in command.params if getattr(p, "envvar", None))
        return Run(tuple(path), context.params, envvars, Settings(), environment)

    return parse


@pytest.mark.parametrize("name", OMS_CONTAINERS)
def test_every_container_runs_an_oms_command_with_settings_it_reads(name: str, run_of: Any) -> None:
    run = run_of(name)
    assert run.path in {("serve",), ("db", "provision"), ("dlq", "list")}
    for variable in run.environment:
        if variable.startswith("OMS_"):
            known = variable.removeprefix("OMS_").lower() in Settings.model_fields or variable in run.envvars
            assert known or variable in AWAITED, f"{name}: {variable} is not a setting of oms"


def mounted(name: str) -> dict[str, str]:
    """Secret file targets of container `name` → the secret's name."""
    found = {}
    for secret in CONTAINERS[name].get("secrets", []):
        source = secret if isinstance(secret, str) else secret["source"]
        target = f"/run/secrets/{source}" if isinstance(secret, str) else secret["target"]
        found[target] = source
    return found


def identity_of(run: Run) -> str:
    component = run.params["component"].value
    if component == "relay":
        assert run.params["service"] is not None, "oms serve relay needs --service"
        return f"relay-{run.params['service'].value}"
    return str(component)


def check_database_urls(run: Run, names: list[str], mounts: dict[str, str], pgpass: str) -> None:
    """Exactly the URLs of `names`, each its role into its database on that database's server, without a
    password: that comes from the pgpass file mounted at PGPASSFILE."""
    by_name = {c.name: c for c in connections()}
    given = {v for v in run.environment if v.endswith("_DATABASE_URL")}
    assert given == {env_name(n) for n in names}, "only its own databases"
    for name in names:
        url = urlsplit(run.settings.database_url(name))
        c = by_name[name]
        assert (url.username, url.password, url.hostname, url.port, url.path) == (
            c.role.name,
            None,
            keygen.pg_host(c.database),
            keygen.PG_PORT,
            f"/{c.database}",
        )
    if names:
        assert mounts[run.environment["PGPASSFILE"]] == pgpass


def check_identity(run: Run, identity: str, mounts: dict[str, str]) -> str | None:
    """The broker identity's seed, mounted where OMS_NATS_NKEY_FILE says; its path."""
    if identity not in IDENTITIES:
        assert "OMS_NATS_NKEY_FILE" not in run.environment
        return None
    access = access_for(run.settings, identity)
    assert access.servers == tuple(f"nats://{n}:4222" for n in keygen.NATS_SERVERS)
    assert access.nkey_file is not None and mounts[str(access.nkey_file)] == f"nats-{identity}.nk"
    return str(access.nkey_file)


def secret_paths(settings: Settings, component: str) -> set[str]:
    paths = {
        "key_file": settings.key_file,
        "client_address_key": settings.client_address_key,
        "service_key": settings.service_key,
        "session_key": settings.secrets_dir / SESSION_KEY_FILE,
    }
    return {str(paths[what]) for what in HTTP_SECRETS.get(component, ())}


@pytest.mark.parametrize("name", [n for n in OMS_CONTAINERS if CONTAINERS[n]["command"][1] == "serve"])
def test_each_component_is_given_its_own_secrets_where_it_reads_them_and_no_other(
    name: str, run_of: Any
) -> None:
    run = run_of(name)
    identity = identity_of(run)
    assert name == identity, "the container is named as the component (the identity, the pgpass file)"
    mounts = mounted(name)
    check_database_urls(run, connections_of(identity), mounts, f"pgpass-{identity}")
    used = {run.environment.get("PGPASSFILE"), check_identity(run, identity, mounts)}
    used |= secret_paths(run.settings, identity)
    assert set(mounts) == used - {None}


@pytest.mark.parametrize("database", DATABASES)
def test_each_database_server_is_provisioned_once_with_the_roles_of_its_database(
    database: str, run_of: Any
) -> None:
    name = f"provision-{database}"
    run = run_of(name)
    assert run.path == ("db", "provision")
    assert [d.value for d in run.params["database"]] == [database]
    admin = urlsplit(run.params["admin_url"])
    assert (admin.username, admin.password, admin.hostname) == (
        keygen.SUPERUSER,
        None,
        keygen.pg_host(database),
    )
    mounts = mounted(name)
    roles = {str(run.settings.secrets_dir / c.role.secret): c.role.secret for c in connections((database,))}
    assert mounts == {**roles, run.environment["PGPASSFILE"]: f"pgpass-provision-{database}"}
    assert CONTAINERS[name]["depends_on"] == {keygen.pg_host(database): {"condition": "service_healthy"}}
    users = [n for n in OMS_CONTAINERS if name in CONTAINERS[n].get("depends_on", {})]
    assert users and all(
        CONTAINERS[u]["depends_on"][name] == {"condition": "service_completed_successfully"} for u in users
    )


def test_the_streams_are_made_by_the_operator_before_the_services_and_relays_start(run_of: Any) -> None:
    run = run_of("topology")
    assert run.path == ("dlq", "list")  # creates the streams and durable consumers first (broker.py)
    assert set(mounted("topology")) == {check_identity(run, OPERATOR, mounted("topology"))}
    assert run.environment["OMS_STREAM_REPLICAS"] == str(len(keygen.NATS_SERVERS))
    for name in OMS_CONTAINERS:
        if CONTAINERS[name]["command"][1] == "serve" and name in IDENTITIES:
            assert CONTAINERS[name]["depends_on"]["topology"] == {
                "condition": "service_completed_successfully"
            }


def test_no_password_is_written_in_the_compose_file() -> None:
    for name, container in CONTAINERS.items():
        for variable, value in container.get("environment", {}).items():
            if "://" in str(value):
                assert all(urlsplit(u).password is None for u in str(value).split(",")), (name, variable)
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", variable):
                assert variable.endswith("_FILE"), (name, variable)
                assert str(value).startswith(("/run/secrets/", "/var/lib/oms/secrets/")), (name, variable)
    for secret in COMPOSE["secrets"].values():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")


def test_keygen_runs_in_the_image_as_its_user_onto_the_secrets_folder() -> None:
    container = CONTAINERS["keygen"]
    python, script = container["command"]
    assert (python, container["profiles"], container["network_mode"]) == ("python", ["setup"], "none")
    assert "user" not in container, "the image's user: the services read what it writes (0600)"
    secrets_dir = Settings(data_dir=Path(image_env()["OMS_DATA_DIR"])).secrets_dir
    assert sorted(container["volumes"]) == sorted([f"./secrets:{secrets_dir}", f"./keygen.py:{script}:ro"])


def test_keygen_makes_every_secret_the_compose_file_names(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    made = keygen.generate(settings)
    assert keygen.generate(settings) == made  # a second run keeps what is there
    folder = settings.secrets_dir
    named = {(DEPLOY / s["file"]).relative_to(DEPLOY / "secrets") for s in COMPOSE["secrets"].values()}
    assert {p.relative_to(folder) for p in made} >= named
    for path in made:
        expected = 0o644 if path.name == keygen.GRAFANA_PASSWORD else 0o600
        assert path.stat().st_mode & 0o777 == expected, path
    # The services' password files have a line for each of their URLs, with that role's password.
    by_role = {c.role.name: c.role for c in connections()}
    for name in OMS_CONTAINERS:
        environment = environment_of(CONTAINERS[name])
        pgpass = mounted(name).get(environment.get("PGPASSFILE", ""))
        urls = [urlsplit(v) for k, v in environment.items() if k.endswith("_DATABASE_URL")]
        if pgpass is None or not urls:
            continue
        lines = {tuple(line.split(":")) for line in (folder / pgpass).read_text().splitlines()}
        for url in urls:
            assert url.username is not None
            password = (folder / by_role[url.username].secret).read_text().strip()
            assert (url.hostname, str(url.port), url.path[1:], url.username, password) in lines, (name, url)


# --- PostgreSQL, NATS -------------------------------------------------------------------------------------
def test_one_postgresql_server_per_service_with_logical_decoding() -> None:
    servers = {n: c for n, c in CONTAINERS.items() if str(c.get("image", "")).startswith("postgres:")}
    assert set(servers) == {keygen.pg_host(d) for d in DATABASES}
    for name, server in servers.items():
        assert "wal_level=logical" in server["command"]
        assert server["environment"]["POSTGRES_PASSWORD_FILE"] == f"/run/secrets/{keygen.SUPERUSER_SECRET}"
        assert server["secrets"] == [keygen.SUPERUSER_SECRET]
        assert [v.split(":")[0] for v in server["volumes"]] == [name]


def test_the_nats_servers_form_one_cluster_and_accept_their_configuration(tmp_path: Path) -> None:
    servers = sorted(n for n, c in CONTAINERS.items() if str(c.get("image", "")).startswith("nats:"))
    assert tuple(servers) == keygen.NATS_SERVERS
    settings = Settings(data_dir=tmp_path / "data")
    keygen.generate(settings)
    for name in servers:
        container = CONTAINERS[name]
        assert container["environment"] == {"NATS_SERVER_NAME": name}
        etc = tmp_path / name
        etc.mkdir()
        config = next(c for c in container["configs"] if c["source"] == "nats")
        shutil.copy(DEPLOY / COMPOSE["configs"]["nats"]["file"], etc / Path(config["target"]).name)
        for secret in container["secrets"]:
            assert Path(secret["target"]).parent == Path(config["target"]).parent
            source = DEPLOY / COMPOSE["secrets"][secret["source"]]["file"]
            shutil.copy(
                settings.secrets_dir / source.relative_to(DEPLOY / "secrets"),
                etc / Path(secret["target"]).name,
            )
        checked = subprocess.run(
            [nats_server_binary(), "-c", str(etc / "nats.conf"), "-t"],
            env={**os.environ, "NATS_SERVER_NAME": name},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stderr
    # The relays hold relayed events for as long as the servers' disk sync calls for (decision 007).
    sync = re.search(r'sync_interval: "([^"]+)"', (DEPLOY / "nats" / "nats.conf").read_text())
    assert sync is not None
    for relay in ("relay-order", "relay-account"):
        assert CONTAINERS[relay]["environment"]["OMS_NATS_SYNC_INTERVAL"] == sync.group(1)


# --- in front: the load balancer; watching: Prometheus, Grafana --------------------------------------------
def serving(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """(replicas, the port the container listens on: a service's API port, a relay's metrics port)."""
    for variable in [v for v in os.environ if v.startswith("OMS_")]:
        monkeypatch.delenv(variable)
    for variable, value in environment_of(CONTAINERS[name]).items():
        monkeypatch.setenv(variable, value)
    component = name.replace("relay-", "") + "_relay" if name.startswith("relay-") else name
    return CONTAINERS[name]["deploy"]["replicas"], Settings().port_of(component)


def haproxy_sections(kind: str) -> dict[str, list[str]]:
    """The `kind` sections (frontend, backend) of haproxy.cfg by name, each its lines."""
    sections: dict[tuple[str, str], list[str]] = {}
    current: list[str] = []
    for line in (DEPLOY / "haproxy" / "haproxy.cfg").read_text().splitlines():
        line = line.split("#")[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            section, _, name = line.partition(" ")
            current = sections.setdefault((section, name.strip()), [])
        else:
            current.append(" ".join(line.split()))
    return {name: lines for (section, name), lines in sections.items() if section == kind}


def haproxy_frontends() -> dict[str, tuple[int, str]]:
    """Each frontend's port and backend."""
    return {
        name: (
            next(int(x.split(":")[-1]) for x in lines if x.startswith("bind ")),
            next(x.split()[1] for x in lines if x.startswith("default_backend ")),
        )
        for name, lines in haproxy_sections("frontend").items()
    }


def test_the_load_balancer_sends_each_port_to_every_replica_of_its_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frontends, backends = haproxy_frontends(), haproxy_sections("backend")
    http = {n for n in OMS_CONTAINERS if CONTAINERS[n]["command"][1:3] == ["serve", n]}
    assert set(backends) == http == {"auth", "order", "account", "market", "backoffice"}
    published = {f"{port}:{port}" for port, _ in frontends.values()}
    assert set(CONTAINERS["lb"]["ports"]) == published
    for name, lines in backends.items():
        replicas, port = serving(name, monkeypatch)
        assert f"server-template {name} {replicas} {name}:{port}" in lines
        assert "option httpchk GET /health" in lines
        assert frontends[name] == (port, name), "the service's own port, as with `oms up`"
        assert f"'http://127.0.0.1:{port}/health'" in CONTAINERS[name]["healthcheck"]["test"][-1]


def test_the_services_believe_only_the_load_balancer_and_show_counters_only_to_prometheus() -> None:
    backend = COMPOSE["networks"]["backend"]
    assert backend["internal"] is True
    lb = CONTAINERS["lb"]["networks"]["backend"]["ipv4_address"]
    prometheus = CONTAINERS["prometheus"]["networks"]["backend"]["ipv4_address"]
    for name in OMS_CONTAINERS:
        environment = CONTAINERS[name]["environment"]
        if CONTAINERS[name]["command"][1:3] == ["serve", name]:
            assert (environment["OMS_TRUSTED_PROXIES"], environment["OMS_METRICS_CLIENTS"]) == (
                lb,
                prometheus,
            )
    for lines in haproxy_sections("frontend").values():
        assert "http-request deny deny_status 403 if { path_beg /metrics }" in lines


def test_prometheus_scrapes_every_replica_of_every_service_and_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {}
    for job in config["scrape_configs"]:
        (discovery,) = job["dns_sd_configs"]
        (name,) = discovery["names"]
        assert job["job_name"] == name and discovery["type"] == "A"
        scraped[name] = discovery["port"]
    long_running = {n for n in OMS_CONTAINERS if CONTAINERS[n]["command"][1] == "serve"}
    assert set(scraped) == long_running
    for name, port in scraped.items():
        assert serving(name, monkeypatch)[1] == port
    mounts = {
        c["target"]: COMPOSE["configs"][c["source"]]["file"] for c in CONTAINERS["prometheus"]["configs"]
    }
    assert mounts == {"/etc/prometheus/prometheus.yml": "./prometheus/prometheus.yml"}


def code_metrics() -> dict[str, set[str]]:
    """Every metric the code exposes, by the name Prometheus stores (`_total`, `_bucket`, …) → its labels."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    found: dict[str, set[str]] = {}
    root = Path(oms.__file__).parent
    for path in root.rglob("*.py"):
        if "prometheus_client" not in path.read_text():
            continue
        module = importlib.import_module(".".join(["oms", *path.relative_to(root).with_suffix("").parts]))
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    # The label names are only kept privately by prometheus_client.
                    labels = set(value._labelnames) | ({"le"} if family.type == "histogram" else set())
                    found.update({family.name + s: labels for s in suffixes[family.type]})
    for family in PROCESS_COLLECTOR.collect():  # served with them on every /metrics
        found.update({sample.name: set() for sample in family.samples})
    return found


PROMQL_WORDS: Final = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def queried(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses."""
    labels = {m for block in re.findall(r"\{([^}]*)\}", expr) for m in re.findall(r"(\w+)\s*=~?", block)}
    labels |= {
        w.strip()
        for g in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
        for w in g.split(",")
    }
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)', " ", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare)) - PROMQL_WORDS
    return names, labels - {""}


def test_every_metric_and_label_the_dashboard_queries_is_one_the_code_exposes() -> None:
    metrics = code_metrics()
    metrics["up"] = set()  # Prometheus's own, per target
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "oms.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    for expr in exprs:
        names, labels = queried(expr)
        assert names, expr
        unknown = names - set(metrics)
        assert unknown == set(), f"{expr}: no such metric in src/oms: {unknown}"
        allowed = {"job", "instance"}.union(*(metrics[n] for n in names))
        assert labels <= allowed, f"{expr}: no such label {labels - allowed}"
    relay = {name for name in metrics if name.startswith("oms_relay_")}
    assert any(n in queried(e)[0] for e in exprs for n in relay), "the relays have panels"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = CONTAINERS["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    url = urlsplit(source["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert set(CONTAINERS["prometheus"]["networks"]) & set(grafana["networks"])
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "oms.yaml").read_text())["providers"]
    assert (DEPLOY / mounts[provider["options"]["path"]] / "oms.json").is_file()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "oms.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}
    assert (
        grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
        == f"/run/secrets/{keygen.GRAFANA_PASSWORD}"
    )
