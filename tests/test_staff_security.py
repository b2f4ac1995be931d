"""Staff sign-in: TOTP MFA with enrollment, login throttling, client IP behind proxies, session length,
and the Content-Security-Policy on every kind of response."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from agencyportal.security import client_ip
from tests import factories

PASSWORD = "correct-horse-battery"


@pytest.fixture
def otp_on(settings):
    settings.STAFF_OTP_REQUIRED = True


@pytest.fixture
def staff(db):
    return factories.SuperuserFactory(username="ops", password=PASSWORD)


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def test_it_keeps_staff_without_a_verified_device_out_of_the_admin(client, staff, otp_on):
    client.force_login(staff)  # a password session alone
    response = client.get(reverse("admin:connections_grant_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    # And the login page sends them to enrollment, never to the data.
    assert client.get(reverse("admin:login")).headers["Location"] == reverse("admin:otp_enroll")


def test_it_enrolls_a_new_staff_user_and_then_lets_them_in(client, staff, otp_on):
    response = client.post(reverse("admin:login"), {"username": "ops", "password": PASSWORD})
    assert response.headers["Location"] == reverse("admin:otp_enroll")
    page = client.get(reverse("admin:otp_enroll"))
    assert page.status_code == 200 and b"<svg" in page.content
    device = TOTPDevice.objects.get(user=staff)
    assert not device.confirmed

    bad = client.post(reverse("admin:otp_enroll"), {"otp_token": "000000" if _code(device) != "000000" else "111111"})
    assert bad.status_code == 200 and b"not valid" in bad.content
    assert client.get(reverse("admin:index")).status_code == 302

    # django-otp throttles after a failure (1 s, then 2 s, ...): a person retries a moment later.
    import time

    import time_machine

    with time_machine.travel(time.time() + 30, tick=False):
        device.refresh_from_db()
        response = client.post(reverse("admin:otp_enroll"), {"otp_token": _code(device)})
    assert response.headers["Location"] == reverse("admin:index")
    device.refresh_from_db()
    assert device.confirmed
    assert client.get(reverse("admin:index")).status_code == 200


def test_it_requires_the_code_from_a_staff_user_who_has_a_device(client, staff, otp_on):
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    no_code = client.post(reverse("admin:login"), {"username": "ops", "password": PASSWORD})
    assert no_code.status_code == 200  # the form again, with an error
    assert client.get(reverse("admin:index")).status_code == 302

    ok = client.post(reverse("admin:login"), {"username": "ops", "password": PASSWORD, "otp_token": _code(device)})
    assert ok.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


def test_a_right_password_with_a_wrong_code_reads_like_a_wrong_password(client, staff, otp_on):
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    wrong_code = "000000" if _code(device) != "000000" else "111111"
    url = reverse("admin:login")
    replies = [
        client.post(url, {"username": "ops", "password": PASSWORD, "otp_token": wrong_code}),
        client.post(url, {"username": "ops", "password": PASSWORD}),
        client.post(url, {"username": "ops", "password": "wrong", "otp_token": wrong_code}),
    ]
    errors = [list(r.context["form"].non_field_errors()) for r in replies]
    assert errors[0] == errors[1] == errors[2] and len(errors[0]) == 1
    assert "token" not in errors[0][0].lower()
    assert client.get(reverse("admin:index")).status_code == 302


def test_a_wrong_code_counts_towards_the_lockout(client, staff, otp_on, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    wrong_code = "000000" if _code(device) != "000000" else "111111"
    url = reverse("admin:login")
    for _ in range(3):
        client.post(url, {"username": "ops", "password": PASSWORD, "otp_token": wrong_code}, REMOTE_ADDR="10.8.8.8")
    locked = client.post(
        url, {"username": "ops", "password": PASSWORD, "otp_token": _code(device)}, REMOTE_ADDR="10.8.8.8"
    )
    assert locked.status_code == 429


def test_it_does_not_let_a_client_contact_into_the_admin(client, client_owner, otp_on):
    client.force_login(client_owner)
    assert client.get(reverse("admin:index")).status_code == 302
    assert client.get(reverse("admin:otp_enroll")).status_code == 302


def test_it_locks_out_a_username_and_ip_after_repeated_failures_and_lets_the_cool_off_expire(client, staff, settings):

    import time_machine

    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    url = reverse("admin:login")
    with time_machine.travel("2026-11-27 10:00:00+00:00", tick=False):
        for _ in range(3):
            client.post(url, {"username": "ops", "password": "wrong"}, REMOTE_ADDR="10.9.9.9")
        locked = client.post(url, {"username": "ops", "password": PASSWORD}, REMOTE_ADDR="10.9.9.9")
        assert locked.status_code == 429
        # The same username from another address is not locked (lockout is on username + IP).
        other = client.post(url, {"username": "ops", "password": PASSWORD}, REMOTE_ADDR="10.9.9.10")
        assert other.status_code == 302
    client.logout()
    with time_machine.travel("2026-11-27 10:16:00+00:00", tick=False):  # cool-off (15 min) over
        again = client.post(url, {"username": "ops", "password": PASSWORD}, REMOTE_ADDR="10.9.9.9")
        assert again.status_code == 302


def test_it_ignores_a_spoofed_forwarded_for_without_trusted_proxies(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert client_ip(request) == "203.0.113.7"


def test_it_takes_the_address_seen_by_the_trusted_proxy(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # The client forged the first entry; our proxy appended the real one.
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.9")
    assert client_ip(request) == "198.51.100.9"


def test_it_gives_staff_a_shorter_session(client, staff, settings):
    settings.STAFF_SESSION_AGE = 1800
    client.post(reverse("admin:login"), {"username": "ops", "password": PASSWORD})
    assert client.session.get_expiry_age() == 1800


@pytest.mark.parametrize(
    "url",
    ["/admin/", "/admin/login/", "/portal/", "/no-such-page/", "/oauth/cloudflare/callback/"],
)
def test_every_response_carries_the_content_security_policy(client, staff, url):
    client.force_login(staff)
    response = client.get(url)
    policy = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy


def test_a_server_error_page_carries_the_content_security_policy(client, settings):
    from django.urls import path

    def boom(request):
        raise RuntimeError("boom")

    import agencyportal.urls as root

    settings.ROOT_URLCONF = type("U", (), {"urlpatterns": [path("boom/", boom), *root.urlpatterns]})
    client.raise_request_exception = False
    response = client.get("/boom/")
    assert response.status_code == 500
    assert "default-src 'self'" in response.headers.get("Content-Security-Policy", "")
