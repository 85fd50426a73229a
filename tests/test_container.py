"""The container files, checked statically (no Docker engine runs here), and .env.example's coverage."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_runs_as_non_root_with_a_volume_and_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert re.search(r'^VOLUME \["/app/data"\]', text, re.M)
    assert "slim" in text.splitlines()[1] or "slim" in text


def test_compose_has_the_service_a_data_volume_env_file_and_a_postgres_profile():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["tgsentinel"]
    assert service["env_file"] == ".env"
    assert any(v.endswith(":/app/data") for v in service["volumes"])
    assert compose["services"]["postgres"]["profiles"] == ["postgres"]


def test_env_example_lists_every_setting_with_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    listed = {}
    for i, line in enumerate(lines):
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=", line)
        if m:
            listed[m.group(1)] = i
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = list(alias.choices) if alias is not None else [f"TGSENTINEL_{name.upper()}"]
        found = [n for n in names if n in listed]
        assert found, f"{names[0]} is missing from .env.example"
        above = lines[listed[found[0]] - 1]
        assert above.startswith("#"), f"{found[0]} has no comment above it"
