"""Service keys in the admin: shown once, stored hashed, limited, expiring, revocable."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apitokens.keys import service_key_authenticate, service_key_create
from apitokens.models import ServiceKey

pytestmark = pytest.mark.django_db


def test_a_key_created_in_the_admin_is_shown_once_and_stored_hashed(admin_client, acme):
    response = admin_client.post(
        "/admin/apitokens/servicekey/add/",
        {
            "name": "nightly-purge",
            "clients": [acme.pk],
            "actions": ["cache.purge"],
            "expires_at": (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M"),
        },
    )
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    raw = re.search(r'<pre id="service-key">([^<]+)</pre>', response.content.decode()).group(1)
    key = ServiceKey.objects.get()
    assert raw.startswith("apk_") and raw not in str(ServiceKey.objects.values().get())
    assert raw not in admin_client.get("/admin/apitokens/servicekey/").content.decode()
    assert raw not in admin_client.get(f"/admin/apitokens/servicekey/{key.pk}/change/").content.decode()
    assert service_key_authenticate(raw) == key
    assert list(key.clients.all()) == [acme] and key.actions == ["cache.purge"]


def test_an_expired_or_unknown_key_is_refused(acme):
    key, raw = service_key_create(
        name="k", clients=[acme], actions=["user.read"], expires_at=timezone.now() + timedelta(days=1), created_by=None
    )
    assert service_key_authenticate(raw) == key
    ServiceKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert service_key_authenticate(raw) is None
    assert service_key_authenticate("apk_nothing_here") is None


def test_a_key_needs_known_actions_and_a_future_expiry(acme):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Unknown action"):
        service_key_create(
            name="k",
            clients=[acme],
            actions=["zones.delete"],
            expires_at=timezone.now() + timedelta(days=1),
            created_by=None,
        )
    with pytest.raises(ValidationError, match="future"):
        service_key_create(name="k", clients=[acme], actions=["user.read"], expires_at=timezone.now(), created_by=None)
    assert not ServiceKey.objects.exists()


def test_the_verification_run_page_offers_the_apps_and_test_zones(admin_client, oauth_app):
    page = admin_client.get("/admin/apitokens/verificationrun/add/")
    assert page.status_code == 200 and oauth_app.name in page.content.decode()
