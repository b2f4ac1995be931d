"""Admin building blocks shared by the apps."""

from __future__ import annotations

from django.contrib import admin
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest


class ReadOnlyTabularInline(admin.TabularInline):
    """Related rows shown on a page for reading: every listed field read-only, no adding or deleting."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class LabelledInlineFormSet(BaseInlineFormSet):
    """Each control of a tabular row gets an accessible name ("Role: owner@acme.example · Acme").

    Django's tabular inline shows the field names once, as column headers, so a screen reader on a
    row's select or "Delete" box hears no label (WCAG 1.3.1, 4.1.2).
    """

    def add_fields(self, form, index):
        super().add_fields(form, index)
        row = str(form.instance) if form.instance.pk else f"new row {(index or 0) + 1}"
        for name, field in form.fields.items():
            if field.widget.is_hidden:
                continue
            field.widget.attrs.setdefault("aria-label", f"{field.label or name}: {row}")


class LabelledTabularInline(admin.TabularInline):
    """A tabular inline whose row controls are labelled (see LabelledInlineFormSet)."""

    formset = LabelledInlineFormSet
