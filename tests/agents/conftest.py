"""The portal live for agents: Django (pytest-django's live server) and the MCP ASGI app (uvicorn),
each on a free port of 127.0.0.1, with the Cloudflare sandbox; and a real `mcp` client to drive it.

The MCP client runs in an event loop in the test thread; the test thread reads the database only
between client steps, which Django allows when told so (as for the browser tests).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth.models import Group, Permission
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from agencyportal import roles
from tests import factories
from tests.operations.conftest import acme_grant, manager, support, zone  # noqa: F401 - shared fixtures

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

PASSWORD = "correct-horse-battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Portal:
    site_url: str
    mcp_url: str
    sessions: list = field(default_factory=list)


@pytest.fixture
def portal(live_server, settings, cf_sandbox):
    """Django at live_server.url and MCP at its own port; tokens bound to that MCP URL."""
    import uvicorn

    from agents.mcp_server import build_app

    port = free_port()
    site_url = live_server.url
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    settings.SITE_URL = site_url
    settings.MCP_URL = mcp_url
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": site_url}
    settings.STAFF_OTP_REQUIRED = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    server = uvicorn.Server(
        uvicorn.Config(build_app(mcp_url=mcp_url, site_url=site_url), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the MCP server did not start")
        time.sleep(0.05)
    portal = Portal(site_url=site_url, mcp_url=mcp_url)
    yield portal
    for session in portal.sessions:
        session.close()
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def mfa_manager(db):
    """An account manager with a confirmed authenticator."""
    user = factories.StaffFactory(username="manager", password=PASSWORD)
    group = Group.objects.get_or_create(name=roles.ACCOUNT_MANAGER)[0]
    # Transactional tests flush the roles' permissions that migrations gave: give back this one.
    group.permissions.add(Permission.objects.get(codename="view_agentconnection"))
    user.groups.add(group)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    user.device = device
    return user


def otp_code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def staff_browser(portal: Portal, user) -> requests.Session:
    """A requests session signed in to the admin with password and TOTP code (the MFA sign-in)."""
    session = requests.Session()
    # Closed with the portal: the live server's request thread (and its database connection) then ends.
    portal.sessions.append(session)
    login = f"{portal.site_url}/admin/login/"
    session.get(login, timeout=10)
    response = session.post(
        login,
        data={
            "username": user.username,
            "password": PASSWORD,
            "otp_token": otp_code(user.device),
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": login},
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:500]
    return session


@dataclass
class Consent:
    """What the staff member ticks on the consent page; what the page showed."""

    tools: list[str]
    client_ids: list[int]
    allow: bool = True
    pages: list[str] = field(default_factory=list)
    redirects: list[dict] = field(default_factory=list)


def approve(session: requests.Session, authorization_url: str, consent: Consent) -> dict[str, str]:
    """Open the consent page as staff, tick the tools and clients, submit; the redirect's query."""
    import re

    page = session.get(authorization_url, timeout=10)
    assert page.status_code == 200, page.text[:1000]
    consent.pages.append(page.text)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    hidden = {k: v.replace("&amp;", "&").replace("&quot;", '"') for k, v in hidden.items()}
    data = {**hidden, "tools": consent.tools, "clients": [str(c) for c in consent.client_ids]}
    if consent.allow:
        data["allow"] = "on"
    response = session.post(
        authorization_url.split("?")[0],
        data=data,
        headers={"Referer": authorization_url},
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:2000]
    location = response.headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    consent.redirects.append(query)
    return query


# --- A client ID metadata document served over https by the test, with its own CA ---------------


def _self_signed_ca_and_cert(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test agent CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


@dataclass
class MetadataDocument:
    url: str
    redirect_uri: str
    documents: dict
    fetches: list


@pytest.fixture
def metadata_document(tmp_path, settings):
    """An https server on 127.0.0.1 serving the agent's client ID metadata document."""
    ca_path, cert_path, key_path = _self_signed_ca_and_cert(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}/agent/client.json"
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    documents = {
        "/agent/client.json": {
            "client_id": url,
            "client_name": "Ops Assistant",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
    }
    fetches: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            fetches.append(self.path)
            doc = documents.get(self.path)
            body = json.dumps(doc).encode() if doc is not None else b"{}"
            self.send_response(200 if doc is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    settings.AGENT_METADATA_ALLOW_LOOPBACK = True
    settings.AGENT_METADATA_CA_BUNDLE = str(ca_path)
    yield MetadataDocument(url=url, redirect_uri=redirect_uri, documents=documents, fetches=fetches)
    httpd.shutdown()
    httpd.server_close()
