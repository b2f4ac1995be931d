"""Which language and time zone a contact reads the portal and its emails in.

The order: the contact's own setting, else their client's default, else the browser's
Accept-Language, else English. The staff admin stays English.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import translation

from clients.models import ClientMember
from clients.services import member_invite
from connections.scopes import describe
from connections.services.reconsent import reconsent_link_send
from tests import factories

pytestmark = pytest.mark.django_db

FRENCH_HOME = "Vos connexions Cloudflare"
ENGLISH_HOME = "Your Cloudflare connections"


def _member(acme, **fields) -> ClientMember:
    member = ClientMember.objects.get(client=acme)
    for name, value in fields.items():
        setattr(member, name, value)
    member.save()
    return member


def _home(client, accept_language: str = "") -> str:
    response = client.get("/portal/", HTTP_ACCEPT_LANGUAGE=accept_language)
    assert response.status_code == 200
    return response.content.decode()


def test_the_contacts_own_language_wins_over_the_clients_default_and_the_browser(owner_client, acme):
    acme.default_language = "en"
    acme.save()
    _member(acme, language="fr")
    page = _home(owner_client, "en-GB,en;q=0.9")
    assert FRENCH_HOME in page and ENGLISH_HOME not in page
    assert '<html lang="fr">' in page


def test_the_clients_default_applies_when_the_contact_has_not_chosen(owner_client, acme):
    acme.default_language = "fr"
    acme.save()
    page = _home(owner_client, "en-US,en;q=0.9")
    assert FRENCH_HOME in page


def test_the_browser_language_applies_when_neither_contact_nor_client_chose(owner_client, acme):
    assert FRENCH_HOME in _home(owner_client, "fr-CA,fr;q=0.9,en;q=0.5")
    # A language the portal does not have falls back to English.
    assert ENGLISH_HOME in _home(owner_client, "de-DE,de;q=0.9")
    assert ENGLISH_HOME in _home(owner_client)


def test_signed_out_pages_follow_the_browser(client):
    response = client.get("/portal/login/", HTTP_ACCEPT_LANGUAGE="fr")
    assert "Pour les contacts clients de l'agence" in response.content.decode()
    assert response["Content-Language"] == "fr"
    assert "Accept-Language" in response["Vary"]


def test_the_staff_admin_stays_english_for_a_french_browser(admin_client):
    page = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert '<html lang="en"' in page and "Déconnexion" not in page


def test_dates_show_in_the_contacts_time_zone(owner_client, acme, oauth_app):
    factories.GrantFactory(client=acme, app=oauth_app, authorized_at=datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    assert "15 Jan 2026, 12:00" in _home(owner_client)  # no choice: the portal's zone (UTC)
    _member(acme, time_zone="Asia/Tokyo")
    page = _home(owner_client)
    assert "15 Jan 2026, 21:00" in page and "15 Jan 2026, 12:00" not in page
    _member(acme, time_zone="America/Montreal", language="fr")
    assert "15 janvier 2026 à 07:00" in _home(owner_client)  # and in French, written the French way


def test_saving_the_settings_changes_the_language_at_once(owner_client, acme):
    response = owner_client.post("/portal/settings/", {"language": "fr", "time_zone": "Europe/Paris"}, follow=True)
    page = response.content.decode()
    assert "Vos préférences sont enregistrées." in page
    assert "Langue et fuseau horaire" in page
    member = ClientMember.objects.get(client=acme)
    assert (member.language, member.time_zone) == ("fr", "Europe/Paris")
    # Back to the default: the browser's language again.
    owner_client.post("/portal/settings/", {"language": "", "time_zone": ""})
    assert ENGLISH_HOME in _home(owner_client, "en")


def test_the_settings_page_refuses_an_unknown_language_or_time_zone(owner_client, acme):
    response = owner_client.post("/portal/settings/", {"language": "xx", "time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"language", "time_zone"}
    member = ClientMember.objects.get(client=acme)
    assert (member.language, member.time_zone) == ("", "")


def test_the_settings_page_is_linked_from_the_portal_and_keeps_its_query_count(
    owner_client, acme, oauth_app, django_assert_num_queries
):
    assert 'href="/portal/settings/"' in _home(owner_client)
    # session, user, membership (+client): whatever the client's grants.
    with django_assert_num_queries(3):
        assert owner_client.get("/portal/settings/").status_code == 200
    for _ in range(5):
        factories.GrantFactory(client=acme, app=oauth_app)
    with django_assert_num_queries(3):
        owner_client.get("/portal/settings/")


def test_the_settings_page_asks_a_signed_out_visitor_to_sign_in(client):
    response = client.get("/portal/settings/")
    assert response.status_code == 302 and response["Location"].startswith("/portal/login/")


def test_the_settings_page_is_not_for_staff(admin_client):
    assert admin_client.get("/portal/settings/").status_code == 403


def test_scope_and_action_descriptions_are_translated():
    from operations.catalogue import CATALOGUE

    with translation.override("fr"):
        assert describe("dns.write") == "Lire et modifier les enregistrements DNS de vos zones"
        assert str(CATALOGUE["cache.purge"].client_label).startswith("Vider le cache de Cloudflare")
        assert describe("brand-new.write") == "Modifier : brand new"
    assert describe("dns.write") == "Read and change DNS records in your zones"


def test_an_invitation_to_a_contact_of_a_french_client_is_in_french(django_capture_on_commit_callbacks, mailoutbox):
    client = factories.ClientFactory(name="Fromagerie", slug="fromagerie", default_language="fr")
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(client=client, email="marie@fromagerie.example", invited_by=None)
    (message,) = mailoutbox
    assert message.subject.startswith("Vous êtes invité")
    assert "Choisissez votre mot de passe ici" in message.body
    html = message.alternatives[0][0] if hasattr(message.alternatives[0], "__getitem__") else ""
    assert 'lang="fr"' in html and "Bonjour," in html


def test_a_reconsent_email_reaches_each_owner_in_their_own_language(
    acme, client_owner, oauth_app, agency_admin, django_capture_on_commit_callbacks, mailoutbox
):
    _member(acme, language="fr")
    second = factories.UserFactory(username="second@acme.example", email="second@acme.example")
    factories.ClientMemberFactory(client=acme, user=second)
    grant = factories.GrantFactory(
        client=acme, app=oauth_app, declined_scopes=["dns.write"], granted_scopes=oauth_app.required_scopes
    )
    with django_capture_on_commit_callbacks(execute=True):
        reconsent_link_send(grant=grant, sent_by=agency_admin)
    by_address = {m.to[0]: m for m in mailoutbox}
    french, english = by_address[client_owner.email], by_address[second.email]
    assert "a besoin d'une autorisation Cloudflare" in french.subject
    assert "Lire et modifier les enregistrements DNS de vos zones" in french.body
    assert "needs a Cloudflare permission" in english.subject
    assert "Read and change DNS records in your zones" in english.body
