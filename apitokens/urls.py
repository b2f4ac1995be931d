from __future__ import annotations

from django.urls import path

from . import views

app_name = "apitokens"

urlpatterns = [
    path("migration/<uuid:code>/", views.migration, name="migration"),
]
