"""Access to portal pages, shared by every app that serves them (clients, connections)."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest
from django.shortcuts import render
from django.urls import reverse

from . import selectors


def portal_member_required(view):
    """Signed in *and* a contact of an active client; `request.member` is set for the view."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("clients:login"))
        member = selectors.member_for_request(request)
        if member is None:
            return render(request, "clients/not_member.html", status=403)
        request.member = member
        return view(request, *args, **kwargs)

    return wrapped
