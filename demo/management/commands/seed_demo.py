"""Seed a demo: a staff login, clients with portal contacts, the sandbox OAuth app, and (with
`--sandbox-grants`, once the sandbox runs) a connected client whose grant the workers keep alive.

Safe to run again: it reuses what exists, never undoes what a user did (a grant Bigshop Ltd
disconnected stays disconnected), and prints the same logins (the password is kept in
`var/demo-password`, which is for development only and never committed). `--banner` waits until the
portal answers and prints the logins once more, so they are the last thing in `make run`'s log.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from clients.models import Client, ClientMember
from connections.models import Grant, GrantEvent, OAuthApp

# (name, slug, contact email, joined?) — Acme has a contact and no grant yet: connect as alice.
DEMO_CLIENTS = [
    ("Acme Corp", "acme", "contact@acme.example", True),
    ("Bigshop Ltd", "bigshop", "it@bigshop.example", True),
    ("Carol's Bakery", "carols-bakery", "carol@bakery.example", False),
]


def _demo_password() -> str:
    path = settings.VAR_DIR / "demo-password"
    if not path.exists():
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    return path.read_text().strip()


class Command(BaseCommand):
    help = "Create (or reuse) a demo: staff login, clients, portal contacts and the sandbox OAuth app."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--sandbox-grants",
            action="store_true",
            help="Wait for the Cloudflare sandbox, then connect Bigshop Ltd (as bob@example.com) if it never had a grant.",
        )
        parser.add_argument(
            "--banner",
            action="store_true",
            help="Wait until the portal answers, print the logins again, then stay idle (a Procfile process).",
        )

    def handle(self, *args, sandbox_grants: bool, banner: bool = False, **options) -> None:
        if banner:
            self._banner_when_up()
            return
        if sandbox_grants:
            self._connect_bigshop()
            self._seed_token_clients()
            return
        password = _demo_password()
        with transaction.atomic():
            app, contacts = self._seed(password)
        self._print(password, contacts)

    def _seed(self, password: str):
        from cloudflare_sandbox.seed import (
            DEMO_CLIENT_ID,
            DEMO_CLIENT_NAME,
            DEMO_CLIENT_SECRET,
            DEMO_OPTIONAL_SCOPES,
            DEMO_SCOPES,
        )

        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@agency.example", "is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(password)
            admin.save()

        app = OAuthApp.objects.filter(client_id=DEMO_CLIENT_ID).first()
        if app is None:
            app = OAuthApp(
                client_id=DEMO_CLIENT_ID,
                name=DEMO_CLIENT_NAME,
                redirect_uri=f"{settings.SITE_URL}/oauth/cloudflare/callback/",
                required_scopes=[s for s in DEMO_SCOPES if s != "offline_access"],
                optional_scopes=list(DEMO_OPTIONAL_SCOPES),
                visibility=OAuthApp.Visibility.PUBLIC,
                publisher_domain="agency.example",
                is_default=not OAuthApp.objects.filter(is_default=True).exists(),
            )
            app.set_client_secret(DEMO_CLIENT_SECRET)
            app.save()

        contacts = []
        for name, slug, email, joined in DEMO_CLIENTS:
            client, _ = Client.objects.get_or_create(slug=slug, defaults={"name": name, "account_manager": admin})
            user, created = User.objects.get_or_create(username=email, defaults={"email": email})
            if created:
                if joined:
                    user.set_password(password)
                else:
                    user.set_unusable_password()
                user.save()
                ClientMember.objects.get_or_create(
                    user=user,
                    defaults={
                        "client": client,
                        "role": ClientMember.Role.OWNER,
                        "invited_by": admin,
                        "joined_at": timezone.now() if joined else None,
                    },
                )
            contacts.append((name, email, joined, user))
        return app, contacts

    def _print(self, password: str, contacts) -> None:
        site = settings.SITE_URL
        lines = [
            "",
            "=" * 76,
            f"  Agency Portal demo — {OAuthApp.objects.count()} OAuth app(s), {Client.objects.count()} client(s)",
            "",
            f"  Staff admin:    {site}{reverse('admin:index')}",
            f"                  admin / {password}",
            f"  Client portal:  {site}{reverse('clients:home')}",
        ]
        from clients.services import invite_url

        for name, email, joined, user in contacts:
            if joined or user.has_usable_password():
                lines.append(f"                  {email} / {password}  ({name})")
            else:
                # A fresh link each run (signed, expiring): open it to join as this contact.
                lines.append(f"                  {email}  ({name}: invited, not joined yet)")
                lines.append(f"                  invitation link: {invite_url(user=user)}")
        lines += [
            f"  Cloudflare sandbox: {settings.CLOUDFLARE_SANDBOX_URL}  (consent as a Cloudflare user:)",
            "                  alice@example.com / sandbox-password  (2 accounts)",
            "                  bob@example.com / sandbox-password    (Bigshop Ltd, 125 zones)",
            f"  MCP server (agents): {settings.MCP_URL}  (point an MCP client at it; see docs/agents.md)",
            "                  approve the agent as admin; its calls show under Agent connections and Actions",
            "  Tokens live 2 minutes in the demo: a grant's admin page shows its refreshes.",
            f"  The password is kept in {settings.VAR_DIR.name}/demo-password (development only).",
            "=" * 76,
            "",
        ]
        self.stdout.write("\n".join(lines))

    def _banner_when_up(self) -> None:
        """Print the logins after every process's start-up banner, then idle until stopped."""
        import signal

        for _ in range(240):
            try:
                requests.get(f"{settings.SITE_URL}/portal/login/", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        time.sleep(2)  # let the worker and beat finish their banners
        clients = Client.objects.filter(slug__in=[slug for _, slug, _, _ in DEMO_CLIENTS]).order_by("name")
        contacts = [
            (c.name, m.user.username, m.joined_at is not None, m.user)
            for c in clients
            for m in c.members.select_related("user").all()
        ]
        self._print(_demo_password(), contacts)
        self.stdout.flush()
        signal.pause()  # honcho stops every process when one exits: stay until Ctrl-C

    def _connect_bigshop(self) -> None:
        """Give the workers something to do: one real grant minted at the sandbox, then synced."""
        from cloudflare_sandbox.seed import BIGSHOP_ID, DEMO_CLIENT_ID

        client = Client.objects.filter(slug="bigshop").first()
        app = OAuthApp.objects.filter(client_id=DEMO_CLIENT_ID).first()
        if client is None or app is None:
            raise CommandError("Run `manage.py seed_demo` first.")
        # Only a client that never had a grant: one that was disconnected or revoked stays so, as the
        # user left it (running the demo again must not undo what a user did).
        if Grant.objects.filter(client=client).exists():
            return
        base = settings.CLOUDFLARE_SANDBOX_URL
        for _ in range(60):
            try:
                requests.get(f"{base}/.well-known/openid-configuration", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            self.stderr.write("The sandbox did not answer; Bigshop Ltd stays unconnected.")
            return
        scopes = ["offline_access", *app.required_scopes, "dns.write", "cache.purge"]
        response = requests.post(
            f"{base}/__sandbox__/grants",
            # Bob is also a member of Acme Corp's account; at consent he would pick Bigshop's alone.
            json={
                "client_id": app.client_id,
                "user_email": "bob@example.com",
                "scopes": scopes,
                "accounts": [BIGSHOP_ID],
            },
            timeout=10,
        )
        if response.status_code != 200:
            self.stderr.write("The sandbox's control endpoint is off; Bigshop Ltd stays unconnected.")
            return
        minted = response.json()[0]
        from connections import cloudflare

        cf_user = cloudflare.get_user(access_token=minted["access_token"])
        now = timezone.now()
        with transaction.atomic():
            grant = Grant(
                client=client,
                app=app,
                cf_user_id=cf_user["id"],
                cf_user_email=cf_user.get("email", "bob@example.com"),
                requested_scopes=app.all_scopes,
                granted_scopes=minted["scope"].split(),
                declined_scopes=[s for s in app.optional_scopes if s not in minted["scope"].split()],
                access_expires_at=now + timedelta(seconds=minted["expires_in"]),
                next_refresh_at=now + timedelta(seconds=minted["expires_in"] * 0.7),
                next_check_at=now,
            )
            grant.set_tokens(access_token=minted["access_token"], refresh_token=minted["refresh_token"])
            grant.save()
            GrantEvent.objects.create(
                grant=grant, client=client, kind=GrantEvent.Kind.CONNECTED, message="Demo grant (bob@example.com)"
            )
        # The first health check fills in the accounts and zones over the API.
        from connections.services.health import grant_check

        outcome = grant_check(grant_id=grant.pk, force=True)
        self.stdout.write(f"Connected Bigshop Ltd as bob@example.com (first check: {outcome}).")

    # Clients still on pasted API tokens, so the migration board is populated (name, slug, contact,
    # token name, permission groups, how far the migration went).
    TOKEN_CLIENTS = [
        (
            "Dunder Supplies",
            "dunder",
            "ops@dunder.example",
            "Dunder deploy script",
            ["API Tokens Read", "API Tokens Write", "Zone Read", "DNS Read", "DNS Write"],
            "invite",
        ),
        (
            "Edgeworks",
            "edgeworks",
            "it@edgeworks.example",
            "Edgeworks tunnels",
            ["API Tokens Read", "Zone Read", "Cloudflare Tunnel Write"],
            "",
        ),
        (
            "Fernwood Studio",
            "fernwood",
            "web@fernwood.example",
            "Fernwood cache",
            ["API Tokens Read", "Zone Read", "Cache Purge"],
            "",
        ),
    ]

    def _seed_token_clients(self) -> None:
        """Three clients on API tokens issued by the sandbox (alice's accounts), verified; Dunder
        Supplies is invited: sign in as its contact and connect as alice to see the migration."""
        from apitokens import services as migration
        from apitokens.models import ApiToken
        from cloudflare_sandbox.seed import ACME_CORP_ID, zone_id

        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        password = _demo_password()
        base = settings.CLOUDFLARE_SANDBOX_URL
        for name, slug, email, token_name, groups, step in self.TOKEN_CLIENTS:
            client, _ = Client.objects.get_or_create(slug=slug, defaults={"name": name, "account_manager": admin})
            if ApiToken.objects.filter(client=client).exists():
                continue  # seeded before: never redone
            user, created = User.objects.get_or_create(username=email, defaults={"email": email})
            if created:
                user.set_password(password)
                user.save()
                ClientMember.objects.get_or_create(
                    user=user, defaults={"client": client, "role": ClientMember.Role.OWNER, "joined_at": timezone.now()}
                )
            try:
                response = requests.post(
                    f"{base}/__sandbox__/api-tokens",
                    json={
                        "name": token_name,
                        "permissions": groups,
                        "zones": [zone_id("acme.com")],
                        "accounts": [ACME_CORP_ID],
                    },
                    timeout=10,
                )
            except requests.RequestException:
                response = None
            if response is None or response.status_code != 200:
                self.stderr.write(f"The sandbox did not issue a token; {name} is not seeded.")
                return
            token = migration.api_token_create(
                client=client, name=token_name, token=response.json()["token"], purpose="customer", created_by=admin
            )
            token = migration.api_token_verify(token_id=token.pk)
            if step == "invite":
                try:
                    migration.migration_invite(token=token, sent_by=admin)
                except migration.MigrationError as exc:
                    self.stderr.write(f"{name}: {exc}")
        self.stdout.write("Seeded clients on API tokens: see Admin → Migration off API tokens → Migration board.")
