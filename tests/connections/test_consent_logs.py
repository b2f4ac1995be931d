"""OA-13 / I6: no token, code, state or secret in any log line during a full connect + disconnect."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

import pytest

from cloudflare_sandbox import seed
from connections.models import Grant
from tests.clients.portal_flow import authorize_at_sandbox, callback_path, register_sandbox_app, start_consent

pytestmark = [pytest.mark.sandbox, pytest.mark.django_db]


def test_no_secret_reaches_any_log_line_during_connect_and_disconnect(
    cf_sandbox, client, client_owner, caplog, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    app = register_sandbox_app(cf_sandbox)
    client.force_login(client_owner)
    caplog.set_level(logging.DEBUG)  # everything, from every logger (urllib3 included)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    try:
        url = start_consent(client)
        # The test plays the person in the browser with `requests` too: its own request lines (which
        # carry the state, as any browser's would) are not the portal's logs, so they stay quiet.
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        location = authorize_at_sandbox(url, email=seed.ALICE_EMAIL, optional_scopes=["dns.write"])
        logging.getLogger("urllib3").setLevel(logging.DEBUG)
        params = dict(parse_qsl(urlsplit(location).query))
        client.get(callback_path(location))
        grant = Grant.objects.get()
        secrets_seen = {
            "access token": grant.access_token,
            "refresh token": grant.refresh_token,
            "code": params["code"],
            "state": params["state"],
            "client secret": app.client_secret,
            "verifier": grant.authorization_requests.get().code_verifier,
        }
        client.get("/portal/")
        with django_capture_on_commit_callbacks(execute=True):
            client.post(f"/oauth/grants/{grant.code}/disconnect/")
        assert Grant.objects.get().status == Grant.Status.DISCONNECTED
    finally:
        logging.getLogger("urllib3").setLevel(logging.INFO)

    lines = [record.getMessage() for record in caplog.records]
    lines += [caplog.text]
    assert len(caplog.records) > 5  # the flow did log (DEBUG request lines, invitations of tasks…)
    for name, value in secrets_seen.items():
        assert value and not any(value in line for line in lines), f"{name} found in the logs"
    assert not any("cfoat_" in line or "cfort_" in line for line in lines)
