"""Template helpers of the client portal: `{% load portal %}`."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import date as date_filter
from django.utils.translation import pgettext

register = template.Library()


@register.filter(expects_localtime=True, is_safe=False)
def portal_datetime(value):
    """A date and time as the reader writes them, in their time zone ("15 Jan 2026, 21:00" in
    English, "15 janvier 2026 à 21:00" in French). The format itself is in the catalogue."""
    # Translators: a Django date format (https://docs.djangoproject.com/en/stable/ref/templates/builtins/#date).
    return date_filter(value, pgettext("portal date and time format", "j M Y, H:i"))
