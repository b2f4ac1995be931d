"""factory_boy factories for the models. Tokens are random per instance, never literals."""

from __future__ import annotations

import secrets
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from clients.models import Client, ClientMember, CloudflareAccount, Zone
from connections.models import Alert, AuthorizationRequest, Grant, GrantEvent, OAuthApp


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct-horse-battery")


class StaffFactory(UserFactory):
    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True


class SuperuserFactory(StaffFactory):
    username = factory.Sequence(lambda n: f"admin{n}")
    is_superuser = True


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    name = factory.Sequence(lambda n: f"Client {n}")
    slug = factory.Sequence(lambda n: f"client-{n}")


class ClientMemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClientMember

    client = factory.SubFactory(ClientFactory)
    user = factory.SubFactory(UserFactory)
    role = ClientMember.Role.OWNER
    joined_at = factory.LazyFunction(timezone.now)


class CloudflareAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CloudflareAccount

    client = factory.SubFactory(ClientFactory)
    cf_account_id = factory.LazyFunction(lambda: secrets.token_hex(16))
    name = factory.Sequence(lambda n: f"Account {n}")


class ZoneFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Zone

    account = factory.SubFactory(CloudflareAccountFactory)
    cf_zone_id = factory.LazyFunction(lambda: secrets.token_hex(16))
    name = factory.Sequence(lambda n: f"zone{n}.example")
    status = "active"
    plan_name = "Free Website"


class OAuthAppFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OAuthApp
        skip_postgeneration_save = True

    name = "Example Agency Portal"
    client_id = factory.Sequence(lambda n: f"app-{n}")
    redirect_uri = "http://127.0.0.1:8000/oauth/cloudflare/callback/"
    required_scopes = ["user-details.read", "account-settings.read", "zone.read", "dns.read"]
    optional_scopes = ["dns.write", "cache.purge"]
    publisher_domain = "agency.example"

    @factory.post_generation
    def secret(obj, create, extracted, **kwargs):  # noqa: N805
        obj.set_client_secret(extracted or secrets.token_urlsafe(24))
        if create:
            obj.save()


class GrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Grant
        skip_postgeneration_save = True

    client = factory.SubFactory(ClientFactory)
    app = factory.SubFactory(OAuthAppFactory)
    cf_user_id = factory.LazyFunction(lambda: secrets.token_hex(16))
    cf_user_email = factory.Sequence(lambda n: f"owner{n}@client.example")
    requested_scopes = factory.LazyAttribute(lambda o: o.app.all_scopes)
    granted_scopes = factory.LazyAttribute(lambda o: o.app.all_scopes)
    access_expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
    next_refresh_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=45))
    next_check_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))

    @factory.post_generation
    def tokens(obj, create, extracted, **kwargs):  # noqa: N805
        if obj.status in ("disconnected", "revoked", "lost"):
            return
        access, refresh = extracted or ("cfoat_" + secrets.token_urlsafe(32), "cfort_" + secrets.token_urlsafe(32))
        obj.set_tokens(access_token=access, refresh_token=refresh)
        if create:
            obj.save()


class AuthorizationRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuthorizationRequest

    state_hash = factory.LazyFunction(lambda: secrets.token_hex(32))
    code_verifier = factory.LazyFunction(lambda: secrets.token_urlsafe(48))
    session_binding_hash = factory.LazyFunction(lambda: secrets.token_hex(32))
    app = factory.SubFactory(OAuthAppFactory)
    client = factory.SubFactory(ClientFactory)
    requested_scopes = factory.LazyAttribute(lambda o: o.app.all_scopes)
    redirect_uri = factory.LazyAttribute(lambda o: o.app.redirect_uri)
    expected_issuer = "http://127.0.0.1:8788"
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=10))


class GrantEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GrantEvent

    grant = factory.SubFactory(GrantFactory)
    client = factory.LazyAttribute(lambda o: o.grant.client)
    kind = GrantEvent.Kind.REFRESHED


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    grant = factory.SubFactory(GrantFactory)
    app = factory.LazyAttribute(lambda o: o.grant.app)
    client = factory.LazyAttribute(lambda o: o.grant.client)
    kind = Alert.Kind.REVOKED
    message = "Grant revoked at Cloudflare"
