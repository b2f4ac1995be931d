from __future__ import annotations

import zoneinfo

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

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
        "invalid_login": _("That email and password do not match a client account. Check both and try again."),
        "locked": _("Too many failed attempts. For your security, please wait 15 minutes and try again."),
    }

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.fields["username"].label = _("Email")
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


def _time_zone_choices():
    return [("", _("The portal's time zone (%(zone)s)") % {"zone": settings.TIME_ZONE})] + [
        (name, name.replace("_", " ")) for name in sorted(zoneinfo.available_timezones()) if "/" in name
    ]


def _language_choices():
    return [("", _("Automatic"))] + [(code, name) for code, name in settings.LANGUAGES]


class ContactSettingsForm(forms.ModelForm):
    """A contact's own language and time zone (the portal's settings page)."""

    language = forms.ChoiceField(
        label=_("Language"),
        choices=_language_choices,
        required=False,
        help_text=_("Automatic: your organisation's default language, else your browser's."),
        widget=forms.Select(attrs={"aria-describedby": "language-help"}),
    )
    time_zone = forms.ChoiceField(
        label=_("Time zone"),
        choices=_time_zone_choices,
        required=False,
        help_text=_("Dates and times in the portal are shown in this time zone."),
        widget=forms.Select(attrs={"aria-describedby": "time-zone-help"}),
    )

    class Meta:
        model = ClientMember
        fields = ["language", "time_zone"]
