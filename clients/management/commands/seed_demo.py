"""Seed a demo: a staff login, a few clients with portal contacts, and the sandbox OAuth app.

Safe to run again: it reuses what exists and prints the same logins (kept in var/, which is
for development only and never committed).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.urls import reverse

from clients.models import Client, ClientMember
from connections.models import OAuthApp

DEMO_CLIENTS = [
    ("Acme Corp", "acme", "contact@acme.example"),
    ("Bigshop Ltd", "bigshop", "it@bigshop.example"),
    ("Carol's Bakery", "carols-bakery", "carol@bakery.example"),
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

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        from cloudflare_sandbox.seed import DEMO_CLIENT_ID, DEMO_CLIENT_NAME, DEMO_CLIENT_SECRET

        User = get_user_model()
        password = _demo_password()

        admin, created = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@agency.example", "is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(password)
            admin.save()

        app = OAuthApp.objects.filter(client_id=DEMO_CLIENT_ID).first() or OAuthApp(client_id=DEMO_CLIENT_ID)
        if app.pk is None:
            app.name = DEMO_CLIENT_NAME
            app.set_client_secret(DEMO_CLIENT_SECRET)
            app.redirect_uri = f"{settings.SITE_URL}/oauth/cloudflare/callback/"
            app.required_scopes = ["user-details.read", "account-settings.read", "zone.read", "dns.read"]
            app.optional_scopes = ["dns.write", "cache.purge", "zone-settings.read", "analytics.read"]
            app.visibility = OAuthApp.Visibility.PUBLIC
            app.publisher_domain = "agency.example"
            app.is_default = not OAuthApp.objects.filter(is_default=True).exists()
            app.save()

        contacts = []
        for name, slug, email in DEMO_CLIENTS:
            client, _ = Client.objects.get_or_create(slug=slug, defaults={"name": name, "account_manager": admin})
            user, created = User.objects.get_or_create(username=email, defaults={"email": email})
            if created:
                user.set_password(password)
                user.save()
                ClientMember.objects.get_or_create(
                    user=user, defaults={"client": client, "role": ClientMember.Role.OWNER, "invited_by": admin}
                )
            contacts.append((name, email))

        site = settings.SITE_URL
        lines = [
            "",
            "=" * 72,
            f"  Agency Portal demo — {OAuthApp.objects.count()} OAuth app(s), {Client.objects.count()} client(s)",
            "",
            f"  Staff admin:    {site}{reverse('admin:index')}",
            f"                  login: admin / {password}",
            f"  Client portal:  {site}/portal/",
        ]
        lines += [f"                  {email} / {password}  ({name})" for name, email in contacts]
        lines += [
            f"  Cloudflare sandbox: {settings.CLOUDFLARE_SANDBOX_URL}",
            "                  alice@example.com / sandbox-password (2 accounts)",
            "                  bob@example.com / sandbox-password (125 zones)",
            "=" * 72,
            "",
        ]
        self.stdout.write("\n".join(lines))
