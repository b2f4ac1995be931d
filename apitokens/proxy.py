"""The Cloudflare-compatible proxy: the agency's own scripts keep the official SDK, change the base
URL to `/proxy/cloudflare/client/v4` and use a service key instead of a Cloudflare token.

Each request is mapped to one catalogue action (the route table below) and runs through
`operations.services.action_run` like any staff action: the same gate (the key's clients and
actions instead of a staff role), the client's current credential (the grant, or its API token
before cutover), the same action record (actor: the service key). Nothing is passed through: a
request with no catalogue action is refused with a clear error and no call upstream.

Answers use Cloudflare's envelope (`success`, `errors`, `messages`, `result`, `result_info`), so
the SDK parses them as it would Cloudflare's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from clients.models import Client, CloudflareAccount, Zone
from operations.gate import Actor
from operations.models import ActionRecord
from operations.services import action_run

from .keys import service_key_authenticate

MAX_BODY = 64 * 1024
RECORD_FIELDS = ("type", "name", "content", "ttl", "proxied", "priority", "comment")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    action_id: str
    target: str  # "zone" | "account" | "client"


def _r(method: str, path: str, action_id: str, target: str) -> Route:
    return Route(method, re.compile("^" + path + "$"), action_id, target)


ZONE = r"zones/(?P<zone>[0-9a-f]{32})"
ROUTES = (
    _r("GET", "user", "user.read", "client"),
    _r("GET", "accounts", "accounts.list", "client"),
    _r("GET", "zones", "zones.list", "account"),
    _r("GET", ZONE + "/dns_records", "dns.records.list", "zone"),
    _r("POST", ZONE + "/dns_records", "dns.record.create", "zone"),
    _r("PATCH", ZONE + r"/dns_records/(?P<record>[0-9A-Za-z-]{1,64})", "dns.record.update", "zone"),
    _r("PUT", ZONE + r"/dns_records/(?P<record>[0-9A-Za-z-]{1,64})", "dns.record.update", "zone"),
    _r("DELETE", ZONE + r"/dns_records/(?P<record>[0-9A-Za-z-]{1,64})", "dns.record.delete", "zone"),
    _r("GET", ZONE + "/settings", "zone.settings.read", "zone"),
    _r("GET", ZONE + r"/settings/(?P<setting>[a-z0-9_]{1,64})", "zone.settings.read", "zone"),
    _r("POST", ZONE + "/purge_cache", "cache.purge", "zone"),
)


class ProxyError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _envelope(result: Any = None, *, status: int = 200, errors=(), result_info=None) -> JsonResponse:
    body: dict[str, Any] = {"success": not errors, "errors": list(errors), "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return JsonResponse(body, status=status)


def _error(status: int, code: int, message: str) -> JsonResponse:
    return _envelope(None, status=status, errors=[{"code": code, "message": message}])


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        found = route.pattern.match(path.strip("/"))
        if found and route.method == method:
            return route, found.groupdict()
    return None


def _body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    if len(request.body) > MAX_BODY:
        raise ProxyError(413, 1004, "The request body is too large.")
    try:
        data = json.loads(request.body)
    except ValueError:
        raise ProxyError(400, 1004, "The request body is not JSON.") from None
    if not isinstance(data, dict):
        raise ProxyError(400, 1004, "The request body must be a JSON object.")
    return data


def _inputs(route: Route, params: dict[str, str], request: HttpRequest) -> dict[str, Any]:
    q = request.GET
    page = {k: int(q[k]) for k in ("page", "per_page") if q.get(k, "").isdigit()}
    if route.action_id in ("accounts.list", "zones.list"):
        return {**page, **({"name": q["name"]} if route.action_id == "zones.list" and q.get("name") else {})}
    if route.action_id == "dns.records.list":
        name = q.get("name") or q.get("name.contains") or q.get("name.exact") or ""
        return {**page, **({"type": q["type"]} if q.get("type") else {}), **({"name": name} if name else {})}
    if route.action_id == "zone.settings.read":
        return {"setting": params.get("setting", "")}
    if route.action_id == "dns.record.delete":
        return {"record_id": params["record"]}
    body = _body(request)
    if route.action_id == "cache.purge":
        if body.get("purge_everything"):
            return {"mode": "everything"}
        for key, mode in (("files", "urls"), ("hosts", "hostnames"), ("tags", "tags"), ("prefixes", "prefixes")):
            if key in body:
                values = [v if isinstance(v, str) else (v or {}).get("url", "") for v in body[key] or []]
                return {"mode": mode, "values": values}
        raise ProxyError(400, 1004, "Say what to purge: purge_everything, files, hosts, tags or prefixes.")
    extra = sorted(k for k, v in body.items() if k not in RECORD_FIELDS and v not in (None, "", [], {}))
    if extra:
        raise ProxyError(400, 1004, f"Fields the portal does not handle: {', '.join(extra)}.")
    fields = {k: v for k, v in body.items() if k in RECORD_FIELDS and v is not None}
    if route.action_id == "dns.record.update":
        return {"record_id": params["record"], **fields}
    return fields


def _target(route: Route, params: dict[str, str], request: HttpRequest, key) -> tuple[Client, dict[str, Any]]:
    allowed = {c.pk: c for c in key.clients.all()}
    if route.target == "zone":
        zone = (
            Zone.objects.filter(
                cf_zone_id=params["zone"], account__client_id__in=list(allowed), removed_at__isnull=True
            )
            .select_related("account__client")
            .first()
        )
        if zone is None:
            raise ProxyError(403, 10000, "This service key may not act on that zone (not one of its clients' zones).")
        return zone.account.client, {"zone": zone}
    if route.target == "account":
        account_id = request.GET.get("account.id", "")
        accounts = CloudflareAccount.objects.filter(client_id__in=list(allowed), removed_at__isnull=True)
        account = accounts.filter(cf_account_id=account_id).select_related("client").first() if account_id else None
        if account is None and not account_id:
            only = list(accounts.select_related("client")[:2])
            account = only[0] if len(only) == 1 else None
        if account is None:
            raise ProxyError(
                400, 1004, "Name the account: account.id must be one of this service key's clients' accounts."
            )
        return account.client, {"account": account}
    slug = request.headers.get("X-Agency-Client", "")
    clients = [c for c in allowed.values() if not slug or c.slug == slug]
    if len(clients) != 1:
        raise ProxyError(400, 1004, "This key serves several clients: name one in the X-Agency-Client header.")
    return clients[0], {}


def _success(route: Route, record: ActionRecord) -> JsonResponse:
    data, summary = record.data or {}, record.result or {}
    paging = (
        {k: data.get(k) for k in ("page", "per_page", "total_count", "total_pages")} if isinstance(data, dict) else {}
    )
    paging = {**paging, "count": summary.get("count", 0)}
    action = route.action_id
    if action == "user.read":
        return _envelope(data)
    if action == "accounts.list":
        return _envelope(data["accounts"], result_info=paging)
    if action == "zones.list":
        return _envelope(data["zones"], result_info=paging)
    if action == "dns.records.list":
        return _envelope(data["records"], result_info=paging)
    if action == "zone.settings.read":
        rows = data["settings"]
        return _envelope(rows[0] if route.pattern.pattern.endswith(")$") and rows else rows)
    if action in ("dns.record.create", "dns.record.update"):
        return _envelope(summary.get("after") or {"id": summary.get("record_id")})
    if action == "dns.record.delete":
        return _envelope({"id": summary.get("record_id")})
    return _envelope({"id": record.zone.cf_zone_id if record.zone else ""})


def _failure(record: ActionRecord) -> JsonResponse:
    outcome = record.outcome
    if outcome == ActionRecord.Outcome.REFUSED:
        return _error(403, 10000, record.reason or "Refused by the portal.")
    if outcome == ActionRecord.Outcome.INVALID:
        return _error(400, 1004, record.reason or "Invalid request.")
    if outcome == ActionRecord.Outcome.AUTH_ERROR:
        return _error(403, 10000, record.reason or "Authentication error at Cloudflare.")
    if outcome == ActionRecord.Outcome.UNAVAILABLE:
        return _error(503, 10013, record.reason or "Cloudflare is unavailable; nothing was applied. Try later.")
    if outcome == ActionRecord.Outcome.UNCERTAIN:
        return _error(504, 10013, record.reason or "No answer from Cloudflare: the change may have been applied.")
    codes = record.error_codes or [1000]
    messages = record.error_messages or [record.reason]
    errors = [{"code": c, "message": m} for c, m in zip(codes, messages + [""] * len(codes), strict=False)]
    return _envelope(None, status=400, errors=errors)


@csrf_exempt
def proxy(request: HttpRequest, path: str = "") -> JsonResponse:
    header = request.headers.get("Authorization", "")
    raw = header[7:].strip() if header.lower().startswith("bearer ") else ""
    key = service_key_authenticate(raw) if raw else None
    if key is None:
        return _error(401, 10000, "Authentication error: use a valid, unexpired service key as the Bearer token.")
    found = match(request.method, path)
    if found is None:
        return _error(
            404, 7000, f"No catalogue action for {request.method} /{path.strip('/')}: the proxy passes nothing else."
        )
    route, params = found
    try:
        client, target = _target(route, params, request, key)
        inputs = _inputs(route, params, request)
    except ProxyError as exc:
        return _error(exc.status, exc.code, exc.message)
    actor = Actor(
        user=None,
        via="service_key",
        label=key.name,
        key_client_ids=frozenset(c.pk for c in key.clients.all()),
        key_action_ids=frozenset(key.actions),
    )
    record = action_run(actor=actor, action_id=route.action_id, client=client, inputs=inputs, **target)
    if record.outcome == ActionRecord.Outcome.SUCCEEDED:
        return _success(route, record)
    return _failure(record)
