"""Staff invite a client contact; the contact sets a password through a one-time, expiring link."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib import admin
from django.contrib.messages.storage.fallback import FallbackStorage
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import RequestFactory
from django.utils import timezone

from clients.admin_actions import invite_contact
from clients.models import Client, ClientMember
from clients.services import invite_token_check, member_invite

pytestmark = [pytest.mark.django_db]

NEW_PASSWORD = "a-long-and-fresh-passphrase"


def invite_link() -> str:
    (message,) = mail.outbox
    return re.search(r"(/portal/invite/\S+/)", message.body).group(1)


def test_it_invites_a_contact_and_emails_a_link_after_commit(acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = member_invite(client=acme, email="Jane@Acme.Example", invited_by=agency_admin)
    assert result.created
    member = ClientMember.objects.get()
    assert member.client == acme and member.user.username == "jane@acme.example"
    assert not member.user.has_usable_password() and not member.user.is_staff
    (message,) = mail.outbox
    assert message.to == ["jane@acme.example"]
    assert "Acme Corp" in message.subject
    assert message.alternatives and "Choose your password" in message.alternatives[0][0]


def test_no_email_leaves_before_the_transaction_commits(acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    assert mail.outbox == [] and len(callbacks) == 1


def test_the_contact_sets_a_password_and_is_signed_in(client, acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    response = client.get(invite_link())
    # The token leaves the address bar at once (no Referer or history leak).
    assert response.status_code == 302 and response["Location"] == "/portal/welcome/set-password/"
    assert response["Referrer-Policy"] == "no-referrer"
    page = client.get("/portal/welcome/set-password/")
    assert page.status_code == 200 and "jane@acme.example" in page.content.decode()
    done = client.post("/portal/welcome/set-password/", {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/portal/"
    assert client.get("/portal/").status_code == 200
    member = ClientMember.objects.get()
    assert member.joined_at is not None
    assert member.user.check_password(NEW_PASSWORD)


def test_the_link_works_only_once(client, acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    link = invite_link()
    client.get(link)
    client.post("/portal/welcome/set-password/", {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    client.post("/portal/logout/")
    again = client.get(link)
    assert again.status_code == 400
    assert "no longer works" in again.content.decode()


def test_the_link_expires(client, acme, agency_admin, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    link = invite_link()
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.PORTAL_INVITE_TTL + 60)):
        assert client.get(link).status_code == 400


def test_a_tampered_link_is_refused(client, acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    token = invite_link().split("/")[-2]
    assert invite_token_check(token=token) is not None
    assert invite_token_check(token=token[:-2] + "xx") is None
    assert client.get("/portal/welcome/set-password/").status_code == 400  # no token in the session


def test_the_password_must_pass_the_validators(client, acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    client.get(invite_link())
    response = client.post("/portal/welcome/set-password/", {"new_password1": "short", "new_password2": "short"})
    assert response.status_code == 200
    assert not ClientMember.objects.get().user.has_usable_password()


def test_re_inviting_before_joining_sends_a_new_link(acme, agency_admin, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
        result = member_invite(client=acme, email="jane@acme.example", invited_by=agency_admin)
    assert not result.created and len(mail.outbox) == 2
    assert ClientMember.objects.count() == 1


@pytest.mark.parametrize("who", ["staff", "other_client", "joined"])
def test_it_refuses_invitations_that_would_mix_people_up(acme, agency_admin, other_client_owner, client_owner, who):
    email = {
        "staff": agency_admin.email,
        "other_client": other_client_owner.username,
        "joined": client_owner.username,
    }[who]
    if who == "staff":
        agency_admin.username = email
        agency_admin.save()
    with pytest.raises(ValidationError):
        member_invite(client=acme, email=email, invited_by=agency_admin)


@pytest.mark.parametrize("typed", ["Staff.Person@Agency.example", "staff.person@agency.example"])
def test_it_refuses_a_staff_members_email_whatever_the_case_and_username(acme, agency_admin, typed):
    from tests import factories

    factories.StaffFactory(username="sp", email="Staff.Person@Agency.EXAMPLE")
    with pytest.raises(ValidationError, match="staff account"):
        member_invite(client=acme, email=typed, invited_by=agency_admin)
    assert not ClientMember.objects.filter(user__email__iexact=typed).exists()


def _admin_request(user, data):
    request = RequestFactory().post("/admin/clients/client/", data)
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_the_admin_action_shows_a_form_then_invites(acme, agency_admin, django_capture_on_commit_callbacks):
    model_admin = admin.ModelAdmin(Client, admin.site)
    queryset = Client.objects.filter(pk=acme.pk)
    page = invite_contact(model_admin, _admin_request(agency_admin, {"action": "invite_contact"}), queryset)
    page.render()
    assert page.status_code == 200 and b"Send invitation" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        done = invite_contact(
            model_admin,
            _admin_request(agency_admin, {"apply": "1", "email": "new@acme.example", "role": "owner"}),
            queryset,
        )
    assert done is None
    assert ClientMember.objects.get(user__username="new@acme.example").invited_by == agency_admin
    assert len(mail.outbox) == 1


def test_the_admin_action_shows_errors_on_the_form(acme, agency_admin, other_client_owner):
    model_admin = admin.ModelAdmin(Client, admin.site)
    page = invite_contact(
        model_admin,
        _admin_request(agency_admin, {"apply": "1", "email": other_client_owner.username, "role": "owner"}),
        Client.objects.filter(pk=acme.pk),
    )
    page.render()
    assert b"already a contact of another client" in page.content
