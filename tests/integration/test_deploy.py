"""The deployment files agree with the code: deploy/Dockerfile, deploy/compose.yaml, the
Prometheus and Grafana provisioning, and deploy/k8s/.

No container engine or cluster exists here, so nothing is built or applied. Instead:
every manifest parses; every `featurekit` command, flag and environment variable it uses
exists in the CLI or the code; probe, healthcheck and scrape paths are routes that need no
key; mounts, names and ports line up; and the Dockerfile's own RUN commands and its
ENTRYPOINT run in a fresh virtualenv made from this checkout, serving a real store.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import typer
import yaml
from test_online_support import filled_store, free_port

import featurekit as fk
from featurekit.cli import app as cli_app
from featurekit.project.config import load_definitions as load_project_definitions
from featurekit.serving.app import OPEN_PATHS, create_app, load_definitions
from featurekit.serving.auth import ApiKeys, is_loopback

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

#: Dockerfile RUN steps not run here, each with why (they are checked by reading instead).
SKIPPED_RUN = {"useradd": "creates a user on the host; test_dockerfile_shape checks USER"}


# ---- reading the CLI and the code ---------------------------------------------------------------
def _command(name: str) -> Any:
    """The click command behind ``featurekit NAME`` (typer builds it), or None."""
    group = typer.main.get_command(cli_app)
    return group.commands.get(name)  # type: ignore[attr-defined]


def _flags(command: Any) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def _envvars(command: Any) -> set[str]:
    out: set[str] = set()
    for param in command.params:
        env = getattr(param, "envvar", None)
        out |= {env} if isinstance(env, str) else set(env or ())
    return out


def _code_envvars() -> set[str]:
    """Every FEATUREKIT_* name the package reads (string literals in its modules)."""
    names: set[str] = set()
    for path in (REPO / "featurekit").rglob("*.py"):
        names |= set(re.findall(r"[\"'](FEATUREKIT_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def _check_invocation(argv: list[str], env: set[str], where: str) -> None:
    """``featurekit CMD --flags...`` and its environment exist in the CLI and the code."""
    assert argv[0] == "featurekit", f"{where}: runs {argv[0]!r}, not featurekit"
    name = argv[1]
    command = _command(name)
    assert command is not None, f"{where}: `featurekit {name}` does not exist"
    used = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")}
    unknown = used - _flags(command)
    assert not unknown, f"{where}: `featurekit {name}` has no {sorted(unknown)}"
    help_text = CliRunnerHelp.help(name)
    assert all(flag in help_text for flag in used), (where, used)
    known = _code_envvars() | _envvars(command)
    unknown_env = {e for e in env if e.startswith("FEATUREKIT_")} - known
    assert not unknown_env, f"{where}: nothing reads {sorted(unknown_env)}"


class CliRunnerHelp:
    """``featurekit CMD --help`` as a user sees it (wide, so nothing is cut)."""

    _cache: dict[str, str] = {}  # noqa: RUF012

    @classmethod
    def help(cls, name: str) -> str:
        if name not in cls._cache:
            done = subprocess.run(
                [sys.executable, "-m", "featurekit.cli", name, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
            )
            assert done.returncode == 0, done.stderr
            cls._cache[name] = done.stdout
        return cls._cache[name]


def _routes(store: fk.Store) -> set[str]:
    return {str(getattr(r, "path", "")) for r in create_app(store).routes}


# ---- the Dockerfile, read -----------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        text = line.strip()
        if text.startswith("#") or (not text and not buf):
            continue
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        buf += text
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _env_pairs(args: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in shlex.split(args)]  # type: ignore[misc]


def docker_env() -> dict[str, str]:
    """The image's final ENV (``$VAR`` left as written)."""
    env: dict[str, str] = {}
    for word, args in dockerfile():
        if word == "ENV":
            env.update(_env_pairs(args))
    return env


def _one(word: str) -> str:
    found = [args for w, args in dockerfile() if w == word]
    assert len(found) == 1, (word, found)
    return found[0]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> fk.Store:
    return filled_store(tmp_path_factory.mktemp("deploy"))


def test_dockerfile_shape(filled: fk.Store) -> None:
    base = _one("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    user = _one("USER")
    assert user not in ("0", "root")
    useradd = next(a for w, a in dockerfile() if w == "RUN" and "useradd" in a)
    assert f"--uid {user}" in useradd and "--system" in useradd
    words = [w for w, _ in dockerfile()]
    assert words.index("USER") < words.index("ENTRYPOINT")  # the server never runs as root
    entrypoint = json.loads(_one("ENTRYPOINT"))
    assert entrypoint == ["featurekit", "serve"]
    env = docker_env()
    _check_invocation(entrypoint, set(env), "Dockerfile ENTRYPOINT")
    # exposed by default, so keys by default: the image names a key file and never --insecure
    assert not is_loopback(env["FEATUREKIT_HOST"])
    assert env["FEATUREKIT_API_KEYS"].startswith("/run/secrets/")
    assert "--insecure" not in (DEPLOY / "Dockerfile").read_text()
    assert _one("EXPOSE") == env["FEATUREKIT_PORT"]
    check = _one("HEALTHCHECK")
    assert "--interval=" in check and "--timeout=" in check
    command = json.loads(check.split(" CMD ", 1)[1])
    assert "/health" in command[-1] and "FEATUREKIT_PORT" in command[-1]
    assert "/health" in OPEN_PATHS and "/health" in _routes(filled)


@pytest.mark.slow
def test_dockerfile_commands_run_in_a_fresh_venv(filled: fk.Store, tmp_path: Path) -> None:
    """Every RUN (but SKIPPED_RUN) and the ENTRYPOINT, with the image's paths mapped to tmp.

    COPY copies from this checkout; pip installs from the package index the machine is
    configured with (nothing else is downloaded). The server binds 127.0.0.1 on a free
    port instead of 0.0.0.0:8000, and serves the test's store with a test key file.
    """
    paths = {"/opt/featurekit": str(tmp_path / "venv"), "/src": str(tmp_path / "src")}
    paths |= {"/app": str(tmp_path / "app"), "/data": str(tmp_path / "data")}

    def mapped(text: str) -> str:
        for image_path, here in paths.items():
            text = re.sub(rf"(?<![\w/]){re.escape(image_path)}(?=/|\b|$)", here, text)
        return text

    # the environment of a fresh image: no PYTHONPATH pointing at this checkout
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    skipped, ran = [], []
    began = time.perf_counter()
    for word, args in dockerfile():
        if word == "ENV":
            for name, value in _env_pairs(args):
                env[name] = mapped(value).replace("$PATH", env["PATH"])
        elif word == "COPY":
            *sources, target = shlex.split(args)
            for source in sources:
                dest = Path(mapped(target))
                if target.endswith("/"):
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / source, dest / source)
                else:
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(REPO / source, dest, ignore=ignore)
        elif word == "RUN":
            reason = next((why for cmd, why in SKIPPED_RUN.items() if cmd in args), None)
            if reason:
                skipped.append(args)
                continue
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", mapped(args)],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
            ran.append(args)
        elif word == "WORKDIR":
            Path(mapped(args)).mkdir(parents=True, exist_ok=True)
    install_seconds = time.perf_counter() - began
    assert len(skipped) == 1 and len(ran) >= 3, (skipped, ran)
    print(f"Dockerfile RUN steps: {install_seconds:.0f} s")
    # the installed package is the venv's, not this checkout's
    venv_bin = tmp_path / "venv" / "bin"
    assert shutil.which("featurekit", path=env["PATH"]) == str(venv_bin / "featurekit")
    made = subprocess.run(
        ["featurekit", "keys", "add", "probe", "--grant", "view:driver_stats", "--file",
         str(tmp_path / "keys.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    port = free_port()
    env |= {
        "FEATUREKIT_STORE": str(filled.root),
        "FEATUREKIT_API_KEYS": str(tmp_path / "keys.json"),
        "FEATUREKIT_HOST": "127.0.0.1",  # loopback only: the image's 0.0.0.0 is for a container
        "FEATUREKIT_PORT": str(port),
    }
    entrypoint = json.loads(_one("ENTRYPOINT"))
    check = json.loads(_one("HEALTHCHECK").split(" CMD ", 1)[1])
    workdir = mapped(_one("WORKDIR"))
    log = tmp_path / "serve.log"
    with _running(entrypoint, env, workdir, log) as url:
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        body = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1]}}
        assert httpx.post(f"{url}/v1/features", json=body).status_code == 401
        reply = httpx.post(
            f"{url}/v1/features", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["columns"]["driver_id"] == [1]
    # the healthcheck fails once the server is gone
    assert subprocess.run(check, env=env, timeout=30, capture_output=True).returncode != 0
    assert "with 1 API key(s)" in log.read_text()


class _running:
    """The ENTRYPOINT as a process writing to ``log``; yields its URL once /health is 200."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, log: Path) -> None:
        self.argv, self.env, self.cwd, self.log = argv, env, cwd, log

    def __enter__(self) -> str:
        self.sink = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=self.sink, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{self.env['FEATUREKIT_PORT']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise AssertionError(f"the entrypoint did not serve: {self.log.read_text()}")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.sink.close()


# ---- Kubernetes ---------------------------------------------------------------------------------
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            docs.append(doc | {"__file": path.name})
    return docs


def _of(kind: str, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _container_env(container: dict[str, Any], maps: dict[str, dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]["data"]
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def _mounted_file(
    pod: dict[str, Any], container: dict[str, Any], path: str, docs: list[dict[str, Any]]
) -> str:
    """The content of the ConfigMap or Secret key the pod mounts at ``path``."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        folder = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(folder):
            continue
        volume = volumes[mount["name"]]
        name = path.removeprefix(folder)
        if "configMap" in volume:
            source = _of("ConfigMap", docs)[volume["configMap"]["name"]]["data"]
            items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
        elif "secret" in volume:
            source = _of("Secret", docs)[volume["secret"]["secretName"]]["stringData"]
            items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
        else:
            continue
        return str(source[items.get(name, name)])
    raise AssertionError(f"nothing is mounted at {path}")


def _check_pod(
    pod: dict[str, Any], argv: list[str], docs: list[dict[str, Any]], where: str, tmp: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    (container,) = pod["containers"]
    env = _container_env(container, _of("ConfigMap", docs))
    _check_invocation(argv, set(env), where)
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(requests), where
    assert "memory" in container["resources"]["limits"], where
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == _one("USER"), where
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes, where
    claims = _of("PersistentVolumeClaim", docs)
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims, where
    # the definitions module is mounted where FEATUREKIT_DEFINITIONS says, and loads
    module = tmp / f"{where.replace(' ', '_')}_features.py"
    module.write_text(_mounted_file(pod, container, env["FEATUREKIT_DEFINITIONS"], docs))
    assert load_definitions([str(module)]) == []
    assert repr(load_project_definitions(str(module), base=tmp)) == (
        "Definitions(views=[], services=[], on_demand=[])"
    )
    return container, env


def test_k8s_manifests_parse_and_agree_with_the_cli(filled: fk.Store, tmp_path: Path) -> None:
    docs = k8s_docs()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "CronJob", "Deployment", "Deployment", "Kustomization",
         "PersistentVolumeClaim", "Secret", "Service", "Service"]
    )  # fmt: skip
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.stem != "kustomization")

    # the server: the image's ENTRYPOINT (featurekit serve) with the Deployment's args
    deployment = _of("Deployment", docs)["featurekit"]
    pod = deployment["spec"]["template"]["spec"]
    entrypoint = json.loads(_one("ENTRYPOINT"))
    argv = [*entrypoint, *pod["containers"][0].get("args", [])]
    assert "command" not in pod["containers"][0]
    container, env = _check_pod(pod, argv, docs, "Deployment", tmp_path)
    assert "--insecure" not in argv and "--metrics-auth" not in argv
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(port["http"]) == argv[argv.index("--port") + 1]
    routes = _routes(filled)
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes and get["path"] in OPEN_PATHS, probe  # no key needed
        assert get["port"] in port, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes | {"/metrics"}
    assert annotations["prometheus.io/port"] == str(port["http"])
    # API keys from the Secret, at the path the server reads; the placeholder is a valid file
    keys_file = tmp_path / "api-keys.json"
    keys_file.write_text(_mounted_file(pod, container, env["FEATUREKIT_API_KEYS"], docs))
    assert ApiKeys.load(keys_file).names() == ["placeholder"]
    assert not is_loopback(argv[argv.index("--host") + 1])  # exposed, hence the keys

    services = _of("Service", docs)
    for name, target in services.items():
        (pods,) = [
            d for d in _of("Deployment", docs).values()
            if target["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
        ]  # fmt: skip
        labels = pods["spec"]["template"]["metadata"]["labels"]
        assert target["spec"]["selector"].items() <= labels.items(), name
        pod_ports = pods["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert all(
            p["targetPort"] in {q["name"] for q in pod_ports} for p in target["spec"]["ports"]
        )
    assert services["featurekit"]["spec"]["selector"]["app.kubernetes.io/component"] == "server"
    # the online store the settings name is the Redis Service of these manifests
    online = urlsplit(env["FEATUREKIT_ONLINE"])
    assert online.scheme == "redis" and online.hostname in services
    assert online.port in [p["port"] for p in services[str(online.hostname)]["spec"]["ports"]]

    # scheduled materialization: the same image, `featurekit materialize`
    (cron,) = _of("CronJob", docs).values()
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    job = job_pod["containers"][0]
    argv = [*job["command"], *job.get("args", [])]
    assert argv[:2] == ["featurekit", "materialize"]
    assert job["image"] == container["image"]
    _, job_env = _check_pod(job_pod, argv, docs, "CronJob", tmp_path)
    assert argv[argv.index("--store") + 1] == job_env["FEATUREKIT_STORE"]
    assert argv[argv.index("--definitions") + 1] == job_env["FEATUREKIT_DEFINITIONS"]
    assert job_env["FEATUREKIT_ONLINE"] == env["FEATUREKIT_ONLINE"]  # one online store
    assert cron["spec"]["concurrencyPolicy"] in ("Forbid", "Allow", "Replace")
    assert len(cron["spec"]["schedule"].split()) == 5


def test_the_deployment_starts_a_server(filled: fk.Store, tmp_path: Path) -> None:
    """The Deployment's command, settings and mounted files, run: probes pass, keys apply.

    Paths are mapped to tmp, the bind to 127.0.0.1 and a free port, and Redis to a real
    redis-server on loopback; everything else is as the manifests say.
    """
    from test_online_support import redis_server

    docs = k8s_docs()
    pod = _of("Deployment", docs)["featurekit"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _container_env(container, _of("ConfigMap", docs))
    definitions = tmp_path / "features.py"
    definitions.write_text(_mounted_file(pod, container, env["FEATUREKIT_DEFINITIONS"], docs))
    keys = tmp_path / "api-keys.json"
    keys.write_text(_mounted_file(pod, container, env["FEATUREKIT_API_KEYS"], docs))
    argv = [*json.loads(_one("ENTRYPOINT")), *container["args"]]
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    argv = [sys.executable, "-m", "featurekit.cli", *argv[1:]]  # this checkout's featurekit
    probes = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")]
    with redis_server() as redis_url:
        env |= {
            "FEATUREKIT_STORE": str(filled.root),
            "FEATUREKIT_DEFINITIONS": str(definitions),
            "FEATUREKIT_API_KEYS": str(keys),
            "FEATUREKIT_ONLINE": redis_url,
            "FEATUREKIT_PORT": str(port),
        }
        with _running(argv, {**os.environ, **env}, str(tmp_path), tmp_path / "log") as url:
            for probe in probes:
                assert httpx.get(f"{url}{probe}").json()["online_store"] == redis_url
            body = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1]}}
            # the placeholder Secret holds no usable key: every data request is refused
            headers = {"Authorization": "Bearer fk_anything"}
            assert httpx.post(f"{url}/v1/features", json=body, headers=headers).status_code == 401
            assert httpx.get(f"{url}/metrics").status_code == 200  # what the annotations scrape


def test_the_cronjob_command_runs(tmp_path: Path) -> None:
    """The CronJob's command line, settings and mounted definitions, run once (paths mapped
    to tmp, Redis to a local redis-server): the placeholder project materializes nothing."""
    from test_online_support import redis_server

    docs = k8s_docs()
    (cron,) = _of("CronJob", docs).values()
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _container_env(container, _of("ConfigMap", docs))
    definitions = tmp_path / "features.py"
    definitions.write_text(_mounted_file(pod, container, env["FEATUREKIT_DEFINITIONS"], docs))
    fk.Store(tmp_path / "store", progress=False)  # the volume holds a store already
    argv = [*container["command"], *container["args"], "--json"]
    argv[argv.index("--store") + 1] = str(tmp_path / "store")
    argv[argv.index("--definitions") + 1] = str(definitions)
    with redis_server() as redis_url:
        env |= {"FEATUREKIT_ONLINE": redis_url}
        done = subprocess.run(
            [sys.executable, "-m", "featurekit.cli", *argv[1:]],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"] == []


def test_the_docker_context_holds_what_copy_needs() -> None:
    rules = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"  # nothing but what is allowed back
    allowed = {r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")}
    for word, args in dockerfile():
        if word == "COPY":
            *sources, _ = shlex.split(args)
            assert set(sources) <= allowed, sources


# ---- compose, Prometheus, Grafana -------------------------------------------------------------------
def test_compose_parses_and_agrees(filled: fk.Store) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"featurekit", "redis", "prometheus", "grafana", "materialize"} <= set(services)
    server = services["featurekit"]
    build = server["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    image_env = docker_env()
    env = {**image_env, **server["environment"]}
    _check_invocation(json.loads(_one("ENTRYPOINT")), set(env), "compose featurekit")
    assert env["FEATUREKIT_ONLINE"].startswith("redis://redis:")  # the compose Redis service
    (secret,) = server["secrets"]
    assert secret["target"] == image_env["FEATUREKIT_API_KEYS"]
    assert compose["secrets"][secret["source"]]["file"]
    for mapping in server["ports"]:
        assert mapping.startswith("127.0.0.1:")  # published on this host's loopback only
        assert mapping.endswith(f":{image_env['FEATUREKIT_PORT']}")
    job = services["materialize"]
    argv = [*job["entrypoint"], *job["command"]]
    _check_invocation(argv, set(job["environment"]), "compose materialize")
    assert job["environment"] == server["environment"]
    assert argv[argv.index("--definitions") + 1] == env["FEATUREKIT_DEFINITIONS"]
    # every file a service mounts from this folder exists (./project is the user's)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source != "./project":
                assert (DEPLOY / source).exists(), (name, source)

    # Prometheus scrapes a route that is open by default on the server's service and port
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (scrape,) = prometheus["scrape_configs"]
    assert scrape["metrics_path"] in _routes(filled)
    assert scrape["metrics_path"] not in OPEN_PATHS  # open only because --metrics-auth is off
    assert "--metrics-auth" not in json.dumps(server)
    (target,) = scrape["static_configs"][0]["targets"]
    assert target == f"featurekit:{image_env['FEATUREKIT_PORT']}"

    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/featurekit.yaml").read_text()
    )
    mounted = dict(v.split(":")[:2][::-1] for v in services["grafana"]["volumes"] if "./" in v)
    assert mounted[providers["providers"][0]["options"]["path"]] == "./grafana/dashboards"


def test_the_dashboard_plots_metrics_the_server_exports(filled: fk.Store) -> None:
    from test_online_support import http_server

    dashboard = json.loads((DEPLOY / "grafana/dashboards/featurekit.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"featurekit_\w+", e)
    }
    with http_server(create_app(filled)) as url:
        body = {"features": ["driver_stats:avg_fare"], "entities": {"driver_id": [1, 2]}}
        assert httpx.post(f"{url}/v1/features", json=body).status_code == 200
        text = httpx.get(f"{url}/metrics").text
    exported = set(re.findall(r"^# TYPE (featurekit_\w+) ", text, re.MULTILINE))
    assert used <= exported, used - exported
    assert len(used) >= 8  # requests, latency, lookups, misses, expired, freshness, ...
    labels = {m for e in exprs for m in re.findall(r"by \(([^)]*)\)", e)}
    for group in labels:
        for label in (x.strip() for x in group.split(",")):
            assert label == "le" or f'{label}="' in text, label


# ---- serve finds the project, as materialize does ----------------------------------------------------
def test_serve_reads_the_project_and_its_definitions(tmp_path: Path) -> None:
    """The server and the scheduled materialize agree on one project: its featurekit.toml,
    and services declared only inside ``fk.Definitions``."""

    def featurekit(*args: str, cwd: Path, code: int = 0) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "featurekit.cli", *args],
            cwd=cwd, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == code, (args, done.stdout[-2000:], done.stderr[-2000:])

    featurekit("init", "proj", cwd=tmp_path)
    project = tmp_path / "proj"
    featurekit("plan", cwd=project, code=2)  # changes to apply
    featurekit("apply", cwd=project)
    featurekit("materialize", cwd=project)
    # a service that exists only inside a Definitions object, in another module
    (project / "quotes.py").write_text(
        "import featurekit as fk\n"
        "from features import driver_stats, quoted_fare\n\n"
        "defs = fk.Definitions(\n"
        "    views=[driver_stats], services=[fk.FeatureService('quotes', features=[quoted_fare])]\n"
        ")\n"
    )
    body = {"entities": {"driver_id": [1, 2], "trip_km": [3.0, 4.0]}}
    env = {**os.environ, "FEATUREKIT_PORT": str(free_port())}
    serve = [sys.executable, "-m", "featurekit.cli", "serve"]
    with _running(serve, env, str(project), tmp_path / "a.log") as url:  # no flags at all
        reply = httpx.post(f"{url}/v1/features", json={**body, "feature_service": "pricing"})
        assert reply.status_code == 200, reply.text
        assert list(reply.json()["columns"]) == [
            "driver_id", "trip_km", "fare_per_km", "rating", "quoted_fare"
        ]  # fmt: skip
    env["FEATUREKIT_PORT"] = str(free_port())
    with _running(
        [*serve, "--definitions", "quotes.py"], env, str(project), tmp_path / "b.log"
    ) as url:
        reply = httpx.post(f"{url}/v1/features", json={**body, "feature_service": "quotes"})
        assert reply.status_code == 200, reply.text
        columns = reply.json()["columns"]
        assert list(columns) == ["driver_id", "trip_km", "quoted_fare"]
        assert all(isinstance(v, float) for v in columns["quoted_fare"])
    env["FEATUREKIT_PORT"] = str(free_port())
    done = subprocess.run(serve, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no store given: pass --store ROOT (or set FEATUREKIT_STORE)" in done.stderr


# ---- the online store from the environment ------------------------------------------------------
def test_the_environment_names_the_online_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server and a scheduled materialize run configured by one variable
    monkeypatch.setenv("FEATUREKIT_ONLINE", "memory")
    assert type(fk.Store(tmp_path / "a", progress=False).online).__name__ == "MemoryOnlineStore"
    explicit = fk.Store(tmp_path / "b", progress=False, online="sqlite").online
    assert type(explicit).__name__ == "SQLiteOnlineStore"  # an explicit argument wins
    monkeypatch.delenv("FEATUREKIT_ONLINE")
    assert type(fk.Store(tmp_path / "c", progress=False).online).__name__ == "SQLiteOnlineStore"
