"""Portal sign-in: only client contacts, throttled, session cycled, POST-only sign-out."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from tests import factories

pytestmark = [pytest.mark.django_db]

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def login(client, username, password=PASSWORD, **extra):
    return client.post("/portal/login/", {"username": username, "password": password}, **extra)


def test_it_signs_a_contact_in_and_cycles_the_session(client, client_owner):
    client.get("/portal/login/")
    session = client.session
    session["probe"] = 1
    session.save()
    before = session.session_key
    response = login(client, client_owner.username)
    assert response.status_code == 302 and response["Location"] == "/portal/"
    assert client.session.session_key != before
    assert client.get("/portal/").status_code == 200


def test_the_login_page_is_not_cached_and_sends_no_referrer_to_other_sites(client):
    response = client.get("/portal/login/")
    assert response["Cache-Control"] == "no-store"
    # same-origin: nothing leaves the site, and Chromium still sends a real Origin with the POST
    # (under no-referrer it sends `Origin: null`, which fails the CSRF check).
    assert response["Referrer-Policy"] == "same-origin"
    assert "<script" not in response.content.decode()


def test_it_refuses_a_wrong_password_in_plain_words(client, client_owner):
    response = login(client, client_owner.username, "wrong")
    assert response.status_code == 200
    assert "do not match a client account" in response.content.decode()


def test_it_locks_a_username_and_ip_after_five_failures(client, client_owner, settings):
    for _ in range(settings.PORTAL_LOGIN_MAX_FAILURES):
        login(client, client_owner.username, "wrong")
    # Even the right password is refused during the lockout.
    response = login(client, client_owner.username)
    assert response.status_code == 200
    assert "Too many failed attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_spoofed_forwarded_for_header_does_not_escape_the_lockout(client, client_owner, settings):
    for i in range(settings.PORTAL_LOGIN_MAX_FAILURES):
        login(client, client_owner.username, "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")
    response = login(client, client_owner.username, HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert "Too many failed attempts" in response.content.decode()


def test_the_lockout_is_per_address(client, client_owner, settings):
    for _ in range(settings.PORTAL_LOGIN_MAX_FAILURES):
        login(client, client_owner.username, "wrong")
    elsewhere = Client(REMOTE_ADDR="192.0.2.7")
    assert login(elsewhere, client_owner.username).status_code == 302


def test_a_success_resets_the_failure_count(client, client_owner, settings):
    for _ in range(settings.PORTAL_LOGIN_MAX_FAILURES - 1):
        login(client, client_owner.username, "wrong")
    assert login(client, client_owner.username).status_code == 302
    client.post("/portal/logout/")
    for _ in range(settings.PORTAL_LOGIN_MAX_FAILURES - 1):
        login(client, client_owner.username, "wrong")
    assert login(client, client_owner.username).status_code == 302


def _errors(response) -> list[str]:
    return list(response.context["form"].non_field_errors())


def test_staff_cannot_sign_in_to_the_portal_and_their_right_password_reads_like_a_wrong_one(client, db):
    staff = factories.StaffFactory(username="staffer")
    right = login(client, staff.username)
    wrong = login(Client(), staff.username, "not-the-password")
    assert right.status_code == 200 and "_auth_user_id" not in client.session
    assert _errors(right) == _errors(wrong) and "do not match a client account" in _errors(right)[0]


def test_a_signed_in_staff_member_without_membership_gets_a_clear_403(client, agency_admin):
    client.force_login(agency_admin)
    response = client.get("/portal/")
    assert response.status_code == 403
    assert "This page is for client contacts" in response.content.decode()


def test_a_contact_of_an_inactive_client_is_refused(client, client_owner, acme):
    acme.is_active = False
    acme.save()
    assert login(client, client_owner.username).status_code == 200
    client.force_login(client_owner)
    assert client.get("/portal/").status_code == 403


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get("/portal/")
    assert response.status_code == 302 and response["Location"] == "/portal/login/?next=/portal/"


def test_sign_out_is_post_only(client, client_owner):
    client.force_login(client_owner)
    assert client.get("/portal/logout/").status_code == 405
    assert client.get("/portal/").status_code == 200
    response = client.post("/portal/logout/")
    assert response.status_code == 302 and response["Location"] == "/portal/login/"
    assert client.get("/portal/").status_code == 302
