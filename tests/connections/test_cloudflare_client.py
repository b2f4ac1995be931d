"""connections/cloudflare.py against a scripted HTTP server on loopback: every kind of answer
becomes a value or the right typed error (transient or not, certain or not)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from connections import cloudflare as cf


class Script:
    """What the server answers next: (status, headers, body) or a special action."""

    def __init__(self) -> None:
        self.status, self.headers, self.body, self.action = 200, {}, b"", None
        self.requests: list[dict] = []

    def answer(self, status: int, body: object = b"", headers: dict | None = None, action: str | None = None):
        self.status, self.action = status, action
        self.body = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.headers = {"Content-Type": "application/json", **(headers or {})}


@pytest.fixture
def server(settings):
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            script.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length).decode()}
            )
            if script.action == "hang":
                threading.Event().wait(2)
                return
            if script.action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.close()
                return
            self.send_response(script.status)
            for key, value in script.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(script.body)))
            self.end_headers()
            self.wfile.write(script.body)

        do_GET = do_POST = _handle

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    settings.CLOUDFLARE_TOKEN_URL = f"{base}/oauth2/token"
    settings.CLOUDFLARE_REVOKE_URL = f"{base}/oauth2/revoke"
    settings.CLOUDFLARE_API_BASE_URL = f"{base}/client/v4"
    settings.CLOUDFLARE_AUTHORIZE_URL = f"{base}/oauth2/auth"
    settings.CLOUDFLARE_READ_TIMEOUT = 0.5
    yield script
    httpd.shutdown()
    httpd.server_close()


APP = SimpleNamespace(
    client_id="client id/1", client_secret="s3cret:+&", token_endpoint_auth_method="client_secret_basic"
)
GOOD = {
    "access_token": "cfoat_abc",
    "token_type": "bearer",
    "expires_in": 3600,
    "refresh_token": "cfort_def",
    "scope": "zone.read dns.read",
}


def test_it_parses_a_good_refresh_answer_and_sends_basic_auth(server):
    server.answer(200, GOOD)
    result = cf.refresh(app=APP, refresh_token="cfort_old")
    assert (result.access_token, result.refresh_token, result.expires_in) == ("cfoat_abc", "cfort_def", 3600)
    assert result.scopes == ["zone.read", "dns.read"]
    request = server.requests[-1]
    assert request["headers"]["Authorization"].startswith("Basic ")
    assert "grant_type=refresh_token" in request["body"] and "client_secret" not in request["body"]
    assert "cfort" not in repr(result) and "cfoat" not in repr(result)


def test_it_sends_client_secret_post_in_the_body_when_registered_so(server):
    server.answer(200, GOOD)
    cf.refresh(
        app=SimpleNamespace(**{**APP.__dict__, "token_endpoint_auth_method": "client_secret_post"}), refresh_token="x"
    )
    request = server.requests[-1]
    assert "Authorization" not in request["headers"]
    assert "client_secret=" in request["body"]


def test_it_keeps_no_refresh_token_when_the_answer_has_none(server):
    server.answer(200, {k: v for k, v in GOOD.items() if k != "refresh_token"})
    assert cf.refresh(app=APP, refresh_token="x").refresh_token == ""


@pytest.mark.parametrize("status", [400, 401])
def test_it_reports_invalid_grant_for_both_400_and_401(server, status):
    server.answer(status, {"error": "invalid_grant", "error_description": "The refresh token is invalid"})
    with pytest.raises(cf.InvalidGrant) as exc:
        cf.refresh(app=APP, refresh_token="x")
    assert not exc.value.transient


@pytest.mark.parametrize("error", ["invalid_client", "unauthorized_client"])
def test_it_reports_client_configuration_errors_apart(server, error):
    server.answer(401, {"error": error})
    with pytest.raises(cf.InvalidClient):
        cf.refresh(app=APP, refresh_token="x")


def test_it_honours_retry_after_on_429(server):
    server.answer(429, {"error": "rate_limited"}, {"Retry-After": "42"})
    with pytest.raises(cf.RateLimited) as exc:
        cf.refresh(app=APP, refresh_token="x")
    assert exc.value.retry_after == 42 and exc.value.transient


@pytest.mark.parametrize("status", [500, 502, 503])
def test_it_treats_5xx_as_transient(server, status):
    server.answer(status, b"<html>bad gateway</html>", {"Content-Type": "text/html"})
    with pytest.raises(cf.Unavailable):
        cf.refresh(app=APP, refresh_token="x")


def test_it_treats_an_html_challenge_page_as_transient_not_as_revocation(server):
    server.answer(403, b"<!DOCTYPE html><title>Just a moment...</title>", {"Content-Type": "text/html"})
    with pytest.raises(cf.BadResponse) as exc:
        cf.refresh(app=APP, refresh_token="x")
    assert exc.value.transient


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "bearer", "expires_in": 3600},  # no access_token
        {**GOOD, "token_type": "mac"},
        {k: v for k, v in GOOD.items() if k != "token_type"},
        {**GOOD, "expires_in": -5},
        {**GOOD, "expires_in": 10**9},
        {**GOOD, "expires_in": "3600"},
        {**GOOD, "error": "invalid_grant"},  # 200 carrying an error
        ["not", "an", "object"],
    ],
)
def test_it_rejects_unusable_token_answers(server, body):
    server.answer(200, body)
    with pytest.raises(cf.BadResponse):
        cf.refresh(app=APP, refresh_token="x")


def test_it_rejects_a_200_html_page(server):
    server.answer(200, b"<html>hello</html>", {"Content-Type": "text/html"})
    with pytest.raises(cf.BadResponse):
        cf.exchange_code(app=APP, code="c", code_verifier="v", redirect_uri="https://x/cb")


def test_it_refuses_to_follow_a_redirect(server):
    server.answer(302, b"", {"Location": "https://evil.example/token"})
    with pytest.raises(cf.BadResponse):
        cf.refresh(app=APP, refresh_token="x")
    assert len(server.requests) == 1


def test_it_refuses_an_oversized_body(server, settings):
    settings.CLOUDFLARE_MAX_RESPONSE_BYTES = 1024
    server.answer(200, {**GOOD, "padding": "x" * 10_000})
    with pytest.raises(cf.BadResponse):
        cf.refresh(app=APP, refresh_token="x")


def test_it_reports_a_read_timeout_as_uncertain_not_as_failure(server):
    server.answer(200, GOOD, action="hang")
    with pytest.raises(cf.UncertainOutcome):
        cf.refresh(app=APP, refresh_token="x")


def test_it_reports_a_connection_reset_after_sending_as_uncertain(server):
    server.answer(200, GOOD, action="reset")
    with pytest.raises(cf.UncertainOutcome):
        cf.refresh(app=APP, refresh_token="x")


def test_it_reports_a_refused_connection_as_unavailable(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.CLOUDFLARE_TOKEN_URL = f"http://127.0.0.1:{port}/oauth2/token"
    with pytest.raises(cf.Unavailable):
        cf.refresh(app=APP, refresh_token="x")


def test_revoke_accepts_200_and_reports_503_as_transient(server):
    server.answer(200, b"", {"Content-Type": "text/plain"})
    cf.revoke(app=APP, token="cfort_x", token_type_hint="refresh_token")
    assert "token_type_hint=refresh_token" in server.requests[-1]["body"]
    server.answer(503, b"", {"Retry-After": "5", "Content-Type": "text/plain"})
    with pytest.raises(cf.Unavailable):
        cf.revoke(app=APP, token="cfort_x", token_type_hint="refresh_token")


def test_revoke_reports_unsupported_token_type(server):
    server.answer(400, {"error": "unsupported_token_type"})
    with pytest.raises(cf.OAuthError) as exc:
        cf.revoke(app=APP, token="cfort_x", token_type_hint="refresh_token")
    assert exc.value.error == "unsupported_token_type"


def test_api_sends_the_token_only_in_the_authorization_header(server):
    server.answer(200, {"success": True, "errors": [], "messages": [], "result": {"id": "u1"}})
    assert cf.get_user(access_token="cfoat_secret")["id"] == "u1"
    request = server.requests[-1]
    assert request["headers"]["Authorization"] == "Bearer cfoat_secret"
    assert "cfoat" not in request["path"]


@pytest.mark.parametrize("code", [9109, 10000])
def test_api_auth_errors_are_flagged_but_not_called_revocation(server, code):
    server.answer(403, {"success": False, "errors": [{"code": code, "message": "x"}], "messages": [], "result": None})
    with pytest.raises(cf.ApiError) as exc:
        cf.list_accounts(access_token="t")
    assert exc.value.is_auth_error and not exc.value.transient


def test_api_rate_limit_is_transient_with_retry_after(server):
    server.answer(429, {"success": False, "errors": [{"code": 971, "message": "Please wait"}]}, {"Retry-After": "300"})
    with pytest.raises(cf.RateLimited) as exc:
        cf.list_accounts(access_token="t")
    assert exc.value.retry_after == 300


def test_api_list_reads_every_page(server, monkeypatch):
    pages = {1: [{"id": "a"}, {"id": "b"}], 2: [{"id": "c"}]}
    calls = []

    def fake(method, path, *, access_token, params=None, json=None):
        calls.append(params["page"])
        return {
            "success": True,
            "result": pages[params["page"]],
            "result_info": {"page": params["page"], "total_pages": 2},
        }

    monkeypatch.setattr(cf, "api_request", fake)
    assert [z["id"] for z in cf.list_zones(access_token="t", account_id="acc")] == ["a", "b", "c"]
    assert calls == [1, 2]


def test_authorize_url_encodes_spaces_as_percent_20(settings):
    settings.CLOUDFLARE_AUTHORIZE_URL = "https://dash.cloudflare.com/oauth2/auth"
    url = cf.authorize_url(
        client_id="cid",
        redirect_uri="https://p.example/cb/",
        scopes=["offline_access", "zone.read"],
        state="s",
        code_challenge="c",
    )
    assert "scope=offline_access%20zone.read" in url and "+" not in url
    assert "code_challenge_method=S256" in url
