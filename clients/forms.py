from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm
from django.core.exceptions import ValidationError

from . import services
from .models import ClientMember


def client_ip(request) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is set by the client unless a trusted proxy replaces it,
    # and a spoofable key would make the throttle useless.
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


class PortalLoginForm(AuthenticationForm):
    """Django's login form, throttled per (email, IP), for client contacts only."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "That email and password do not match a client account. Check both and try again.",
        "locked": "Too many failed attempts. For your security, please wait 15 minutes and try again.",
    }

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.fields["username"].label = "Email"
        self.fields["username"].widget.attrs.update({"autocomplete": "username", "autofocus": True})

    def clean(self):
        username = (self.cleaned_data.get("username") or "").strip()
        ip = client_ip(self.request)
        if username and services.login_is_locked(username=username, ip=ip):
            # Checked before authenticate(): a locked pair gets no password check at all, so a
            # correct guess during the lockout is not confirmed either.
            raise ValidationError(self.error_messages["locked"], code="locked")
        try:
            cleaned = super().clean()
        except ValidationError:
            if username:
                services.login_failure_record(username=username, ip=ip)
            raise
        if username:
            services.login_failures_reset(username=username, ip=ip)
        return cleaned

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        # A right password of a staff account (or of a contact without an active client) reads
        # exactly like a wrong password: the form must not confirm that a password is correct.
        if user.is_staff or not ClientMember.objects.filter(user=user, client__is_active=True).exists():
            raise ValidationError(self.error_messages["invalid_login"], code="invalid_login")


class InvitePasswordForm(SetPasswordForm):
    """The first password of an invited contact (Django's validators apply)."""


class InviteContactForm(forms.Form):
    email = forms.EmailField(label="Contact's email", max_length=254)
    role = forms.ChoiceField(choices=ClientMember.Role.choices, initial=ClientMember.Role.OWNER)
