"""Input schemas of the catalogue's actions, validated before any call to Cloudflare.

Pydantic (it ships with the Cloudflare SDK, so it costs no new dependency) gives one declaration
that serves twice: `Model.model_validate(data)` rejects bad input with field-level messages before
the gate lets anything through, and `Model.model_json_schema()` is the tool schema an MCP server
publishes later. Django forms would cover the first half only.

Every model forbids unknown fields (a typo in a bulk change must not be silently ignored) and
strips surrounding whitespace. Record names may be given relative to the zone ("www", "@") or in
full; executors resolve them against the zone's name, so "www" and "www.example.com" are one record.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ValidationError", "input_errors"]

# The record types the staff pages and bulk changes handle. Others (SRV, CAA, ...) need Cloudflare's
# structured `data` field; they can be added with their own schema when someone needs them.
RecordType = Literal["A", "AAAA", "CNAME", "MX", "TXT", "NS"]
RECORD_TYPES: tuple[str, ...] = ("A", "AAAA", "CNAME", "MX", "TXT", "NS")
PROXIABLE = frozenset({"A", "AAAA", "CNAME"})

_LABEL = r"(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)"
_NAME_RE = re.compile(rf"^(@|{_LABEL}(\.{_LABEL})*)$")
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
_RECORD_ID_RE = re.compile(r"^[0-9a-fA-F-]{1,64}$")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class NoInput(_Input):
    """Actions that take nothing but their target."""


class Page(_Input):
    page: Annotated[int, Field(ge=1, le=10_000)] = 1
    per_page: Annotated[int, Field(ge=5, le=100)] = 50


class ZonesListInput(Page):
    name: Annotated[str, Field(max_length=253)] = ""


class DnsRecordsListInput(Page):
    type: RecordType | None = None
    name: Annotated[str, Field(max_length=253, description="Part of the record name to look for")] = ""


def _record_name(value: str) -> str:
    name = value.lower().rstrip(".")
    if not name or len(name) > 253 or not _NAME_RE.match(name):
        raise ValueError("Enter a host name such as www, @ (the zone itself) or www.example.com.")
    return name


def _record_id(value: str) -> str:
    if not _RECORD_ID_RE.match(value):
        raise ValueError("Not a Cloudflare DNS record id.")
    return value


class _RecordFields(_Input):
    type: RecordType
    name: Annotated[str, Field(max_length=253)]
    content: Annotated[str, Field(min_length=1, max_length=2048)]
    ttl: Annotated[int, Field(description="Seconds (60 to 86400), or 1 for Automatic")] = 1
    proxied: bool = False
    priority: Annotated[int | None, Field(ge=0, le=65535, description="MX only")] = None
    comment: Annotated[str, Field(max_length=100)] = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _record_name(value)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: int) -> int:
        if value != 1 and not 60 <= value <= 86400:
            raise ValueError("TTL must be 1 (Automatic) or between 60 and 86400 seconds.")
        return value

    @model_validator(mode="after")
    def _by_type(self):
        check_record(type=self.type, content=self.content, proxied=self.proxied, priority=self.priority)
        return self


def check_record(*, type: str, content: str, proxied: bool, priority: int | None) -> None:
    """The rules Cloudflare applies per record type, checked here so a bad record costs no call."""
    if type == "A":
        try:
            ipaddress.IPv4Address(content)
        except ValueError:
            raise ValueError("An A record points to an IPv4 address, such as 203.0.113.10.") from None
    elif type == "AAAA":
        try:
            ipaddress.IPv6Address(content)
        except ValueError:
            raise ValueError("An AAAA record points to an IPv6 address, such as 2001:db8::1.") from None
    elif type in ("CNAME", "NS", "MX"):
        if not _HOST_RE.match(content.lower().rstrip(".")):
            raise ValueError(f"A {type} record points to a host name, such as example.net.")
    if proxied and type not in PROXIABLE:
        raise ValueError(f"A {type} record cannot be proxied: only A, AAAA and CNAME records can.")
    if type == "MX" and priority is None:
        raise ValueError("An MX record needs a priority (0 to 65535; lower is tried first).")


class DnsRecordCreateInput(_RecordFields):
    """A new record. Creating one that already exists (same type, name and content) changes nothing."""


class DnsRecordUpdateInput(_Input):
    """New values for an existing record; fields left out keep their current value."""

    record_id: str
    type: RecordType | None = None
    name: Annotated[str | None, Field(max_length=253)] = None
    content: Annotated[str | None, Field(min_length=1, max_length=2048)] = None
    ttl: int | None = None
    proxied: bool | None = None
    priority: Annotated[int | None, Field(ge=0, le=65535)] = None
    comment: Annotated[str | None, Field(max_length=100)] = None

    @field_validator("record_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _record_id(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _record_name(value)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: int | None) -> int | None:
        if value is not None and value != 1 and not 60 <= value <= 86400:
            raise ValueError("TTL must be 1 (Automatic) or between 60 and 86400 seconds.")
        return value

    def changes(self) -> dict[str, object]:
        """The fields the caller asked to set (None means: keep)."""
        return {k: v for k, v in self.model_dump(exclude={"record_id"}).items() if v is not None}


class DnsRecordDeleteInput(_Input):
    record_id: str

    @field_validator("record_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _record_id(value)


PurgeMode = Literal["everything", "urls", "hostnames", "tags", "prefixes"]


class CachePurgeInput(_Input):
    """What to purge: everything, or up to 30 URLs / host names / cache tags / URL prefixes."""

    mode: PurgeMode
    values: Annotated[list[Annotated[str, Field(min_length=1, max_length=1024)]], Field(max_length=30)] = []

    @model_validator(mode="after")
    def _values(self):
        values = [v for v in self.values if v]
        if self.mode == "everything":
            if values:
                raise ValueError("Purging everything takes no list: leave it empty.")
            return self
        if not values:
            raise ValueError(f"List at least one of the {self.mode} to purge (30 at most).")
        for value in values:
            if self.mode == "urls":
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError(f"Not a full URL (https://...): {value[:80]}")
            elif self.mode == "hostnames":
                if not _HOST_RE.match(value.lower()):
                    raise ValueError(f"Not a host name: {value[:80]}")
            elif self.mode == "prefixes":
                if "://" in value or "/" not in value:
                    raise ValueError(
                        f"A prefix is a host and path without the scheme, such as www.example.com/blog: {value[:80]}"
                    )
            elif self.mode == "tags" and ("," in value or " " in value):
                raise ValueError(f"One cache tag per line, without commas or spaces: {value[:80]}")
        return self

    def sdk_arguments(self) -> dict[str, object]:
        """The body Cloudflare expects: exactly one purge kind per request."""
        key = {"everything": "purge_everything", "urls": "files", "hostnames": "hosts"}.get(self.mode, self.mode)
        return {"purge_everything": True} if self.mode == "everything" else {key: list(self.values)}


class ZoneSettingsReadInput(_Input):
    setting: Annotated[str, Field(pattern=r"^[a-z0-9_]{0,64}$", description="One setting id, or empty for all")] = ""


def input_errors(exc: ValidationError) -> list[str]:
    """Pydantic's errors as short sentences for staff: "content: An A record points to ..."."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines
