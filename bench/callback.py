"""Benchmark: server time of the OAuth callback for a grant reaching 125 zones, with latency.

The sandbox injects L ms into every token and API call; the portal user connects the sandbox
user who reaches Bigshop (125 zones, three pages of 50) and Acme Corp (3 zones). Each run starts
a consent (pre-consent POST), plays the Cloudflare user at the sandbox, then times the callback
GET through Django's test client: server time, no browser. The portal's grant is deleted between
runs so each is a first connection. The ceiling is 2 x L + 100 ms: the token call and one round
of reads, plus 100 ms for everything the portal does itself.

    python bench/callback.py                          # 150 ms, 10 runs
    python bench/callback.py --latency-ms 300 --runs 20
    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/agencyportal_bench_callback python bench/callback.py

The database defaults to a throwaway SQLite file. The last line is
`ratio=<median callback / ceiling> callback_ms=<median>`. Run by hand; not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import ensure_database  # noqa: E402

REQUIRED = ["user-details.read", "account-settings.read", "zone.read", "dns.read"]
OPTIONAL = ["dns.write"]
CALLBACK = "http://testserver/oauth/cloudflare/callback/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=int, default=150)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = os.environ.get(
        "BENCH_DATABASE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='bench-callback-')}/bench.sqlite3"
    )
    ensure_database(os.environ["DATABASE_URL"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agencyportal.settings")
    os.environ["STAFF_OTP_REQUIRED"] = "False"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["testserver", *settings.ALLOWED_HOSTS]
    settings.DEBUG = False
    settings.CONSENT_START_LIMIT_PER_CONTACT = settings.CONSENT_START_LIMIT_PER_CLIENT = 1_000_000
    print(
        f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} {settings.DATABASES['default']['NAME']}"
    )
    call_command("migrate", verbosity=0)

    from cloudflare_sandbox.testing import SandboxProcess

    with SandboxProcess() as sandbox:
        base = sandbox.base_url
        settings.CLOUDFLARE_AUTHORIZE_URL = f"{base}/oauth2/auth"
        settings.CLOUDFLARE_TOKEN_URL = f"{base}/oauth2/token"
        settings.CLOUDFLARE_REVOKE_URL = f"{base}/oauth2/revoke"
        settings.CLOUDFLARE_API_BASE_URL = f"{base}/client/v4"
        settings.CLOUDFLARE_ISSUER = sandbox.issuer
        measure(args, sandbox)


def setup_portal(sandbox):
    """A sandbox OAuth client and its OAuthApp; a client with a joined portal owner."""
    import secrets

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from clients.models import Client, ClientMember
    from connections.models import AuthorizationRequest, Grant, GrantEvent, OAuthApp

    reg = sandbox.register_client(
        name="Bench portal",
        redirect_uris=[CALLBACK],
        scopes=["offline_access", *REQUIRED],
        optional_scopes=OPTIONAL,
        publisher_domain="agency.example",
        token_endpoint_auth_method="client_secret_basic",
    )
    GrantEvent.objects.all().delete()
    Grant.objects.all().delete()
    AuthorizationRequest.objects.all().delete()
    OAuthApp.objects.update(is_default=False)
    app = OAuthApp(
        name="Bench portal",
        client_id=reg["client_id"],
        redirect_uri=CALLBACK,
        required_scopes=REQUIRED,
        optional_scopes=OPTIONAL,
        publisher_domain="agency.example",
        is_default=True,
    )
    app.set_client_secret(reg["client_secret"])
    app.save()
    client, _ = Client.objects.get_or_create(slug="bench-callback", defaults={"name": "Bench callback"})
    User = get_user_model()
    User.objects.filter(username="owner@bench-callback.example").delete()
    owner = User.objects.create_user("owner@bench-callback.example", password=secrets.token_urlsafe(16))
    ClientMember.objects.create(client=client, user=owner, role=ClientMember.Role.OWNER, joined_at=timezone.now())
    return owner


def measure(args, sandbox) -> None:
    from django.test import Client as HttpClient

    from cloudflare_sandbox import seed
    from cloudflare_sandbox.testing import run_authorization
    from connections.models import Grant, GrantEvent

    owner = setup_portal(sandbox)
    http = HttpClient()
    http.force_login(owner)
    sandbox.settings(rate_limit=10_000_000, rate_window=300)
    timings: list[float] = []
    zones = 0
    for run in range(args.runs + 1):  # the first run warms connections and code paths: not counted
        sandbox.clear_faults()
        response = http.post("/oauth/connect/")
        assert response.status_code == 303, response.status_code
        result = run_authorization(response["Location"], email=seed.BOB_EMAIL)
        assert result.location, result.status
        parts = urlsplit(result.location)
        sandbox.set_faults(latency_ms=args.latency_ms, latency_endpoints=["token", "api"])
        started = time.perf_counter()
        if os.environ.get("BENCH_PROFILE") and run == args.runs:
            import cProfile

            with cProfile.Profile() as prof:
                response = http.get(f"{parts.path}?{parts.query}")
            prof.dump_stats(os.environ["BENCH_PROFILE"])
        else:
            response = http.get(f"{parts.path}?{parts.query}")
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 303, response.status_code
        grant = Grant.objects.get(status=Grant.Status.ACTIVE)
        zones = sum(a.zones.count() for a in grant.accounts.all())
        if run:
            timings.append(elapsed)
            print(f"  run {run:>2}: {elapsed:7.1f} ms, {zones} zones", flush=True)
        # Next run connects afresh (no replaced grant to revoke).
        GrantEvent.objects.filter(grant=grant).delete()
        grant.accounts.clear()
        grant.delete()
    sandbox.clear_faults()
    ceiling = 2 * args.latency_ms + 100
    median = statistics.median(timings)
    print(
        f"\nlatency {args.latency_ms} ms, {zones} zones: callback p50 {median:.0f} ms, "
        f"max {max(timings):.0f} ms; ceiling 2 x latency + 100 = {ceiling} ms"
    )
    print(f"ratio={median / ceiling:.2f} callback_ms={median:.0f}")


if __name__ == "__main__":
    main()
