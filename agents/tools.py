"""The MCP tools: the action catalogue, plus four portal lists, and what happens at each call.

A catalogue tool is the catalogue action itself: same id (dots become underscores, the form every
MCP client accepts), same description, its input model's JSON schema plus the target it acts on
(`zone`, `account` or `client`), and `confirm` for destructive ones. Nothing here talks to
Cloudflare: a call goes through `operations.services.action_run` / `action_preview`, that is the
same gate and the same record as a staff member's action, with an actor that says "agent X on
behalf of staff member Y" and carries the tools and clients the staff member approved.

Each call is checked, in order (the first "no" is the answer, in plain words, with zero calls to
Cloudflare): the connection is live; the per-agent rate limit; the tool exists and was approved;
its arguments fit the schema; the target is one of the approved clients; then the gate: the
staff member's *current* role and clients, the grant's scopes and reach.

The portal lists (clients, grants, zones, recent actions) read the portal's database only, within
the approved clients the staff member may still see. No tool ever returns a Cloudflare token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from pydantic import ValidationError

from agencyportal import roles
from clients.models import Client, CloudflareAccount, Zone
from connections.models import GRANT_SECRET_COLUMNS, Grant
from operations.catalogue import CATALOGUE, Action, Kind, Target
from operations.gate import Actor
from operations.inputs import input_errors
from operations.models import ActionRecord
from operations.services import action_preview, action_run

from .models import AgentConnection

# Portal lists: what the staff member's approved clients look like in the portal (no Cloudflare call).
LIST_TOOLS: dict[str, str] = {
    "portal_clients": "List the clients this agent may act on, with their Cloudflare connection status.",
    "portal_grants": "List the Cloudflare connections (grants) of those clients: status, permissions, accounts.",
    "portal_zones": "List the zones (domains) the portal knows for those clients. Optional: client (slug), name.",
    "portal_recent_actions": "List the latest actions recorded on those clients (by staff and agents).",
}
LIST_TOOL_LABELS = {
    "portal_clients": "See which clients it may act on",
    "portal_grants": "See those clients' Cloudflare connections and their permissions",
    "portal_zones": "See those clients' zones as the portal knows them",
    "portal_recent_actions": "See the latest actions recorded on those clients",
}
_TARGET_FIELDS = {"zone", "account", "client", "confirm"}


def tool_name(action_id: str) -> str:
    return action_id.replace(".", "_")


TOOL_ACTIONS: dict[str, Action] = {tool_name(a.id): a for a in CATALOGUE.values()}
ALL_TOOLS: tuple[str, ...] = (*LIST_TOOLS, *TOOL_ACTIONS)


@dataclass(frozen=True)
class ToolInfo:
    name: str
    label: str
    kind: str  # read / write / destructive


def tool_infos() -> list[ToolInfo]:
    """Every tool in plain words, for the consent page and the admin."""
    infos = [ToolInfo(name, LIST_TOOL_LABELS[name], Kind.READ) for name in LIST_TOOLS]
    infos += [ToolInfo(name, action.staff_label, action.kind) for name, action in TOOL_ACTIONS.items()]
    return infos


def tool_label(name: str) -> str:
    if name in LIST_TOOL_LABELS:
        return LIST_TOOL_LABELS[name]
    action = TOOL_ACTIONS.get(name)
    return action.staff_label if action else name


def _target_schema(action: Action) -> tuple[dict[str, Any], list[str]]:
    if action.target == Target.ZONE:
        return {"zone": {"type": "string", "description": "The zone (domain) name, e.g. example.com"}}, ["zone"]
    if action.target == Target.ACCOUNT:
        return {"account": {"type": "string", "description": "The Cloudflare account: its name or its account ID"}}, [
            "account"
        ]
    return {"client": {"type": "string", "description": "The client's slug (see portal_clients)"}}, ["client"]


def input_schema(name: str) -> dict[str, Any]:
    if name in LIST_TOOLS:
        props: dict[str, Any] = {}
        if name in ("portal_zones", "portal_recent_actions", "portal_grants"):
            props["client"] = {"type": "string", "description": "Only this client (its slug)"}
        if name == "portal_zones":
            props["name"] = {"type": "string", "description": "Part of the zone name"}
        return {"type": "object", "properties": props, "additionalProperties": False}
    action = TOOL_ACTIONS[name]
    schema = action.inputs.model_json_schema()
    target, required = _target_schema(action)
    schema["properties"] = {**target, **schema.get("properties", {})}
    if action.kind == Kind.DESTRUCTIVE:
        schema["properties"]["confirm"] = {
            "type": "boolean",
            "default": False,
            "description": "true to really do it; without it the tool returns the dry run (what would change)",
        }
    schema["required"] = [*required, *schema.get("required", [])]
    schema["additionalProperties"] = False
    schema.pop("title", None)
    return schema


def description(name: str) -> str:
    if name in LIST_TOOLS:
        return LIST_TOOLS[name]
    action = TOOL_ACTIONS[name]
    words = f"{action.staff_label}. Needs the client's Cloudflare permissions: {', '.join(sorted(action.scopes))}."
    if action.kind == Kind.DESTRUCTIVE:
        words += " Destructive: without confirm=true it only returns the dry run."
    elif action.kind == Kind.WRITE:
        words += " Changes the client's Cloudflare account; recorded and shown to the client."
    return words


def annotations(name: str) -> dict[str, bool]:
    if name in LIST_TOOLS:
        return {"read_only": True, "destructive": False}
    kind = TOOL_ACTIONS[name].kind
    return {"read_only": kind == Kind.READ, "destructive": kind == Kind.DESTRUCTIVE}


# --- A call --------------------------------------------------------------------------------------


class ToolError(Exception):
    """A call refused or failed: the words go back to the agent as a tool error."""


@dataclass
class ToolOutcome:
    text: str
    data: Any = None
    is_error: bool = False


def connection_for(connection_id: int) -> AgentConnection:
    conn = AgentConnection.objects.active().select_related("user").filter(pk=connection_id).first()
    if conn is None:
        raise ToolError("This agent's approval was revoked: ask the staff member to approve it again.")
    return conn


def _rate_limit(conn: AgentConnection) -> None:
    limit = settings.AGENT_CALLS_PER_MINUTE
    window = int(timezone.now().timestamp() // 60)
    # The approval time in the key: a connection id reused (a restored database) starts afresh.
    key = f"agents:calls:{conn.pk}:{conn.approved_at.timestamp():.6f}:{window}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=120)
        count = 1
    if count > limit:
        raise ToolError(f"Too many calls: this agent may make {limit} tool calls a minute. Wait a minute and retry.")


def allowed_clients(conn: AgentConnection, user=None):
    """The approved clients the staff member may still see now (their role may have changed)."""
    user = user or conn.user
    qs = Client.objects.filter(agent_connections=conn)
    if not roles.user_sees_all_clients(user):
        qs = qs.filter(account_manager=user)
    return qs.order_by("name")


def list_tools_for(conn: AgentConnection) -> list[str]:
    return [name for name in ALL_TOOLS if name in set(conn.tools)]


def _client_arg(conn: AgentConnection, slug: str | None):
    clients = allowed_clients(conn)
    if slug:
        clients = clients.filter(slug=slug)
        if not clients.exists():
            raise ToolError(f"{slug} is not one of the clients this agent may act on.")
    return clients


def _portal_list(conn: AgentConnection, name: str, args: dict[str, Any]) -> ToolOutcome:
    unknown = set(args) - set(input_schema(name)["properties"])
    if unknown:
        raise ToolError(f"Unknown argument(s): {', '.join(sorted(unknown))}.")
    for key, value in args.items():
        if not isinstance(value, str) or len(value) > 253:
            raise ToolError(f"{key} must be a short text.")
    clients = _client_arg(conn, args.get("client"))
    if name == "portal_clients":
        live = set(
            Grant.objects.filter(client__in=clients, status__in=[Grant.Status.ACTIVE, Grant.Status.REFRESH_FAILING])
            .values_list("client_id", flat=True)
            .distinct()
        )
        data = [{"client": c.slug, "name": c.name, "connected": c.pk in live} for c in clients]
    elif name == "portal_grants":
        grants = (
            Grant.objects.filter(client__in=clients)
            .exclude(status__in=[Grant.Status.DISCONNECTED, Grant.Status.REVOKED])
            .defer(*GRANT_SECRET_COLUMNS)
            .select_related("client")
            .prefetch_related("accounts")
            .order_by("client__name", "-authorized_at")[:100]
        )
        data = [
            {
                "client": g.client.slug,
                "status": g.status,
                "cloudflare_user": g.cf_user_email,
                "permissions": sorted(g.granted_scopes),
                "accounts": [a.name for a in g.accounts.all()],
                "authorized_at": g.authorized_at.isoformat(),
            }
            for g in grants
        ]
    elif name == "portal_zones":
        zones = Zone.objects.filter(account__client__in=clients, removed_at__isnull=True).select_related(
            "account__client"
        )
        if args.get("name"):
            zones = zones.filter(name__icontains=args["name"])
        data = [
            {"zone": z.name, "client": z.account.client.slug, "account": z.account.name, "status": z.status}
            for z in zones.order_by("name")[:200]
        ]
    else:
        records = (
            ActionRecord.objects.filter(client__in=clients)
            .select_related("client", "actor")
            .order_by("-created_at", "-id")[:25]
        )
        data = [
            {
                "when": r.created_at.isoformat(),
                "client": r.client.slug,
                "action": r.action_id,
                "zone": r.zone_name,
                "outcome": r.outcome,
                "by": _by(r),
                "what": r.client_sentence if r.outcome == ActionRecord.Outcome.SUCCEEDED else r.reason,
            }
            for r in records
        ]
    return ToolOutcome(text=json.dumps(data, indent=1), data=data)


def _by(record: ActionRecord) -> str:
    who = record.actor.get_username() if record.actor else "someone"
    if record.actor_via == "agent":
        return f"agent {record.actor_label} on behalf of {who}"
    return who


def _resolve_target(conn: AgentConnection, action: Action, args: dict[str, Any]):
    """(client, zone, account) from the target argument, within the approved clients only."""
    approved = Client.objects.filter(agent_connections=conn)
    if action.target == Target.ZONE:
        name = str(args["zone"]).strip().lower().rstrip(".")
        zone = (
            Zone.objects.filter(name=name, removed_at__isnull=True, account__client__in=approved)
            .select_related("account__client")
            .order_by("-last_seen_at")
            .first()
        )
        if zone is None:
            raise ToolError(f"The zone {name} is not one of the zones of the clients this agent may act on.")
        return zone.account.client, zone, zone.account
    if action.target == Target.ACCOUNT:
        ref = str(args["account"]).strip()
        account = (
            CloudflareAccount.objects.filter(Q(cf_account_id=ref) | Q(name=ref), client__in=approved)
            .select_related("client")
            .first()
        )
        if account is None:
            raise ToolError(f"The Cloudflare account {ref} is not one of the clients this agent may act on.")
        return account.client, None, account
    client = approved.filter(slug=str(args["client"]).strip()).first()
    if client is None:
        raise ToolError(f"{args['client']} is not one of the clients this agent may act on.")
    return client, None, None


def _check_arguments(name: str, action: Action, args: dict[str, Any]) -> dict[str, Any]:
    _, required = _target_schema(action)
    missing = [key for key in required if not args.get(key)]
    if missing:
        raise ToolError(f"Missing argument: {', '.join(missing)}.")
    allowed_extra = {"confirm"} if action.kind == Kind.DESTRUCTIVE else set()
    extra = (set(args) & _TARGET_FIELDS) - set(required) - allowed_extra
    if extra:
        raise ToolError(f"Unknown argument(s) for {name}: {', '.join(sorted(extra))}.")
    if "confirm" in args and not isinstance(args["confirm"], bool):
        raise ToolError("confirm must be true or false.")
    inputs = {k: v for k, v in args.items() if k not in _TARGET_FIELDS}
    try:
        action.inputs.model_validate(inputs)
    except ValidationError as exc:
        raise ToolError("The arguments do not fit the tool's schema: " + " ".join(input_errors(exc))) from None
    return inputs


def _actor(conn: AgentConnection) -> Actor:
    # The staff member as they are now (role, active), not as they were at consent.
    user = get_user_model().objects.get(pk=conn.user_id)
    approved_actions = frozenset(TOOL_ACTIONS[t].id for t in conn.tools if t in TOOL_ACTIONS)
    return Actor(
        user=user,
        via="agent",
        label=conn.name[:200],
        key_client_ids=frozenset(Client.objects.filter(agent_connections=conn).values_list("pk", flat=True)),
        key_action_ids=approved_actions,
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def call_tool(connection_id: int, name: str, arguments: dict[str, Any] | None) -> ToolOutcome:
    """One tool call for an agent connection. Sync (ORM + SDK); the MCP server runs it in a thread."""
    try:
        return _call(connection_id, name, arguments if arguments is not None else {})
    except ToolError as exc:
        return ToolOutcome(text=str(exc), is_error=True)


def _call(connection_id: int, name: str, args: dict[str, Any]) -> ToolOutcome:
    conn = connection_for(connection_id)
    _rate_limit(conn)
    if name not in ALL_TOOLS:
        raise ToolError(f"There is no tool {name!r}. Ask for the tool list (tools/list).")
    if name not in conn.tools:
        raise ToolError(f"This agent was not approved to use {name} ({tool_label(name)}).")
    if not isinstance(args, dict):
        raise ToolError("The arguments must be a JSON object.")
    conn.record_call()
    if name in LIST_TOOLS:
        return _portal_list(conn, name, args)

    action = TOOL_ACTIONS[name]
    inputs = _check_arguments(name, action, args)
    client, zone, account = _resolve_target(conn, action, args)
    actor = _actor(conn)
    if action.kind == Kind.DESTRUCTIVE and args.get("confirm") is not True:
        preview = action_preview(
            actor=actor, action_id=action.id, client=client, zone=zone, account=account, inputs=inputs
        )
        if not preview.ready:
            raise ToolError(" ".join(preview.reasons))
        change = preview.change
        data = {
            "dry_run": True,
            "would_change": bool(change and change.changes),
            "note": change.note if change else "",
            "before": change.before if change else None,
            "after": change.after if change else None,
        }
        return ToolOutcome(
            text="Dry run, nothing changed. Call again with confirm=true to do it.\n" + json.dumps(data, indent=1),
            data=_jsonable(data),
        )
    record = action_run(actor=actor, action_id=action.id, client=client, zone=zone, account=account, inputs=inputs)
    if record.outcome != ActionRecord.Outcome.SUCCEEDED:
        raise ToolError(f"{record.get_outcome_display()}: {record.reason}")
    data = {"result": record.result, "data": record.data} if record.data is not None else {"result": record.result}
    data = _jsonable(data)
    return ToolOutcome(text=json.dumps(data, indent=1), data=data)
