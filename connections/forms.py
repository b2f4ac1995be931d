from __future__ import annotations

from django import forms


class ConfirmForm(forms.Form):
    """An empty form: a POST carrying a valid CSRF token is the confirmation."""
