"""Tokens received while the database is unreachable are never dropped: retried, then spooled.

The database failure is injected at the seam of the fenced write (`refresh._on_success`); the
spool itself is real (Redis when the broker is Redis, and a file under VAR_DIR).
"""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import patch

import pytest
from django.db import OperationalError
from django.utils import timezone

from connections import cloudflare, crypto, ratelimit
from connections.models import Grant
from connections.services import refresh, token_spool
from connections.services.refresh import Outcome, grant_refresh
from tests import factories


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    ratelimit.reset()
    settings.VAR_DIR = tmp_path
    settings.CLOUDFLARE_RATELIMIT_KEY_PREFIX = f"test-spool-{tmp_path.name}"
    settings.GRANT_WRITE_RETRY_SECONDS = 1
    yield
    for key in token_spool._pending():
        token_spool._discard(key)


@pytest.fixture
def due_grant(oauth_app, acme):
    return factories.GrantFactory(
        app=oauth_app,
        client=acme,
        access_expires_at=timezone.now() + timedelta(seconds=20),
        next_refresh_at=timezone.now() - timedelta(seconds=1),
        authorized_at=timezone.now() - timedelta(hours=1),
    )


NEW = cloudflare.TokenResponse(
    access_token="cfoat_spooled_access_0123456789", refresh_token="cfort_spooled_refresh_0123456789", expires_in=3600
)


def _database_down(times: int | None = None):
    real = refresh._on_success
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            raise OperationalError("could not connect to server")
        return real(*args, **kwargs)

    return patch("connections.services.refresh._on_success", side_effect=flaky), calls


def test_it_retries_the_fenced_write_until_the_database_answers(due_grant):
    down, calls = _database_down(times=2)
    with patch("connections.cloudflare.refresh", return_value=NEW), down:
        assert grant_refresh(grant_id=due_grant.pk) == Outcome.REFRESHED

    assert calls["n"] == 3
    due_grant.refresh_from_db()
    assert due_grant.refresh_token == NEW.refresh_token
    assert not token_spool._pending()


def test_it_spools_the_new_tokens_encrypted_when_the_database_stays_down(due_grant, tmp_path):
    down, _ = _database_down()
    with patch("connections.cloudflare.refresh", return_value=NEW), down:
        assert grant_refresh(grant_id=due_grant.pk) == Outcome.SPOOLED

    files = list((tmp_path / "token-spool").glob("*.tok"))
    assert len(files) == 1
    blob = files[0].read_bytes()
    assert NEW.refresh_token.encode() not in blob and NEW.access_token.encode() not in blob
    assert crypto.decrypt(blob.decode())  # readable with the token keys only
    (record,) = token_spool._pending(due_grant.pk).values()
    assert record.refresh_token == NEW.refresh_token and "cfort" not in repr(record)


def test_it_applies_the_spool_fenced_before_the_next_refresh(due_grant):
    down, _ = _database_down()
    with patch("connections.cloudflare.refresh", return_value=NEW), down:
        grant_refresh(grant_id=due_grant.pk)
    due_grant.refresh_from_db()
    generation = due_grant.refresh_generation

    with patch("connections.cloudflare.refresh") as call:
        outcome = grant_refresh(grant_id=due_grant.pk)

    call.assert_not_called()  # the rotated refresh token is never presented
    assert outcome == Outcome.FRESH
    due_grant.refresh_from_db()
    assert due_grant.refresh_token == NEW.refresh_token and due_grant.access_token == NEW.access_token
    assert due_grant.refresh_generation == generation + 1
    assert due_grant.refresh_lease_until is None and due_grant.refresh_uncertain_since is None
    assert not token_spool._pending()


def test_it_discards_a_spooled_record_whose_grant_moved_on(due_grant):
    down, _ = _database_down()
    with patch("connections.cloudflare.refresh", return_value=NEW), down:
        grant_refresh(grant_id=due_grant.pk)
    # Someone else rotated the grant meanwhile (generation and token changed).
    due_grant.refresh_from_db()
    due_grant.set_tokens(access_token="cfoat_other_0123456789", refresh_token="cfort_other_0123456789")
    due_grant.refresh_generation += 1
    due_grant.save()

    assert token_spool.spool_apply() == 0

    due_grant.refresh_from_db()
    assert due_grant.refresh_token == "cfort_other_0123456789"
    assert not token_spool._pending()


def test_it_keeps_the_records_while_the_database_is_still_down(due_grant):
    down, _ = _database_down()
    with patch("connections.cloudflare.refresh", return_value=NEW), down:
        grant_refresh(grant_id=due_grant.pk)

    with patch("connections.services.token_spool._apply", side_effect=OperationalError("still down")):
        assert token_spool.spool_apply() == 0
    assert len(token_spool._pending()) == 1

    assert token_spool.spool_apply() == 1
    due_grant.refresh_from_db()
    assert due_grant.refresh_token == NEW.refresh_token


def test_it_spools_the_tokens_when_interrupted_while_retrying(due_grant):
    from celery.exceptions import SoftTimeLimitExceeded

    with (
        patch("connections.cloudflare.refresh", return_value=NEW),
        patch("connections.services.refresh._on_success", side_effect=SoftTimeLimitExceeded()),
        pytest.raises(SoftTimeLimitExceeded),
    ):
        grant_refresh(grant_id=due_grant.pk)

    assert len(token_spool._pending(due_grant.pk)) == 1
    token_spool.spool_apply()
    assert Grant.objects.get(pk=due_grant.pk).refresh_token == NEW.refresh_token


def test_it_keeps_a_spooled_record_while_a_later_holder_claims_the_grant(due_grant):
    # The spooling holder's lease ran out; a later holder claimed the grant and read the rotated
    # refresh token. Writing the record under that claim would make the holder present a rotated
    # token: the record waits for the claim to end, then is applied.
    down, _ = _database_down()
    with patch("connections.cloudflare.refresh", return_value=NEW), down:
        grant_refresh(grant_id=due_grant.pk)
    (record,) = token_spool._pending(due_grant.pk).values()
    later = timezone.now() + timedelta(seconds=120)
    Grant.objects.filter(pk=due_grant.pk).update(refresh_lease_until=later)

    assert token_spool.spool_apply() == 0
    assert len(token_spool._pending(due_grant.pk)) == 1
    assert Grant.objects.get(pk=due_grant.pk).refresh_token != NEW.refresh_token

    Grant.objects.filter(pk=due_grant.pk).update(refresh_lease_until=None)
    assert token_spool.spool_apply() == 1
    assert Grant.objects.get(pk=due_grant.pk).refresh_token == NEW.refresh_token
    assert record.lease_until  # the spooling holder's own lease end travels with the record
