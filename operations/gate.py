"""The one gate every action passes, wherever it starts (staff page, bulk change, later agents).

`gate_check` reads only the database and never calls Cloudflare: a refusal costs nothing upstream.
It checks, in this order, and stops at the first "no":

1. Role: the actor may act on this client with this kind of action (Agency admin: every client;
   Account manager: their own clients; Support: read actions only, every client).
2. Live grant: the client has a grant the agency may use now (active, or refresh failing while
   its access token is still valid).
3. Scopes: that grant holds every scope the action needs. With several live grants, one that
   holds them all is picked; a refusal names the scopes the closest grant misses.
4. Reach: the zone or account is one the grant reaches (and the zone has not been removed).

A refusal is a `Refused` with a code, reasons in plain words and, for missing scopes, the scopes
to ask the client for ("send a re-consent link for these permissions").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from agencyportal import roles
from clients.models import Client, CloudflareAccount, Zone
from connections import scopes as scope_words
from connections.models import GRANT_SECRET_COLUMNS, Grant

from .catalogue import Action, Target
from .credentials import TokenCredential, token_credentials


@dataclass(frozen=True)
class Actor:
    """Who runs an action: a staff user now; later a service key or an agent on behalf of one."""

    user: AbstractBaseUser | None
    via: str = "staff"  # "staff" | "bulk" | "agent" | "service_key"
    label: str = ""  # e.g. the agent's name, for the record
    # The limits of a service key (via="service_key") or of an agent's consent (via="agent"): the
    # client ids and action ids it may use. An agent is also held to its staff member's own role.
    key_client_ids: frozenset[int] | None = None
    key_action_ids: frozenset[str] | None = None


class Refused(Exception):
    """The gate said no. Zero calls to Cloudflare were made."""

    def __init__(self, code: str, reasons: list[str], *, missing_scopes: frozenset[str] = frozenset(), grant=None):
        super().__init__("; ".join(reasons))
        self.code = code
        self.reasons = reasons
        self.missing_scopes = missing_scopes
        # The grant the refusal is about (scope_missing / out_of_reach), for a re-consent link.
        self.grant = grant


@dataclass(frozen=True)
class Permit:
    action: Action
    client: Client
    grant: Grant | None
    zone: Zone | None = None
    account: CloudflareAccount | None = None
    reasons: list[str] = field(default_factory=list)
    # Before cutover the action runs with the client's API token instead of a grant.
    token: TokenCredential | None = None


def _roles_of(user: AbstractBaseUser) -> set[str]:
    cached = getattr(user, "_operations_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._operations_roles = cached
    return cached


def _check_service_key(actor: Actor, action: Action, client: Client) -> None:
    if actor.key_client_ids is None or client.pk not in actor.key_client_ids:
        raise Refused("role", [f"The service key {actor.label} is not allowed to act on {client.name}."])
    if actor.key_action_ids is None or action.id not in actor.key_action_ids:
        raise Refused("role", [f"The service key {actor.label} is not allowed to run {action.id}."])


def _check_agent(actor: Actor, action: Action, client: Client) -> None:
    """What the staff member approved for this agent; their own role is checked after this."""
    if actor.key_action_ids is None or action.id not in actor.key_action_ids:
        raise Refused(
            "role", [f"The agent {actor.label} was not approved to {action.staff_label.lower()} ({action.id})."]
        )
    if actor.key_client_ids is None or client.pk not in actor.key_client_ids:
        raise Refused("role", [f"The agent {actor.label} was not approved to act on {client.name}."])


def _check_role(actor: Actor, action: Action, client: Client) -> None:
    if actor.via == "service_key":
        _check_service_key(actor, action, client)
        return
    if actor.via == "agent":
        _check_agent(actor, action, client)
    user = actor.user
    if not (user.is_active and user.is_staff):
        raise Refused("role", ["Only active agency staff can run actions in client accounts."])
    if user.is_superuser:
        return
    names = _roles_of(user)
    if roles.AGENCY_ADMIN in names:
        return
    if roles.ACCOUNT_MANAGER in names:
        if client.account_manager_id == user.pk:
            return
        if roles.SUPPORT in names and action.is_read:
            return
        raise Refused(
            "role",
            [f"{client.name} is not one of your clients: only its account manager or an agency admin can act on it."],
        )
    if roles.SUPPORT in names:
        if action.is_read:
            return
        raise Refused(
            "role", ["Support can only run read actions; ask the client's account manager or an agency admin."]
        )
    raise Refused(
        "role", ["Your staff account has no role that allows actions (Agency admin, Account manager or Support)."]
    )


def grant_is_usable(grant: Grant, *, now=None) -> bool:
    """Active, or refresh failing while the access token is still valid."""
    if grant.status == Grant.Status.ACTIVE:
        return bool(grant.access_token_fp)
    if grant.status == Grant.Status.REFRESH_FAILING:
        now = now or timezone.now()
        return bool(grant.access_token_fp) and grant.access_expires_at is not None and grant.access_expires_at > now
    return False


def _reach(grant: Grant) -> set[int]:
    return {a.pk for a in grant.accounts.all()}


def gate_check(
    *,
    actor: Actor,
    action: Action,
    client: Client,
    zone: Zone | None = None,
    account: CloudflareAccount | None = None,
) -> Permit:
    """Raise `Refused`, or return the permit naming the grant to act with. Never calls Cloudflare."""
    # 1. Role.
    _check_role(actor, action, client)

    # The target must belong to this client, and be the kind the action acts on.
    if action.target == Target.ZONE:
        if zone is None:
            raise Refused("invalid_input", ["Choose the zone this action acts on."])
        account = zone.account
    elif action.target == Target.ACCOUNT and account is None:
        if zone is None:
            raise Refused("invalid_input", ["Choose the Cloudflare account this action acts on."])
        account = zone.account
    if account is not None and account.client_id != client.pk:
        raise Refused("out_of_reach", [f"{account.name} does not belong to {client.name}."])

    # 2'. Before cutover, a client still on an API token acts with it (scopes, then reach).
    tokens = token_credentials(client)
    if tokens:
        return _token_permit(tokens, action=action, client=client, zone=zone, account=account)

    # 2. A live grant. Tokens are not loaded here: the gate never needs them.
    now = timezone.now()
    grants = [
        g
        for g in Grant.objects.filter(client=client, status__in=[Grant.Status.ACTIVE, Grant.Status.REFRESH_FAILING])
        .defer(*GRANT_SECRET_COLUMNS)
        .prefetch_related("accounts")
        .order_by("-authorized_at")
        if grant_is_usable(g, now=now)
    ]
    if not grants:
        raise Refused(
            "grant_not_live",
            [f"{client.name} has no working Cloudflare connection: it was disconnected, revoked, or needs re-consent."],
        )

    # 3. Scopes.
    holding = [g for g in grants if action.scopes <= set(g.granted_scopes)]
    if not holding:
        closest = min(grants, key=lambda g: len(action.scopes - set(g.granted_scopes)))
        missing = frozenset(action.scopes - set(closest.granted_scopes))
        words = "; ".join(scope_words.describe(s) for s in sorted(missing))
        raise Refused(
            "scope_missing",
            [
                f"The client has not given the permission this needs: {words}.",
                "Send a re-consent link for these permissions.",
            ],
            missing_scopes=missing,
            grant=closest,
        )

    # 4. Reach.
    if account is not None:
        reaching = [g for g in holding if account.pk in _reach(g)]
        if not reaching or account.removed_at is not None:
            raise Refused(
                "out_of_reach",
                [
                    f"The connection does not reach the Cloudflare account {account.name}: the client did not pick it, or removed it."
                ],
                grant=holding[0],
            )
        if zone is not None and zone.removed_at is not None:
            raise Refused(
                "out_of_reach", [f"The zone {zone.name} is no longer in the client's account."], grant=reaching[0]
            )
        holding = reaching
    return Permit(action=action, client=client, grant=holding[0], zone=zone, account=account)


def _token_permit(
    tokens: list[TokenCredential],
    *,
    action: Action,
    client: Client,
    zone: Zone | None,
    account: CloudflareAccount | None,
) -> Permit:
    """Steps 3 and 4 for a client still on an API token: its permissions, then its reach."""
    holding = [t for t in tokens if action.scopes <= t.scopes]
    if not holding:
        closest = min(tokens, key=lambda t: len(action.scopes - t.scopes))
        missing = frozenset(action.scopes - closest.scopes)
        words = "; ".join(scope_words.describe(s) for s in sorted(missing))
        raise Refused(
            "scope_missing",
            [f"The API token {client.name} still runs on does not have the permission this needs: {words}."],
            missing_scopes=missing,
        )
    if account is not None:
        if zone is not None:
            reaching = [t for t in holding if zone.cf_zone_id in t.zone_ids]
        else:
            reaching = [t for t in holding if account.cf_account_id in t.account_ids]
        if not reaching or account.removed_at is not None or (zone is not None and zone.removed_at is not None):
            where = zone.name if zone is not None else account.name
            raise Refused("out_of_reach", [f"The API token {client.name} still runs on does not reach {where}."])
        holding = reaching
    return Permit(action=action, client=client, grant=None, zone=zone, account=account, token=holding[0])
