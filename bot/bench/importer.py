"""`tgsentinel bench import`: a generated Telegram Desktop export through `tgsentinel import` into a
fresh SQLite store, at a quarter of the size and at the full size, each in its own process: posts/s
and peak RSS. The two peaks should be about equal: the import streams, so memory must not grow with
the file."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WORDS = [
    *("BRICS", "global", "majority", "sanctions", "ministry", "briefing", "statement", "cooperation"),
    *("Eurasian", "integration", "partnership", "security", "council", "delegation", "президент"),
    *("министр", "заявление", "переговоры", "сотрудничество", "санкции", "брифинг", "делегация"),
]

_CHILD = """
import asyncio, io, json, resource, sys, time
from pathlib import Path
from bot.commands.importer import import_export
from bot.settings import Settings
export, tmp = sys.argv[1], Path(sys.argv[2])
rules = tmp / "rules"
rules.mkdir(exist_ok=True)
(rules / "rules.yaml").write_text("rules:\\n  - id: brics\\n    match: {any: [BRICS]}\\n", encoding="utf-8")
settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/bench.db", rules_dir=rules, data_dir=tmp)
started = time.perf_counter()
totals = asyncio.run(import_export(settings, export, err=io.StringIO()))
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"posts": totals["new"], "seconds": seconds, "peak_rss_mb": peak / 1024}))
"""


def _message(i: int) -> dict:
    words = " ".join(_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(60))
    msg: dict = {
        "id": i,
        "type": "message",
        "date": "2024-08-18T15:04:05",
        "date_unixtime": str(1_700_000_000 + i * 60),
        "from": "Bench Channel",
        "from_id": "channel1999999999",
        "text": [
            f"Post {i}: ",
            {"type": "bold", "text": words[:80]},
            f" {words} ",
            {"type": "hashtag", "text": "#BRICS"},
        ],
        "text_entities": [
            {"type": "plain", "text": f"Post {i}: "},
            {"type": "bold", "text": words[:80]},
            {"type": "plain", "text": f" {words} "},
            {"type": "hashtag", "text": "#BRICS"},
        ],
    }
    if i % 5 == 0:
        msg["photo"] = "(File not included. Change data exporting settings to download.)"
    if i % 11 == 0:
        msg["edited"], msg["edited_unixtime"] = "2024-08-18T16:00:00", str(1_700_000_100 + i * 60)
    if i % 13 == 0:
        msg["forwarded_from"] = "Another Channel"
    return msg


def generate_export(path: Path, megabytes: float) -> int:
    """Write a single-channel export of about `megabytes` MB, as Desktop lays it out; its message count."""
    limit = int(megabytes * 1_000_000)
    with path.open("w", encoding="utf-8") as f:
        f.write('{\n "name": "Bench Channel",\n "type": "public_channel",\n "id": 1999999999,\n')
        f.write(' "messages": [\n')
        i, written = 0, 0
        while written < limit:
            i += 1
            chunk = ("" if i == 1 else ",\n") + json.dumps(_message(i), ensure_ascii=False, indent=1)
            written += len(chunk.encode("utf-8"))
            f.write(chunk)
        f.write("\n ]\n}\n")
    return i


def _import_in_child(export: Path, tmp: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(export), str(tmp)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"import failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def run(megabytes: int = 200) -> dict:
    rows = []
    for size in (megabytes / 4, megabytes):
        with tempfile.TemporaryDirectory() as tmp:
            export = Path(tmp) / "result.json"
            started = time.perf_counter()
            n = generate_export(export, size)
            generated = time.perf_counter() - started
            got = _import_in_child(export, Path(tmp))
            if got["posts"] != n:
                raise AssertionError(f"stored {got['posts']} posts, expected {n}")
            rows.append(
                {
                    "export_mb": round(export.stat().st_size / 1_000_000, 1),
                    "posts": n,
                    "generate_seconds": round(generated, 1),
                    "import_seconds": round(got["seconds"], 1),
                    "posts_per_s": round(n / got["seconds"]),
                    "peak_rss_mb": round(got["peak_rss_mb"], 1),
                }
            )
    small, large = rows
    return {
        "bench": "import",
        "runs": rows,
        "rss_growth_mb": round(large["peak_rss_mb"] - small["peak_rss_mb"], 1),
    }
