"""The demo seed: idempotent, never undoes what a user did, prints every way in."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from clients.models import Client
from connections.models import Grant

pytestmark = [pytest.mark.django_db]


def _seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _seed_with_sandbox_grants(cf_sandbox, settings) -> None:
    """The demo as `make run` seeds it: the logins, then the grants minted at the sandbox."""
    settings.CLOUDFLARE_SANDBOX_URL = cf_sandbox.base_url
    _seed()
    _seed("--sandbox-grants")


def test_running_the_seed_twice_reuses_everything_and_prints_the_same_logins():
    first, second = _seed(), _seed()
    assert Client.objects.count() == 3
    password_line = [line for line in first.splitlines() if "admin / " in line]
    assert password_line and password_line[0] in second
    assert "demo-password" in first  # where the password is kept


def test_it_prints_a_link_for_the_pending_invitation():
    out = _seed()
    carol = [line for line in out.splitlines() if "invitation link:" in line]
    assert len(carol) == 1 and "/portal/invite/" in carol[0]


@pytest.mark.sandbox
def test_the_demo_grant_reaches_bigshops_account_and_its_125_zones_only(cf_sandbox, settings):
    from clients.models import Zone
    from cloudflare_sandbox.seed import BIGSHOP_ID

    _seed_with_sandbox_grants(cf_sandbox, settings)
    grant = Grant.objects.get(client__slug="bigshop")
    assert list(grant.accounts.values_list("cf_account_id", flat=True)) == [BIGSHOP_ID]
    assert Zone.objects.filter(account__client__slug="bigshop").count() == 125


@pytest.mark.sandbox
def test_it_does_not_reconnect_a_grant_the_client_disconnected(cf_sandbox, settings):
    _seed_with_sandbox_grants(cf_sandbox, settings)
    grant = Grant.objects.get(client__slug="bigshop")
    Grant.objects.filter(pk=grant.pk).update(
        status=Grant.Status.DISCONNECTED,
        end_reason=Grant.EndReason.DISCONNECTED_BY_CLIENT,
        ended_at=timezone.now(),
        access_token="",
        refresh_token="",
        access_token_fp="",
        refresh_token_fp="",
    )
    _seed()
    _seed("--sandbox-grants")
    assert list(Grant.objects.filter(client__slug="bigshop").values_list("status", flat=True)) == ["disconnected"]


@pytest.mark.sandbox
def test_it_seeds_clients_still_on_api_tokens_once_so_the_migration_board_is_populated(cf_sandbox, settings):
    from apitokens.models import ApiToken

    _seed_with_sandbox_grants(cf_sandbox, settings)
    _seed("--sandbox-grants")
    tokens = {t.client.slug: t for t in ApiToken.objects.select_related("client")}
    assert set(tokens) == {"dunder", "edgeworks", "fernwood"}
    assert tokens["dunder"].state == "invited" and tokens["dunder"].status == "active"
    assert tokens["edgeworks"].blockers and tokens["fernwood"].state == "token_only"
