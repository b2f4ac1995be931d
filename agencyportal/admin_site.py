"""The staff admin site: TOTP MFA with first-time enrollment, and the fleet dashboard as its index.

Sign-in, when STAFF_OTP_REQUIRED is on:
 1. A staff user with a confirmed TOTP device signs in with username, password and the 6-digit code.
 2. A staff user without one signs in with username and password, and lands on the enrollment page
    (and nowhere else in the admin) until they scan the QR code and confirm a first code.
 3. Every admin page requires a session verified by a TOTP code (`request.user.is_verified()`).
"""

from __future__ import annotations

from io import BytesIO

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from django_otp.forms import OTPAuthenticationFormMixin
from django_otp.plugins.otp_totp.models import TOTPDevice


def _is_verified(user) -> bool:
    # OTPMiddleware gives request.user `is_verified()`; a user object fresh from login() may not have it yet.
    is_verified = getattr(user, "is_verified", None)
    return is_verified() if callable(is_verified) else getattr(user, "otp_device", None) is not None


def _has_confirmed_device(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


class StaffLoginForm(OTPAuthenticationFormMixin, AdminAuthenticationForm):
    """Username + password, and the TOTP code once the user has a device."""

    otp_device = forms.CharField(required=False, widget=forms.HiddenInput)
    otp_token = forms.CharField(
        label="Authenticator code",
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="The 6-digit code from your authenticator app. Leave empty the first time you sign in.",
    )
    otp_challenge = forms.CharField(required=False, widget=forms.HiddenInput)

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        # One message for every failure (wrong password, wrong or missing code, throttled device, not
        # staff): a right password with a wrong code must not read differently.
        "invalid_login": (
            "Please enter a correct username, password and authenticator code for a staff account. "
            "All fields may be case-sensitive."
        ),
    }

    def _chosen_device(self, user):
        # Staff have one authenticator (enrolled below); use it unless the form named another of theirs.
        return super()._chosen_device(user) or TOTPDevice.objects.filter(user=user, confirmed=True).first()

    def clean(self):
        cleaned = super().clean()
        user = self.get_user()
        if user is not None and settings.STAFF_OTP_REQUIRED and _has_confirmed_device(user):
            try:
                self.clean_otp(user)  # raises without a valid code; sets user.otp_device otherwise
            except forms.ValidationError:
                # Counted like a wrong password (django-axes listens to this signal), and told alike.
                user_login_failed.send(
                    sender=__name__, credentials={"username": user.get_username()}, request=self.request
                )
                raise self.get_invalid_login_error() from None
        return cleaned


class EnrollForm(forms.Form):
    otp_token = forms.CharField(
        label="Code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


#: Apps of Django and of the sign-in libraries, shown together after the agency's own sections, with
#: model names that say what they are to staff.
STAFF_SECURITY_APPS = ("auth", "otp_totp", "axes")
STAFF_SECURITY_NAMES = {
    "User": "Users (staff and client contacts)",
    "Group": "Staff roles",
    "TOTPDevice": "Authenticator apps",
    "AccessAttempt": "Sign-in lockouts",
    "AccessLog": "Sign-in history",
    "AccessFailureLog": "Failed sign-ins",
}


class ResetAuthenticatorForm(forms.Form):
    """Re-authentication before a staff member replaces their own authenticator."""

    password = forms.CharField(
        label="Your password", widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )
    otp_token = forms.CharField(
        label="A current code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean(self):
        cleaned = super().clean()
        devices = TOTPDevice.objects.filter(user=self.user, confirmed=True)
        code = (cleaned.get("otp_token") or "").strip()
        # The code is checked only after the password, so a wrong password never uses up a code.
        password_ok = self.user.check_password(cleaned.get("password") or "")
        code_ok = password_ok and bool(code) and any(device.verify_token(code) for device in devices)
        if not code_ok:
            raise forms.ValidationError("That password and code do not match your account. Nothing was changed.")
        return cleaned


class AgencyAdminSite(admin.AdminSite):
    site_header = "Agency Portal administration"
    site_title = "Agency Portal"
    index_title = "Fleet dashboard"
    login_form = StaffLoginForm
    login_template = "admin/agency_login.html"
    index_template = "admin/dashboard.html"

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        return not settings.STAFF_OTP_REQUIRED or _is_verified(request.user)

    def _needs_enrollment(self, request: HttpRequest) -> bool:
        user = request.user
        return (
            settings.STAFF_OTP_REQUIRED
            and user.is_authenticated
            and user.is_active
            and user.is_staff
            and not _is_verified(user)
            and not _has_confirmed_device(user)
        )

    @method_decorator(never_cache)
    def login(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if self._needs_enrollment(request):
            return HttpResponseRedirect(reverse("admin:otp_enroll"))
        response = super().login(request, extra_context)
        if request.method == "POST" and self._needs_enrollment(request):
            return HttpResponseRedirect(reverse("admin:otp_enroll"))
        return response

    def index(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        """The admin index is the fleet dashboard (scoped to the clients the user may see)."""
        from clients.models import Client
        from connections.models import Alert, Grant

        from . import dashboard
        from .roles import staff_sees_all_clients

        grants, clients = Grant.objects.all(), Client.objects.all()
        alerts = Alert.objects.all()
        if not staff_sees_all_clients(request):
            grants = grants.filter(client__account_manager=request.user)
            clients = clients.filter(account_manager=request.user)
            alerts = alerts.filter(client__account_manager=request.user)
        summary = dashboard.fleet_summary(grants=grants, clients=clients, alerts=alerts)
        context = {
            **summary,
            "health_chart": dashboard.health_chart_svg(dashboard.health_history(today_counts=summary["health_today"])),
            # Fleet-wide: the per-day counters are not kept per client.
            "refresh_chart": dashboard.refresh_chart_svg(dashboard.refresh_success_history()),
            **(extra_context or {}),
        }
        return super().index(request, context)

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        """The agency's own sections first (in INSTALLED_APPS order), then one "Staff security" section."""
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        order = {name.rsplit(".", 1)[-1]: i for i, name in enumerate(settings.INSTALLED_APPS)}
        own = sorted(
            (app for app in apps if app["app_label"] not in STAFF_SECURITY_APPS),
            key=lambda app: order.get(app["app_label"], len(order)),
        )
        security_apps = [app for app in apps if app["app_label"] in STAFF_SECURITY_APPS]
        security_models = [
            {**model, "name": STAFF_SECURITY_NAMES.get(model["object_name"], model["name"])}
            for app in security_apps
            for model in app["models"]
        ]
        if security_models:
            own.append(
                {
                    "name": "Staff security",
                    "app_label": "staff_security",
                    # A real page for the heading link: the first of the grouped apps' index.
                    "app_url": security_apps[0]["app_url"],
                    "has_module_perms": True,
                    "models": security_models,
                }
            )
        return own

    def get_urls(self):
        return [
            path("otp/enroll/", self.otp_enroll, name="otp_enroll"),
            path("otp/reset/", self.admin_view(self.otp_reset), name="otp_reset"),
            *super().get_urls(),
        ]

    @method_decorator(never_cache)
    def otp_enroll(self, request: HttpRequest) -> HttpResponse:
        """First sign-in of a staff user: create a TOTP device, show its QR code, confirm a code."""
        if not self._needs_enrollment(request):
            return HttpResponseRedirect(reverse("admin:index" if self.has_permission(request) else "admin:login"))
        device = TOTPDevice.objects.filter(user=request.user, confirmed=False).first()
        if device is None:
            device = TOTPDevice.objects.create(user=request.user, name="Authenticator app", confirmed=False)
        form = EnrollForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if device.verify_token(form.cleaned_data["otp_token"].strip()):
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                otp_login(request, device)
                return HttpResponseRedirect(reverse("admin:index"))
            form.add_error("otp_token", "That code is not valid. Check your phone's clock and try the next code.")
        context = {
            **self.each_context(request),
            "title": "Set up two-factor authentication",
            "form": form,
            "qr_svg": _qr_svg(device.config_url),
            "secret": _base32(device.bin_key),
        }
        return render(request, "admin/otp_enroll.html", context)

    def otp_reset(self, request: HttpRequest) -> HttpResponse:
        """A staff member replaces their own authenticator: password + a current code, then enrol again.

        Only one's own device: no one manages another staff member's authenticator here (a
        superuser may remove a device in the admin; its owner then enrols at the next sign-in).
        """
        form = ResetAuthenticatorForm(request.POST or None, user=request.user)
        if request.method == "POST" and form.is_valid():
            TOTPDevice.objects.filter(user=request.user).delete()
            # The session was verified by the device just removed: enrol a new one before anything else.
            request.session.pop("otp_device_id", None)
            request.user.otp_device = None
            return HttpResponseRedirect(reverse("admin:otp_enroll"))
        context = {**self.each_context(request), "title": "Replace your authenticator", "form": form}
        return render(request, "admin/otp_reset.html", context)


def _qr_svg(data: str) -> str:
    """The otpauth:// URI as an inline SVG QR code (no image request, no third party)."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    return svg[svg.index("<svg") :]  # drop the XML declaration for inline use


def _base32(key: bytes) -> str:
    from base64 import b32encode

    text = b32encode(key).decode().rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))
