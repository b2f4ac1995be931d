"""Authorization endpoint: login, consent, and every way the callback can come back."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from cloudflare_sandbox.seed import (
    ACME_CORP_ID,
    ACME_STAGING_ID,
    CAROL_EMAIL,
    DEMO_CLIENT_ID,
    DEMO_OPTIONAL_SCOPES,
    DEMO_REDIRECT_URIS,
    DEMO_SCOPES,
    SANDBOX_PASSWORD,
)
from cloudflare_sandbox.testing import authorize_url, exchange_code, pkce_pair, run_authorization

CALLBACK = DEMO_REDIRECT_URIS[0]


def _login(base_url: str, email: str = "alice@example.com") -> requests.Session:
    http = requests.Session()
    response = http.post(
        f"{base_url}/login", data={"email": email, "password": SANDBOX_PASSWORD, "next": "/"}, allow_redirects=False
    )
    assert response.status_code == 303
    return http


def _params(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


def test_the_consent_page_shows_app_publisher_accounts_and_scopes(sandbox_clean):
    http = _login(sandbox_clean.base_url)
    _, challenge = pkce_pair()
    page = http.get(sandbox_clean.authorize_url(code_challenge=challenge), allow_redirects=False)
    assert page.status_code == 200
    html = page.text
    assert "Example Agency Portal" in html
    assert 'id="publisher-domain">agency.example<' in html
    assert 'id="publisher-verified"' in html
    assert 'name="account_mode" value="all"' in html and 'name="account_mode" value="specific"' in html
    assert f'name="account" value="{ACME_CORP_ID}"' in html and f'name="account" value="{ACME_STAGING_ID}"' in html
    for scope in DEMO_OPTIONAL_SCOPES:
        assert f'name="optional_scope" value="{scope}" checked' in html
    for scope in DEMO_SCOPES:
        assert f'data-scope="{scope}"' in html
        assert f'name="optional_scope" value="{scope}"' not in html
    assert 'id="authorize"' in html and 'id="deny"' in html
    assert 'name="csrf_token"' in html
    assert not any(marker in html for marker in ('src="http', 'href="http', "url(", "<script"))  # self-contained


def test_an_anonymous_visitor_is_sent_to_the_login_form_first(sandbox_clean):
    _, challenge = pkce_pair()
    response = requests.get(sandbox_clean.authorize_url(code_challenge=challenge), allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=%2Foauth2%2Fauth%3F")
    form = requests.get(sandbox_clean.base_url + response.headers["Location"])
    assert 'name="email"' in form.text and 'name="password"' in form.text
    assert '<button type="submit" id="login"' in form.text


def test_the_session_cookie_is_httponly_and_samesite_lax(sandbox_clean):
    response = requests.post(
        f"{sandbox_clean.base_url}/login",
        data={"email": "alice@example.com", "password": SANDBOX_PASSWORD},
        allow_redirects=False,
    )
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("cf_sandbox_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_wrong_password_is_refused(sandbox_clean):
    response = requests.post(
        f"{sandbox_clean.base_url}/login",
        data={"email": "alice@example.com", "password": "nope"},
        allow_redirects=False,
    )
    assert response.status_code == 401
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(sandbox_clean, target):
    response = requests.post(
        f"{sandbox_clean.base_url}/login",
        data={"email": "alice@example.com", "password": SANDBOX_PASSWORD, "next": target},
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/"


def test_it_redirects_with_code_state_granted_scope_and_iss(sandbox_clean):
    _, challenge = pkce_pair()
    url = sandbox_clean.authorize_url(code_challenge=challenge, state="state-1234567890")
    result = run_authorization(url)
    assert result.status == 303
    assert result.location.startswith(CALLBACK + "?")
    raw_query = urlsplit(result.location).query
    assert "+" not in raw_query and "%20" in raw_query
    assert result.params["state"] == "state-1234567890"
    assert result.params["iss"] == sandbox_clean.issuer
    assert len(result.params["code"]) >= 32
    assert result.params["scope"].split(" ") == [*DEMO_SCOPES, *DEMO_OPTIONAL_SCOPES]


def test_unticked_optional_scopes_are_not_granted(sandbox_clean):
    _, challenge = pkce_pair()
    result = run_authorization(sandbox_clean.authorize_url(code_challenge=challenge), optional_scopes=["dns.write"])
    assert result.params["scope"].split(" ") == [*DEMO_SCOPES, "dns.write"]


def test_required_scopes_cannot_be_unticked(sandbox_clean):
    _, challenge = pkce_pair()
    result = run_authorization(sandbox_clean.authorize_url(code_challenge=challenge), optional_scopes=[])
    assert result.params["scope"].split(" ") == list(DEMO_SCOPES)


def test_iss_is_left_out_when_send_iss_is_off(sandbox_clean):
    sandbox_clean.settings(send_iss=False)
    _, challenge = pkce_pair()
    result = run_authorization(sandbox_clean.authorize_url(code_challenge=challenge))
    assert "code" in result.params and "iss" not in result.params
    denied = run_authorization(sandbox_clean.authorize_url(code_challenge=challenge), decision="deny")
    assert "iss" not in denied.params


def test_deny_redirects_with_access_denied_and_the_state(sandbox_clean):
    _, challenge = pkce_pair()
    result = run_authorization(
        sandbox_clean.authorize_url(code_challenge=challenge, state="deny-state-1"), decision="deny"
    )
    assert result.status == 303
    assert result.params["error"] == "access_denied"
    assert result.params["state"] == "deny-state-1"
    assert result.params["error_description"]
    assert result.params["iss"] == sandbox_clean.issuer
    assert "code" not in result.params


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        CALLBACK.rstrip("/"),
        CALLBACK + "extra",
        CALLBACK.replace("127.0.0.1", "LOCALHOST"),
        CALLBACK + "?x=1",
    ],
)
def test_an_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(sandbox_clean, redirect_uri):
    http = _login(sandbox_clean.base_url)
    _, challenge = pkce_pair()
    response = http.get(
        sandbox_clean.authorize_url(redirect_uri=redirect_uri, code_challenge=challenge), allow_redirects=False
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert 'id="error"' in response.text


def test_an_unknown_client_gets_an_error_page(sandbox_clean):
    _, challenge = pkce_pair()
    response = requests.get(
        sandbox_clean.authorize_url(client_id="no-such-client", code_challenge=challenge), allow_redirects=False
    )
    assert response.status_code == 400
    assert "Location" not in response.headers


@pytest.mark.parametrize(
    "scope",
    [
        "offline_access zone:read",  # colon-style (Wrangler's legacy names)
        "offline_access dns.edit",  # does not exist: it is dns.write
        "offline_access workers-scripts.write",  # real, but not registered for the client
        "openid zone.read",  # client not registered for openid
    ],
)
def test_it_redirects_invalid_scope_with_a_303(sandbox_clean, scope):
    _, challenge = pkce_pair()
    response = requests.get(
        sandbox_clean.authorize_url(scope=scope, code_challenge=challenge, state="scope-state-1"),
        allow_redirects=False,
    )
    assert response.status_code == 303
    params = _params(response.headers["Location"])
    assert params["error"] == "invalid_scope"
    assert params["state"] == "scope-state-1"
    assert response.headers["Location"].startswith(CALLBACK + "?")


def test_a_plus_between_scopes_is_not_a_separator_by_default(sandbox_clean):
    _, challenge = pkce_pair()
    url = sandbox_clean.authorize_url(scope="offline_access zone.read", code_challenge=challenge)
    plus_url = url.replace("offline_access%20zone.read", "offline_access+zone.read")
    assert plus_url != url
    response = requests.get(plus_url, allow_redirects=False)
    assert _params(response.headers["Location"])["error"] == "invalid_scope"

    sandbox_clean.settings(scope_plus="space")
    result = run_authorization(plus_url)
    assert result.params["scope"] == "offline_access zone.read"


@pytest.mark.parametrize(
    ("challenge_method", "with_challenge"),
    [("plain", True), (None, True), ("S256", False), ("S512", True)],
)
def test_pkce_s256_is_required(sandbox_clean, challenge_method, with_challenge):
    _, challenge = pkce_pair()
    url = authorize_url(
        sandbox_clean.base_url,
        code_challenge=challenge if with_challenge else None,
        code_challenge_method=challenge_method,
        state="pkce-state-1",
    )
    response = requests.get(url, allow_redirects=False)
    assert response.status_code == 303
    params = _params(response.headers["Location"])
    assert params["error"] == "invalid_request"
    assert params["state"] == "pkce-state-1"


def test_pkce_can_be_made_optional_as_for_cloudflare_confidential_clients(sandbox_clean):
    sandbox_clean.settings(require_pkce=False)
    url = authorize_url(sandbox_clean.base_url, code_challenge=None)
    result = run_authorization(url)
    response = exchange_code(sandbox_clean.base_url, result.params["code"], verifier=None)
    assert response.status_code == 200


def test_a_weak_state_is_refused(sandbox_clean):
    _, challenge = pkce_pair()
    response = requests.get(sandbox_clean.authorize_url(code_challenge=challenge, state="abc"), allow_redirects=False)
    assert _params(response.headers["Location"])["error"] == "invalid_state"


def test_the_response_type_must_be_code(sandbox_clean):
    _, challenge = pkce_pair()
    response = requests.get(
        authorize_url(sandbox_clean.base_url, code_challenge=challenge, response_type="token"), allow_redirects=False
    )
    assert _params(response.headers["Location"])["error"] == "unsupported_response_type"


def test_the_consent_form_needs_the_sessions_csrf_token(sandbox_clean):
    _, challenge = pkce_pair()
    result = run_authorization(sandbox_clean.authorize_url(code_challenge=challenge), csrf_token="forged")
    assert result.status == 403
    assert result.location is None


def test_the_consent_form_is_bound_to_the_session_that_started_it(sandbox_clean):
    _, challenge = pkce_pair()
    alice = _login(sandbox_clean.base_url)
    page = alice.get(sandbox_clean.authorize_url(code_challenge=challenge)).text
    auth_request = page.split('name="auth_request" value="')[1].split('"')[0]
    mallory = _login(sandbox_clean.base_url, email=CAROL_EMAIL)
    own_page = mallory.get(sandbox_clean.authorize_url(code_challenge=challenge)).text
    own_csrf = own_page.split('name="csrf_token" value="')[1].split('"')[0]
    response = mallory.post(
        f"{sandbox_clean.base_url}/oauth2/consent",
        data={"auth_request": auth_request, "csrf_token": own_csrf, "account_mode": "all", "decision": "authorize"},
        allow_redirects=False,
    )
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_a_consent_can_be_answered_only_once(sandbox_clean):
    _, challenge = pkce_pair()
    http = _login(sandbox_clean.base_url)
    page = http.get(sandbox_clean.authorize_url(code_challenge=challenge)).text
    data = {
        "auth_request": page.split('name="auth_request" value="')[1].split('"')[0],
        "csrf_token": page.split('name="csrf_token" value="')[1].split('"')[0],
        "account_mode": "all",
        "decision": "authorize",
    }
    first = http.post(f"{sandbox_clean.base_url}/oauth2/consent", data=data, allow_redirects=False)
    second = http.post(f"{sandbox_clean.base_url}/oauth2/consent", data=data, allow_redirects=False)
    assert first.status_code == 303
    assert second.status_code == 400


def test_specific_accounts_need_at_least_one_choice(sandbox_clean):
    _, challenge = pkce_pair()
    result = run_authorization(sandbox_clean.authorize_url(code_challenge=challenge), account_mode="specific")
    assert result.status == 400
    assert "Choose at least one account" in result.response.text


def test_a_private_client_can_be_authorized_only_by_members_of_its_account(sandbox_clean):
    client = sandbox_clean.register_client(
        name="Acme Internal",
        redirect_uris=[CALLBACK],
        scopes=["zone.read"],
        visibility="private",
        owner_account_id=ACME_CORP_ID,
    )
    _, challenge = pkce_pair()
    url = sandbox_clean.authorize_url(client_id=client["client_id"], scope="zone.read", code_challenge=challenge)
    assert "code" in run_authorization(url).params
    assert run_authorization(url, email=CAROL_EMAIL).params["error"] == "unauthorized_client"


def test_duplicate_parameters_are_refused(sandbox_clean):
    _, challenge = pkce_pair()
    url = sandbox_clean.authorize_url(code_challenge=challenge) + "&client_id=" + DEMO_CLIENT_ID
    response = requests.get(url, allow_redirects=False)
    assert response.status_code == 400
    assert "Location" not in response.headers
