"""A rule as written in YAML: the models its file is validated against, and the engine compiles."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import regex
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from bot.channel import scope_key
from bot.duration import Duration
from bot.rules.terms import REGEX_FLAGS, backtracking_risk, compile_regex, term_problem


class Severity(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


def _check_term(value: str) -> str:
    if problem := term_problem(value):
        raise ValueError(problem)
    return value


TermStr = Annotated[
    str, AfterValidator(_check_term), Field(description="a word, a phrase, prefix* or #hashtag")
]


class RegexTerm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regex: str = Field(min_length=1, description="a pattern of Python's `regex` module, run on NFC text")
    flags: str = Field("", pattern=f"^[{''.join(REGEX_FLAGS)}]*$", description="i, m, s, x")

    @model_validator(mode="after")
    def _compiles(self) -> RegexTerm:
        try:
            compile_regex(self.regex, self.flags)
        except regex.error as exc:
            raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self


def _item_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "term"
    if isinstance(value, RegexTerm):
        return "regex"
    if isinstance(value, Group):
        return "group"
    if isinstance(value, dict):
        return "regex" if "regex" in value else "group"
    return None


Item = Annotated[
    Annotated[TermStr, Tag("term")] | Annotated["RegexTerm", Tag("regex")] | Annotated["Group", Tag("group")],
    Discriminator(
        _item_kind,
        custom_error_type="term_kind",
        custom_error_message="a term is a string, {regex: ...}, or a group (all/any/none)",
    ),
]


class Group(BaseModel):
    """Every key present must hold: `all` items hit, `any` item hits, `none` of the items hits."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    all_: list[Item] | None = Field(None, alias="all")
    any_: list[Item] | None = Field(None, alias="any")
    none_: list[Item] | None = Field(None, alias="none")

    @field_validator("all_", "any_", "none_", mode="after")
    @classmethod
    def _not_empty(cls, items: list[Any] | None) -> list[Any] | None:
        if items is not None and not items:
            raise ValueError("empty group: the list has no items")
        return items

    @model_validator(mode="after")
    def _has_key(self) -> Group:
        if self.all_ is None and self.any_ is None and self.none_ is None:
            raise ValueError("empty group: it needs at least one of all, any, none")
        return self

    def parts(self) -> list[tuple[str, list[Any]]]:
        return [(k, v) for k, v in (("all", self.all_), ("any", self.any_), ("none", self.none_)) if v]

    def warnings(self, at: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], str]]:
        """(where, message) for each regex term that may backtrack catastrophically."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        for key, items in self.parts():
            for i, item in enumerate(items):
                if isinstance(item, Group):
                    out += item.warnings((*at, key, i))
                elif isinstance(item, RegexTerm) and backtracking_risk(item.regex, item.flags):
                    out.append(
                        (
                            (*at, key, i, "regex"),
                            f"nested repeat in {item.regex}, like (a+)+ or (a|aa)+: a post that nearly "
                            "matches can take exponential time (the monitor stops the term and, if it "
                            "keeps timing out, disables it)",
                        )
                    )
        return out


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    severity: Severity = Severity.medium
    channels: list[str] = Field(default_factory=list, description="scope (default: every watched channel)")
    exclude_channels: list[str] = Field(default_factory=list)
    match: Group
    forwards: Literal["include", "exclude", "only"] = "include"
    edits: Literal["rematch", "ignore"] = "rematch"
    enabled: bool = True
    notify: list[str] = Field(default_factory=lambda: ["console"], description="destination names")
    throttle: Duration | None = None
    digest: Duration | None = None
    # merge: a near-duplicate of a post this rule alerted on (its story) is added to that alert;
    # each: every copy alerts, bar exact ones.
    stories: Literal["merge", "each"] = "merge"

    @field_validator("channels", "exclude_channels", mode="after")
    @classmethod
    def _channel_keys(cls, refs: list[str]) -> list[str]:
        return [scope_key(r) for r in refs]

    def warnings(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(where, message) for what looks wrong but may be meant; `rules check` prints them."""
        return self.match.warnings(("match",))
