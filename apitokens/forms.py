from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AutocompleteSelect

from clients.models import Client
from connections.models import OAuthApp
from operations.catalogue import CATALOGUE

from .mapping import BLOCKERS, MIGRATION_ONLY, PERMISSION_SCOPES
from .models import ApiToken

GROUP_CHOICES = [(g, g) for g in [*PERMISSION_SCOPES, *sorted(MIGRATION_ONLY), *BLOCKERS]]


class ApiTokenAddForm(forms.ModelForm):
    """Record one token. The token field is write-only: it is never shown again."""

    secret = forms.CharField(
        label="API token",
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; only its fingerprint is shown from now on.",
    )
    declared = forms.MultipleChoiceField(
        label="Permissions you know it has",
        required=False,
        choices=GROUP_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="Optional. Writes (DNS Write, Cache Purge …) cannot be seen without a write: say so here "
        "when the token cannot read its own permissions.",
    )

    class Meta:
        model = ApiToken
        fields = ("client", "name", "purpose", "owner_account_id", "notes")


class CsvUploadForm(forms.Form):
    file = forms.FileField(
        help_text="Columns: client (slug), name, token, purpose (customer or internal); optional: account_id, "
        "permissions (separated by ;), notes."
    )


class OverrideForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), min_length=10, help_text="Recorded with your name."
    )


class BoardFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "Every state"), *ApiToken.State.choices])
    # A search box (the admin's autocomplete), not a <select> of every client: with 1,000
    # clients the options were most of the board's time.
    client = forms.ModelChoiceField(
        required=False,
        queryset=Client.objects.all(),
        empty_label="Every client",
        widget=AutocompleteSelect(ApiToken._meta.get_field("client"), admin.site),
    )


class ServiceKeyForm(forms.Form):
    name = forms.CharField(max_length=200)
    clients = forms.ModelMultipleChoiceField(queryset=Client.objects.all(), widget=forms.CheckboxSelectMultiple)
    actions = forms.MultipleChoiceField(
        choices=[(a.id, f"{a.id}: {a.staff_label}") for a in CATALOGUE.values()], widget=forms.CheckboxSelectMultiple
    )
    expires_at = forms.DateTimeField(help_text="YYYY-MM-DD HH:MM")


class VerificationStartForm(forms.Form):
    app = forms.ModelChoiceField(queryset=OAuthApp.objects.filter(is_active=True))
    name_confirmed = forms.BooleanField(
        required=False,
        label="I checked the app's name and publisher domain on Cloudflare's consent screen",
        help_text="Used only when the portal cannot read them from the consent page.",
    )
