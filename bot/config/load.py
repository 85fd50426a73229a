"""The rules directory: `channels`, `rules` and `destinations`, read from every YAML file in it.

Every problem is collected and reported as `FILE:LINE: message`, with LINE taken from the YAML
nodes' marks, so a user fixes them all in one pass instead of one per run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from bot import channel
from bot.alerts import senders
from bot.alerts.config import CONSOLE, Destination
from bot.errors import InputError
from bot.rules.rule import Group, RegexTerm, Rule

SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"


class ConfigError(InputError):
    """Invalid rules directory: one `FILE:LINE: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- channels --------------------------------------------------------------------------------------

def _channel_from_str(value: Any) -> Any:
    return {"name": value} if isinstance(value, str | int) else value


class ChannelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="username (with or without @), a t.me link, or a -100… id")
    tg_id: int | None = Field(None, description="Telegram's bare channel id (set from a -100… id)")
    via: Literal["auto", "telegram", "web"] = "auto"
    interval: float | None = Field(None, gt=0, description="seconds between web-preview polls")
    backfill: int = Field(0, ge=0, description="posts of history to fetch when the channel is new")

    @model_validator(mode="before")
    @classmethod
    def _reference(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str | int):
            name, tg_id = channel.parse(str(data["name"]))
            data = {**data, "name": name}
            if tg_id is not None:
                data["tg_id"] = tg_id
        return data

    @model_validator(mode="after")
    def _named(self) -> ChannelEntry:
        if self.name is None and self.tg_id is None:
            raise ValueError("a channel needs a name or a -100… id")
        return self

    @property
    def key(self) -> str:
        return channel.key(username=self.name, tg_id=self.tg_id)


ChannelItem = Annotated[
    ChannelEntry, BeforeValidator(_channel_from_str, json_schema_input_type=str | ChannelEntry)
]


class RulesFile(BaseModel):
    """One YAML file of the rules directory. Keys combine across files."""

    model_config = ConfigDict(extra="forbid", title="tgsentinel rules file")

    channels: list[ChannelItem] = Field(default_factory=list, description="what to watch")
    rules: list[Rule] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)
    ops: str | None = Field(None, description="destination for operational alerts")


@dataclass
class Config:
    channels: list[ChannelEntry]
    rules: list[Rule]
    destinations: dict[str, Any]  # name -> Destination model; `console` is always there
    ops: str | None = None
    files: tuple[Path, ...] = ()
    # channel key -> "FILE:LINE" where it is listed, so a problem found at run time points at its line
    listed_at: dict[str, str] = dataclasses.field(default_factory=dict)
    rules_at: dict[str, str] = dataclasses.field(default_factory=dict)  # rule id -> "FILE:LINE"
    # "FILE:LINE: warning: ..." for what looks wrong but may be meant (a proxy in front of Slack)
    warnings: list[str] = dataclasses.field(default_factory=list)


# --- JSON Schema -----------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    schema = RulesFile.model_json_schema()
    return {"$schema": SCHEMA_URL, **schema}


def write_schema(path: Path) -> None:
    path.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --- loading ---------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_STR_TAG = "tag:yaml.org,2002:str"
# Only these values are safe to echo in a message; the rest may be secrets (URLs, tokens).
_ECHO = {
    "severity", "forwards", "edits", "via", "type", "flags", "id", "enabled", "throttle", "digest", "stories"
}


DOTENV = Path(".env")  # read for ${VAR} beside the environment, in the working directory


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    if env is not None:
        return env
    dotenv = {k: v for k, v in dotenv_values(DOTENV).items() if v is not None}
    return {**dotenv, **os.environ}


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _substitute(
    node: yaml.Node,
    env: Mapping[str, str],
    where: str,
    problems: list[str],
    reported: set[int] | None = None,
) -> None:
    """`${NAME}` replaced from `env`; an unset one is a problem, and its node goes into `reported`."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG and "${" in node.value:

            def repl(m: re.Match[str]) -> str:
                if m.group(1) not in env:
                    problems.append(f"{where}:{_line(node)}: environment variable {m.group(1)} is not set")
                    if reported is not None:
                        reported.add(id(node))
                    return ""
                return env[m.group(1)]

            node.value = _VAR.sub(repl, node.value)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _substitute(child, env, where, problems, reported)
    elif isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    problems.append(f"{where}:{_line(key)}: duplicate key {key.value!r}")
                seen.add(key.value)
            _substitute(value, env, where, problems, reported)


def _bare_variables(
    node: yaml.Node, where: str, problems: list[str], flagged: set[int], field: str = ""
) -> None:
    """`$NAME` and `${NAME` are not substituted: say so, rather than let `$NAME` be taken for a URL.

    Only under `destinations:`, where `${NAME}` is how secrets are written (a rule term may well be
    `$TSLA`). A name that does not look like a variable's may be part of a literal secret: not shown.
    """
    if isinstance(node, yaml.ScalarNode):
        if node.tag != _STR_TAG or "$" not in node.value:
            return
        rest = _VAR.sub("", node.value)
        bare = _BARE_VAR.search(rest)
        label = f"{field}: " if field else ""
        if bare is not None:
            name = bare.group(1) if _ENV_NAME.match(bare.group(1)) else "NAME"
            problems.append(f"{where}:{_line(node)}: {label}${name} is not substituted: write ${{{name}}}")
            flagged.add(id(node))
        elif "${" in rest:
            problems.append(f"{where}:{_line(node)}: {label}'${{' without its closing '}}'")
            flagged.add(id(node))
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _bare_variables(child, where, problems, flagged, field)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else field
            _bare_variables(value, where, problems, flagged, str(name))


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _tag_of(tp: Any) -> str | None:
    if typing.get_origin(tp) is Annotated:
        for meta in typing.get_args(tp)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and "type" in tp.model_fields:
        args = typing.get_args(tp.model_fields["type"].annotation)
        return args[0] if args else None
    return None


def _field(model: type[BaseModel], key: Any) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _keys_at(tp: Any, loc: Sequence[Any]) -> list[str] | None:
    """The valid keys of the model found by following a pydantic error location from `tp`."""
    if isinstance(tp, typing.ForwardRef | str):
        name = tp.__forward_arg__ if isinstance(tp, typing.ForwardRef) else tp
        tp = {"Group": Group, "RegexTerm": RegexTerm}.get(name, tp)
    base = _unwrap(tp)
    origin = typing.get_origin(base)
    if not loc:
        if isinstance(base, type) and issubclass(base, BaseModel):
            return [info.alias or name for name, info in base.model_fields.items()]
        if origin in (Union, types.UnionType):
            for arg in typing.get_args(base):
                if (keys := _keys_at(arg, loc)) is not None:
                    return keys
        return None
    head, rest = loc[0], loc[1:]
    if origin in (list, tuple):
        return _keys_at(typing.get_args(base)[0], rest) if isinstance(head, int) else None
    if origin is dict:
        return _keys_at(typing.get_args(base)[1], rest)
    if origin in (Union, types.UnionType):
        args = typing.get_args(base)
        for arg in args:
            if _tag_of(arg) == head:
                return _keys_at(arg, rest)
        for arg in args:
            if arg is not type(None) and (keys := _keys_at(arg, loc)) is not None:
                return keys
        return None
    if isinstance(base, type) and issubclass(base, BaseModel):
        info = _field(base, head)
        return _keys_at(info.annotation, rest) if info is not None else None
    return None


def _node_at(node: yaml.Node, loc: Sequence[Any], key_node: bool) -> yaml.Node:
    """Follow a pydantic location through the YAML nodes; union tags in it are skipped."""
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == part:
                    node = k if key_node and i == len(loc) - 1 else v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
    return node


def _message(err: Any, keys: list[str] | None) -> str:
    # "[key]": pydantic's mark of a mapping's key (a header name) rather than its value.
    loc = [p for p in err["loc"] if not isinstance(p, int) and p != "[key]"]
    field = str(loc[-1]) if loc else ""
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {field!r}"
        near = difflib.get_close_matches(field, keys or [], n=1, cutoff=0.5)
        if near:
            return f"{msg} (did you mean {near[0]!r}?)"
        return f"{msg} (valid keys: {', '.join(keys)})" if keys else msg
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"missing key {field!r}"
    value = err.get("input")
    echo = field in _ECHO and isinstance(value, str | int | float) and len(str(value)) <= 60
    if echo and repr(value) not in msg:
        msg += f" (got {value!r})"
    if field in ("term", "group", "regex", "flags") or err["type"] == "term_kind":
        return msg
    return f"{field}: {msg}" if field else msg


def _validate(
    adapter: TypeAdapter[Any],
    tp: Any,
    data: Any,
    node: yaml.Node,
    where: str,
    problems: list[str],
    reported: Collection[int] = (),
) -> Any:
    """The model, or None with its problems added; `reported`: ids of nodes already reported on."""
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = err["loc"]
            extra = err["type"] == "extra_forbidden"
            keys = _keys_at(tp, loc[:-1]) if extra else None
            if keys is not None and loc[-2:-1] == ("group",):
                keys = [*keys, "regex"]  # an item mapping may also be meant as a regex term
            target = _node_at(node, loc, key_node=extra)
            if id(target) in reported:
                continue  # `url: $NAME` is one problem, not also "no scheme"
            problems.append(f"{where}:{_line(target)}: {_message(err, keys)}")
        return None


_CHANNEL = TypeAdapter(ChannelItem)
_RULE = TypeAdapter(Rule)
_DESTINATION = TypeAdapter(Destination)
_TOP = {
    "channels": (_CHANNEL, ChannelItem),
    "rules": (_RULE, Rule),
    "destinations": (_DESTINATION, Destination),
}


@dataclass
class _Placed:
    model: Any
    where: str
    line: int


# What a file yields: models by top-level key; `ids`: (section, rule id or destination name, model
# or None when invalid) of every item written, valid or not, so a duplicate is found either way;
# `warnings`: messages.
_SECTIONS = ("channels", "rules", "destinations", "ops", "ids", "warnings")
_ID_KEYS = {"rules": "id", "destinations": "name"}


def _sections() -> dict[str, list[_Placed]]:
    return {key: [] for key in _SECTIONS}


def _read_file(path: Path, env: Mapping[str, str], problems: list[str]) -> dict[str, list[_Placed]]:
    found: list[str] = []
    out = _read_nodes(path, env, found)
    # Report in file order, whichever check found the problem.
    prefix = len(str(path)) + 1
    problems.extend(sorted(found, key=lambda p: int(p[prefix:].split(":", 1)[0])))
    return out


def _read_nodes(path: Path, env: Mapping[str, str], problems: list[str]) -> dict[str, list[_Placed]]:
    where = str(path)
    out = _sections()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{where}:1: cannot read: {exc}")
        return out
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return out
        reported: set[int] = set()
        if isinstance(root, yaml.MappingNode):
            for key_node, value_node in root.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == "destinations":
                    _bare_variables(value_node, where, problems, reported)
        _substitute(root, env, where, problems, reported)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problems.append(f"{where}:{line}: YAML syntax error: {exc.problem or exc.context}")
        return out
    finally:
        loader.dispose()
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        problems.append(
            f"{where}:{_line(root)}: a rules file is a mapping with channels, rules, destinations"
        )
        return out
    for key_node, value_node in root.value:
        key = key_node.value
        value = data.get(key)
        if key == "ops":
            if isinstance(value, str) and value:
                out["ops"].append(_Placed(value, where, _line(value_node)))
            else:
                problems.append(f"{where}:{_line(value_node)}: ops: a destination name")
            continue
        if key not in _TOP:
            near = difflib.get_close_matches(str(key), [*_TOP, "ops"], n=1, cutoff=0.5)
            hint = (
                f" (did you mean {near[0]!r}?)"
                if near
                else " (valid keys: channels, rules, destinations, ops)"
            )
            problems.append(f"{where}:{_line(key_node)}: unknown key {key!r}{hint}")
            continue
        if value is None:
            continue
        if not isinstance(value, list) or not isinstance(value_node, yaml.SequenceNode):
            problems.append(f"{where}:{_line(value_node)}: {key}: a list")
            continue
        adapter, tp = _TOP[key]
        for item, item_node in zip(value, value_node.value, strict=True):
            model = _validate(adapter, tp, item, item_node, where, problems, reported)
            if model is not None:
                out[key].append(_Placed(model, where, _line(item_node)))
            name = item.get(_ID_KEYS.get(key)) if isinstance(item, dict) else None
            if isinstance(name, str | int):
                out["ids"].append(_Placed((key, str(name), model), where, _line(item_node)))
            if key in ("destinations", "rules") and model is not None:
                for at, message in model.warnings():
                    line = _line(_node_at(item_node, at, key_node=False))
                    out["warnings"].append(_Placed(f"warning: {at[-1]}: {message}", where, line))
    return out


def _files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))


def stamp(rules_dir: Path) -> tuple[object, ...]:
    """What `load_config(rules_dir)` reads, as a value that changes whenever its result could: each
    file's name, inode, size and change times (a copy that keeps the modification time still
    changes the others), the .env file's, and the environment (${VAR})."""
    try:
        paths = [*_files(rules_directory(rules_dir)), DOTENV]
    except (InputError, OSError):
        return ("unreadable",)  # loaded each time: it says why
    seen = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        seen.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return (*seen, hash(frozenset(os.environ.items())))


def rules_directory(path: Path | str) -> Path:
    """`path` if it is a directory; else the one line that says what to do about it."""
    path = Path(path)
    if path.is_dir():
        return path
    shown = str(path) if path.is_absolute() or str(path).startswith(".") else f"./{path}"
    state = "is not a directory" if path.exists() else "not found"
    raise InputError(f"rules directory {shown} {state}: run 'tgsentinel init' or pass --rules DIR")


def load_config(rules_dir: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check every *.yaml / *.yml directly in `rules_dir`; raise ConfigError with all problems."""
    rules_dir = rules_directory(rules_dir)
    env = _env(env)
    problems: list[str] = []
    placed = _sections()
    files = _files(rules_dir)
    for path in files:
        for key, items in _read_file(path, env, problems).items():
            placed[key].extend(items)

    channels: dict[str, _Placed] = {}
    for p in placed["channels"]:
        first = channels.setdefault(p.model.key, p)
        if first is not p and first.model != p.model:
            problems.append(
                f"{p.where}:{p.line}: channel {p.model.key!r} is already listed with other settings "
                f"at {first.where}:{first.line}"
            )

    # Duplicates and references by what is written, valid or not: an invalid first rule `x` does not
    # hide a second one, and a rule naming an invalid destination is not told it is unknown.
    written: dict[tuple[str, str], _Placed] = {
        ("destinations", "console"): _Placed(("destinations", "console", CONSOLE), "<built in>", 0)
    }
    for p in placed["ids"]:
        section, name, model = p.model
        first = written.setdefault((section, name), p)
        # The same destination twice (in two files, say) is fine; a rule id must be unique.
        same = section == "destinations" and model is not None and first.model[2] == model
        if first is not p and not same:
            what = "rule id" if section == "rules" else "destination"
            problems.append(
                f"{p.where}:{p.line}: duplicate {what} {name!r} (first at {first.where}:{first.line})"
            )
    destination_names = {name: p for (section, name), p in written.items() if section == "destinations"}

    destinations: dict[str, _Placed] = {"console": _Placed(CONSOLE, "<built in>", 0)}
    for p in placed["destinations"]:
        destinations.setdefault(p.model.name, p)
    for name, p in destinations.items():
        if why := senders.refusal(p.model):
            problems.append(f"{p.where}:{p.line}: destination {name!r}: {why}")

    rules: dict[str, _Placed] = {}
    for p in placed["rules"]:
        rule: Rule = p.model
        if rule.id in rules:
            continue  # reported above
        rules[rule.id] = p
        for name in rule.notify:
            if name not in destination_names:
                problems.append(
                    f"{p.where}:{p.line}: rule {rule.id!r}: unknown destination {name!r}"
                    + _suggest(name, destination_names)
                )
        if channels:
            known = {*channels, "dump"}
            for ref in [*rule.channels, *rule.exclude_channels]:
                if ref not in known and not ref.startswith("dump:"):
                    problems.append(
                        f"{p.where}:{p.line}: rule {rule.id!r}: channel {ref!r} is not watched"
                        + _suggest(ref, channels)
                    )

    ops = None
    for p in placed["ops"]:
        if ops is not None and p.model != ops:
            problems.append(f"{p.where}:{p.line}: ops is already set to {ops!r}")
        ops = p.model
        if p.model not in destination_names:
            problems.append(
                f"{p.where}:{p.line}: ops: unknown destination {p.model!r}"
                + _suggest(p.model, destination_names)
            )

    warnings = [f"{p.where}:{p.line}: {p.model}" for p in placed["warnings"]]
    if problems:
        # The warnings too: one pass shows everything to look at.
        raise ConfigError(sorted([*problems, *warnings], key=lambda p: _position(p, files)))
    if not channels:
        listed = "no channels listed (add `channels:` to a rules file): nothing is watched"
        warnings.append(f"{rules_dir}: warning: {listed}")
    return Config(
        channels=[p.model for p in channels.values()],
        rules=[p.model for p in rules.values()],
        destinations={name: p.model for name, p in destinations.items()},
        ops=ops,
        files=tuple(files),
        listed_at={key: f"{p.where}:{p.line}" for key, p in channels.items()},
        rules_at={rule_id: f"{p.where}:{p.line}" for rule_id, p in rules.items()},
        warnings=sorted(warnings, key=lambda p: _position(p, files)),
    )


def _position(problem: str, files: list[Path]) -> tuple[int, int]:
    """Where a problem line points, as (file order, line), so the report reads top to bottom."""
    for order, path in enumerate(files):
        prefix = f"{path}:"
        if problem.startswith(prefix):
            line = problem[len(prefix) :].split(":", 1)[0]
            return order, int(line) if line.isdigit() else 0
    return len(files), 0


def _suggest(name: str, known: Mapping[str, Any]) -> str:
    near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""
