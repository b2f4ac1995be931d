"""Clients with many zones at the sandbox, each with a real grant, for bulk changes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from clients.models import Zone
from connections.models import Grant
from tests import factories
from tests.operations.conftest import sandbox_grant
from tests.sandbox_grants import register_app


@dataclass
class ZonedClient:
    client: object
    grant: Grant
    email: str
    zones: list[Zone]


def zoned_client(sandbox, *, slug: str, zones: int, app, scopes=None) -> ZonedClient:
    """A client whose Cloudflare user owns one account with `zones` zones, connected by one grant."""
    email = f"{slug}@example.com"
    sandbox.add_user(email=email, accounts=[{"name": f"{slug} account", "zones": zones}])
    client = factories.ClientFactory(name=f"{slug.title()} Ltd", slug=slug)
    grant = sandbox_grant(sandbox, client=client, user_email=email, app=app, scopes=scopes)
    found = list(Zone.objects.filter(account__client=client).order_by("name"))
    assert len(found) == zones
    return ZonedClient(client=client, grant=grant, email=email, zones=found)


def reconnect(sandbox, zoned: ZonedClient, *, app) -> Grant:
    """The client connects again (a new grant over the same account and zones)."""
    return sandbox_grant(sandbox, client=zoned.client, user_email=zoned.email, app=app)


@pytest.fixture
def ops_app(cf_sandbox):
    from tests.operations.conftest import OPTIONAL

    return register_app(cf_sandbox, name="Bulk change test app", optional=tuple(OPTIONAL))


@pytest.fixture
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    return settings
