"""Writes for the client portal: inviting contacts, accepting invitations, throttling logins."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from .language import member_language
from .models import Client, ClientMember

logger = logging.getLogger(__name__)

INVITE_SALT = "clients.member-invite"


# --- Invitations -------------------------------------------------------------------------------


def _password_state(user: AbstractBaseUser) -> str:
    """Changes as soon as the invitation is used (the password hash changes), so a link works once."""
    raw = f"{user.password}|{user.last_login.isoformat() if user.last_login else ''}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def invite_token_make(*, user: AbstractBaseUser) -> str:
    """A signed, timestamped, single-use token for the set-password link (no server-side state)."""
    return signing.dumps({"u": user.pk, "s": _password_state(user)}, salt=INVITE_SALT)


def invite_token_check(*, token: str) -> AbstractBaseUser | None:
    """The invited user, if the token is authentic, unexpired and unused; None otherwise."""
    try:
        data = signing.loads(token, salt=INVITE_SALT, max_age=settings.PORTAL_INVITE_TTL)
    except signing.BadSignature:  # also SignatureExpired
        return None
    if not isinstance(data, dict):
        return None
    user = get_user_model().objects.filter(pk=data.get("u"), is_active=True, is_staff=False).first()
    if user is None or data.get("s") != _password_state(user):
        return None
    if not ClientMember.objects.filter(user=user, client__is_active=True).exists():
        return None
    return user


def invite_url(*, user: AbstractBaseUser) -> str:
    path = reverse("clients:set_password", kwargs={"token": invite_token_make(user=user)})
    return f"{settings.SITE_URL}{path}"


@dataclass(frozen=True)
class InviteResult:
    member: ClientMember
    created: bool


def member_invite(
    *, client: Client, email: str, invited_by: AbstractBaseUser | None, role: str = ClientMember.Role.OWNER
) -> InviteResult:
    """Create (or re-invite) a portal user for a client and email them a set-password link.

    A person can be a contact of one client only, and never a staff member: the portal scopes
    everything by that single membership. Re-inviting someone who has not joined yet sends a new
    link; one who already joined gets a ValidationError (they can reset through staff).
    """
    email = get_user_model().objects.normalize_email(email.strip()).lower()
    if not email or "@" not in email:
        raise ValidationError("Enter a valid email address.")
    if role not in ClientMember.Role.values:
        raise ValidationError("Unknown role.")
    User = get_user_model()
    # Never a contact with a staff member's address, whatever its case or the staff username: the
    # comparison is on emails, case-folded (a staff "Admin@Agency.example" is "admin@agency.example").
    staff = User.objects.filter(Q(is_staff=True) | Q(is_superuser=True))
    if staff.filter(Q(email__iexact=email) | Q(username__iexact=email)).exists():
        raise ValidationError("This email belongs to a staff account; use another address.")
    with transaction.atomic():
        user = User.objects.filter(username__iexact=email).select_for_update().first()
        created = user is None
        if user is None:
            user = User(username=email, email=email, is_staff=False, is_superuser=False)
            user.set_unusable_password()
            user.save()
            member = ClientMember.objects.create(
                client=client, user=user, role=role, invited_by=invited_by, invited_at=timezone.now()
            )
        else:
            if user.is_staff or user.is_superuser:
                raise ValidationError("This email belongs to a staff account; use another address.")
            member = ClientMember.objects.filter(user=user).select_related("client").first()
            if member is None:
                member = ClientMember.objects.create(
                    client=client, user=user, role=role, invited_by=invited_by, invited_at=timezone.now()
                )
            elif member.client_id != client.pk:
                raise ValidationError("This person is already a contact of another client.")
            elif member.joined_at is not None:
                raise ValidationError("This person has already joined the portal.")
            else:
                member.role, member.invited_by, member.invited_at = role, invited_by, timezone.now()
                member.save(update_fields=["role", "invited_by", "invited_at"])
        link = invite_url(user=user)
        # Email leaves only once the membership is committed (never from inside a transaction).
        transaction.on_commit(lambda: _send_invite(member_id=member.pk, link=link))
    return InviteResult(member=member, created=created)


def _send_invite(*, member_id: int, link: str) -> None:
    member = ClientMember.objects.select_related("client", "user", "invited_by").get(pk=member_id)
    context = {
        "member": member,
        "client": member.client,
        "link": link,
        "site_name": settings.SITE_NAME,
        "ttl_hours": max(1, settings.PORTAL_INVITE_TTL // 3600),
        "inviter": (member.invited_by.get_full_name() or member.invited_by.get_username()) if member.invited_by else "",
    }
    # In the language the contact will read the portal in (their client's default until they choose).
    with translation.override(member_language(member) or settings.LANGUAGE_CODE):
        subject = render_to_string("emails/member_invite_subject.txt", context).strip()
        text = render_to_string("emails/member_invite_body.txt", context)
        html = render_to_string("emails/member_invite_body.html", context)
    message = EmailMultiAlternatives(subject=subject, body=text, to=[member.user.email])
    message.attach_alternative(html, "text/html")
    message.send()
    logger.info("Sent a portal invitation to member %s of client %s", member.pk, member.client_id)


def member_accept_invite(*, user: AbstractBaseUser, password: str) -> ClientMember:
    """Set the first password (which also invalidates the link) and mark the member as joined."""
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        member = ClientMember.objects.select_for_update().get(user=user)
        if member.joined_at is None:
            member.joined_at = timezone.now()
            member.save(update_fields=["joined_at"])
    return member


# --- Login throttling ---------------------------------------------------------------------------
#
# A failure counter per (username, client IP) in the cache, with a fixed window: after
# PORTAL_LOGIN_MAX_FAILURES failures the pair is locked until the window ends. A second, looser
# counter per username alone slows a spread-out attack from many addresses. The IP is REMOTE_ADDR
# only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites REMOTE_ADDR itself.


def _throttle_keys(*, username: str, ip: str) -> tuple[str, str]:
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"portal-login:{name}:{ip}", f"portal-login:{name}:*"


def login_is_locked(*, username: str, ip: str) -> bool:
    pair, anyip = _throttle_keys(username=username, ip=ip)
    limit = settings.PORTAL_LOGIN_MAX_FAILURES
    return (cache.get(pair) or 0) >= limit or (cache.get(anyip) or 0) >= limit * 4


def login_failure_record(*, username: str, ip: str) -> int:
    """Count one failed attempt; returns the failures of this (username, IP) in the window."""
    window = settings.PORTAL_LOGIN_LOCKOUT_SECONDS
    count = 0
    for key in _throttle_keys(username=username, ip=ip):
        # add() creates the key with its timeout only if absent, so the window is fixed from the
        # first failure; incr() is atomic in every shared cache backend.
        cache.add(key, 0, timeout=window)
        try:
            value = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
            value = 1
        count = count or value
    if count >= settings.PORTAL_LOGIN_MAX_FAILURES:
        logger.warning("Portal login locked for a username from %s after %s failures", ip, count)
    return count


def login_failures_reset(*, username: str, ip: str) -> None:
    pair, _ = _throttle_keys(username=username, ip=ip)
    cache.delete(pair)
