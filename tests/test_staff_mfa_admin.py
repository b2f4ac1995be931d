"""Staff manage only their own authenticator; seeds are never shown after enrolment."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from agencyportal import roles
from tests import factories

PASSWORD = "correct-horse-battery"


def _code(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


@pytest.fixture
def agency_admin_member(db):
    user = factories.StaffFactory(username="agency-admin-member", password=PASSWORD)
    user.groups.add(Group.objects.get(name=roles.AGENCY_ADMIN))
    return user


def test_an_agency_admin_cannot_see_or_add_another_staff_members_device(client, agency_admin_member):
    boss = factories.SuperuserFactory(username="boss")
    device = TOTPDevice.objects.create(user=boss, name="boss phone", confirmed=True)
    client.force_login(agency_admin_member)
    assert client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk])).status_code == 403
    assert client.get(reverse("admin:otp_totp_totpdevice_changelist")).status_code == 403
    response = client.post(
        reverse("admin:otp_totp_totpdevice_add"), {"user": boss.pk, "name": "mine now", "confirmed": "on"}
    )
    assert response.status_code == 403
    assert TOTPDevice.objects.filter(user=boss).count() == 1


def test_a_superuser_sees_no_seed_on_the_device_page(admin_client, agency_admin):
    device = TOTPDevice.objects.create(user=factories.StaffFactory(), name="phone", confirmed=True)
    body = admin_client.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk])).content.decode()
    assert device.key not in body and "otpauth://" not in body
    # and may remove it: its owner enrols again at the next sign-in
    admin_client.post(reverse("admin:otp_totp_totpdevice_delete", args=[device.pk]), {"post": "yes"})
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()


def test_staff_replace_their_own_authenticator_only_after_password_and_code(client, settings, db):
    settings.STAFF_OTP_REQUIRED = True
    staff = factories.SuperuserFactory(username="ops", password=PASSWORD)
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    client.post(reverse("admin:login"), {"username": "ops", "password": PASSWORD, "otp_token": _code(device)})
    url = reverse("admin:otp_reset")
    later = time_machine.travel(timezone.now() + timedelta(seconds=device.step + 1), tick=False)
    later.start()  # a fresh code: the one used to sign in cannot be used twice
    try:
        device.refresh_from_db()
        wrong = client.post(url, {"password": "nope", "otp_token": _code(device)})
        assert wrong.status_code == 200 and "Nothing was changed" in wrong.content.decode()
        assert TOTPDevice.objects.filter(pk=device.pk).exists()
        done = client.post(url, {"password": PASSWORD, "otp_token": _code(device)})
    finally:
        later.stop()
    assert done.status_code == 302 and done["Location"] == reverse("admin:otp_enroll")
    assert not TOTPDevice.objects.filter(user=staff, confirmed=True).exists()
    # The session no longer counts as verified: only the enrolment page until a new device is confirmed.
    assert client.get(reverse("admin:index")).status_code == 302
    assert client.get(reverse("admin:otp_enroll")).status_code == 200
