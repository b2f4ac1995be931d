"""Settings for the Agency Portal, read from the environment (django-environ).

Every variable is documented in `.env.example`. With nothing configured the portal runs for
development: SQLite, a Celery broker that needs no server, console email and the local Cloudflare
sandbox. Production misconfiguration is caught by the system checks in `agencyportal/checks.py`.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
# A local `.env` file is optional; real environment variables win over it.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)


def _dev_secret(name: str, make) -> str:
    """Development only: a random value kept in `var/` so every process (web, worker, beat) agrees.

    Production must set the real variable; the system checks refuse to start without it.
    """
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


SECRET_KEY = env.str("SECRET_KEY", default="") or (
    _dev_secret("dev-secret-key", lambda: secrets.token_urlsafe(50)) if DEBUG else ""
)

# Keys for the tokens and client secrets stored in the database (Fernet keys, comma separated).
# The first key encrypts; every key decrypts. Never derived from SECRET_KEY.
TOKEN_ENCRYPTION_KEYS = env.list("TOKEN_ENCRYPTION_KEYS", default=[]) or (
    [_dev_secret("dev-token-encryption-key", _fernet_key)] if DEBUG else []
)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
SITE_NAME = env.str("SITE_NAME", default="Agency Portal")

INSTALLED_APPS = [
    # The admin with its site replaced by AgencyAdminSite (MFA, roles, dashboard).
    "agencyportal.admin_apps.AgencyAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "agencyportal",
    "clients",
    "connections",
    # Actions in client accounts: the catalogue, the gate, the SDK client, the action record.
    "operations",
    # Bulk changes: one action over many zones, with a dry run, progress, blocked items and resume.
    "changes",
    # The migration off API tokens, service keys + the Cloudflare-compatible proxy, app verification.
    "apitokens",
    # Agents: the action catalogue as MCP tools; the portal is their OAuth authorization server.
    "oauth2_provider",
    "agents",
    # `manage.py seed_demo` for `make run`; holds no models.
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The contact's language and time zone (their setting, the client's default, the browser's).
    "clients.middleware.ContactLocaleMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Last, as django-axes requires: turns a locked-out login into a 429 page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # First: refuses to authenticate a locked-out username + IP before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "agencyportal.urls"
WSGI_APPLICATION = "agencyportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "agencyportal.context_processors.site",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# Persistent connections (web and workers), checked before reuse: a new PostgreSQL connection per
# request or per task costs a backend start each time. Workers close them like Django's request
# cycle does (agencyportal/celery.py), so a connection broken by an outage is never reused.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file in development: wait for locks
    # instead of failing, and take the write lock at the start of a transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # No JIT compilation: the admin's lists use correlated subqueries whose plans PostgreSQL
    # judged costly enough to compile, which took 500 of the 630 ms of a grant search at
    # 100,000 grants; no query of the portal runs long enough to win it back.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = " ".join(filter(None, [options.get("options", ""), "-c jit=off"]))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# English is the default; French is the second language of everything a client contact reads
# (docs/i18n-and-accessibility.md). The staff admin stays English.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on a missing directory
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGIN_URL = "clients:login"
LOGIN_REDIRECT_URL = "clients:home"
LOGOUT_REDIRECT_URL = "clients:login"

# --- Security -------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Lax, not Strict: Strict drops the session on the top-level return from Cloudflare and every
# OAuth callback would fail (security checklist OA-18).
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# --- Staff sign-in: MFA and throttling ----------------------------------------------------------
# Staff must confirm a TOTP code (django-otp) to reach the admin. Off by default only in development.
STAFF_OTP_REQUIRED = env.bool("STAFF_OTP_REQUIRED", default=not DEBUG)
OTP_TOTP_ISSUER = SITE_NAME
# A TOTP seed is shown once, on the enrolment page, and never again (not on the device admin pages).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# Staff sessions are shorter than client sessions.
STAFF_SESSION_AGE = env.int("STAFF_SESSION_AGE", default=2 * 3600)
# Number of reverse proxies in front of the portal that append to X-Forwarded-For. 0 = trust only
# REMOTE_ADDR (a client can put anything in X-Forwarded-For).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# django-axes: lock a username + IP pair out after N failures, for a cool-off period.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "agencyportal.security.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

if env.bool("USE_X_FORWARDED_PROTO", default=False):
    # Only behind a proxy that sets this header itself (and strips it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

from django.utils.csp import CSP  # noqa: E402

# An allow-list that keeps the admin working: its scripts and styles are same-origin files.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# --- Email and alerts -------------------------------------------------------------------------
# EMAIL_URL: consolemail:// (default), smtp+tls://user:password@host:587, ... (django-environ).
_email = env.email_url("EMAIL_URL", default="consolemail://")
_email_options = {
    "host": _email.get("EMAIL_HOST"),
    "port": _email.get("EMAIL_PORT"),
    "username": _email.get("EMAIL_HOST_USER"),
    "password": _email.get("EMAIL_HOST_PASSWORD"),
    "use_tls": _email.get("EMAIL_USE_TLS"),
    "use_ssl": _email.get("EMAIL_USE_SSL"),
    "timeout": 10,
}
if _email["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend":
    # Readable on the console: headers and the plain-text body, not raw quoted-printable MIME.
    _email["EMAIL_BACKEND"] = "agencyportal.mail.ReadableConsoleBackend"
MAILERS = {
    "default": {
        "BACKEND": _email["EMAIL_BACKEND"],
        "OPTIONS": (
            {k: v for k, v in _email_options.items() if v not in (None, "")}
            if _email["EMAIL_BACKEND"].endswith("smtp.EmailBackend")
            else {}
        ),
    }
}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Agency Portal <portal@agency.example>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
STAFF_ALERT_EMAILS = env.list("STAFF_ALERT_EMAILS", default=[])
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
ALERT_WEBHOOK_SECRET = env.str("ALERT_WEBHOOK_SECRET", default="")

# --- Cloudflare -------------------------------------------------------------------------------
# Every URL is a setting so the portal can talk to the local sandbox or to the real Cloudflare.
CLOUDFLARE_SANDBOX_URL = env.str("CLOUDFLARE_SANDBOX_URL", default="http://127.0.0.1:8788").rstrip("/")
CLOUDFLARE_OAUTH_BASE_URL = env.str("CLOUDFLARE_OAUTH_BASE_URL", default=CLOUDFLARE_SANDBOX_URL).rstrip("/")
CLOUDFLARE_AUTHORIZE_URL = env.str("CLOUDFLARE_AUTHORIZE_URL", default=f"{CLOUDFLARE_OAUTH_BASE_URL}/oauth2/auth")
CLOUDFLARE_TOKEN_URL = env.str("CLOUDFLARE_TOKEN_URL", default=f"{CLOUDFLARE_OAUTH_BASE_URL}/oauth2/token")
CLOUDFLARE_REVOKE_URL = env.str("CLOUDFLARE_REVOKE_URL", default=f"{CLOUDFLARE_OAUTH_BASE_URL}/oauth2/revoke")
CLOUDFLARE_ISSUER = env.str("CLOUDFLARE_ISSUER", default=CLOUDFLARE_OAUTH_BASE_URL)
CLOUDFLARE_API_BASE_URL = env.str("CLOUDFLARE_API_BASE_URL", default=f"{CLOUDFLARE_SANDBOX_URL}/client/v4").rstrip("/")
CLOUDFLARE_CONNECT_TIMEOUT = env.float("CLOUDFLARE_CONNECT_TIMEOUT", default=5.0)
CLOUDFLARE_READ_TIMEOUT = env.float("CLOUDFLARE_READ_TIMEOUT", default=15.0)
# The token endpoint's own read timeout (seconds): a slow but working Cloudflare must not turn a
# refresh into an unanswered one (whose refresh token may have rotated unheard).
CLOUDFLARE_TOKEN_READ_TIMEOUT = env.float("CLOUDFLARE_TOKEN_READ_TIMEOUT", default=30.0)
# Where the old access token of an unanswered refresh is probed; empty = "userinfo" next to the
# token endpoint (https://dash.cloudflare.com/oauth2/userinfo).
CLOUDFLARE_USERINFO_URL = env.str("CLOUDFLARE_USERINFO_URL", default="")
# Largest response body the portal reads from Cloudflare (bytes); a bigger one is an error.
CLOUDFLARE_MAX_RESPONSE_BYTES = env.int("CLOUDFLARE_MAX_RESPONSE_BYTES", default=2 * 1024 * 1024)
# Pages of GET /zones (50 zones each) the OAuth callback requests at once, before it knows how many
# there are: 3 reads a grant of up to 150 zones in the callback's first round of reads.
CLOUDFLARE_CALLBACK_ZONE_PAGES = env.int("CLOUDFLARE_CALLBACK_ZONE_PAGES", default=3)
# Unknown at Cloudflare: whether a consent for only the missing scopes is merged into the earlier
# consent (True) or yields a token with just those scopes (False, Hydra's behaviour; the default).
CLOUDFLARE_INCREMENTAL_CONSENT = env.bool("CLOUDFLARE_INCREMENTAL_CONSENT", default=False)
# Consent starts ("Continue to Cloudflare") per contact and per client within a window of seconds.
CONSENT_START_WINDOW = env.int("CONSENT_START_WINDOW", default=600)
CONSENT_START_LIMIT_PER_CONTACT = env.int("CONSENT_START_LIMIT_PER_CONTACT", default=10)
CONSENT_START_LIMIT_PER_CLIENT = env.int("CONSENT_START_LIMIT_PER_CLIENT", default=30)
# HTTP status Cloudflare uses for a dead refresh token is unknown (400 or 401): both are handled.

# --- Grant lifecycle (the background engine) --------------------------------------------------
GRANT_REFRESH_MARGIN = env.int("GRANT_REFRESH_MARGIN", default=900)  # seconds before expiry
GRANT_REFRESH_JITTER = env.int("GRANT_REFRESH_JITTER", default=60)  # seconds, spread the load
GRANT_CHECK_INTERVAL = env.int("GRANT_CHECK_INTERVAL", default=3600)  # seconds between health checks
GRANT_FAILURE_THRESHOLD = env.int("GRANT_FAILURE_THRESHOLD", default=3)  # failures before "refresh failing"
# Seconds a refresh claim lasts; its holder extends it every third of it (a heartbeat) while it works,
# so a call may take longer, and a dead holder's grant is free again within one lease.
GRANT_REFRESH_LEASE = env.int("GRANT_REFRESH_LEASE", default=30)
# The lease is never shorter than a whole token call (connect + token read timeout) plus this margin,
# and a refresh is sent only while that much of it is left: no second holder can exist while a token
# is in flight, whatever the pool (prefork, threads, gevent) and its time limits.
GRANT_LEASE_MARGIN = env.int("GRANT_LEASE_MARGIN", default=5)
# Seconds between writes of the dashboard's refresh counters by each worker process (0: at once).
FLEET_COUNT_FLUSH_SECONDS = env.int("FLEET_COUNT_FLUSH_SECONDS", default=10)
AUTHORIZATION_REQUEST_TTL = env.int("AUTHORIZATION_REQUEST_TTL", default=600)  # seconds
# Revocation at Cloudflare after a disconnect: retried with exponential backoff from BASE to MAX s.
GRANT_REVOKE_BACKOFF_BASE = env.int("GRANT_REVOKE_BACKOFF_BASE", default=30)
GRANT_REVOKE_BACKOFF_MAX = env.int("GRANT_REVOKE_BACKOFF_MAX", default=3600)

# --- Client portal ----------------------------------------------------------------------------
PORTAL_INVITE_TTL = env.int("PORTAL_INVITE_TTL", default=72 * 3600)  # seconds an invitation link works
# Login throttle: failures per (email, IP) before a lockout of the given length (seconds).
PORTAL_LOGIN_MAX_FAILURES = env.int("PORTAL_LOGIN_MAX_FAILURES", default=5)
PORTAL_LOGIN_LOCKOUT_SECONDS = env.int("PORTAL_LOGIN_LOCKOUT_SECONDS", default=900)
# The login throttle counts in this cache: per process by default; set CACHE_URL=redis://... when
# several web processes serve the portal, so they share one count.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# Outbound budget: well under Cloudflare's 1200 requests / 5 min per user and 200 req/s per IP.
CLOUDFLARE_USER_BUDGET = env.int("CLOUDFLARE_USER_BUDGET", default=600)  # requests per window per user
CLOUDFLARE_USER_BUDGET_WINDOW = env.int("CLOUDFLARE_USER_BUDGET_WINDOW", default=300)  # seconds
CLOUDFLARE_GLOBAL_RATE = env.int("CLOUDFLARE_GLOBAL_RATE", default=100)  # requests per second, all workers
# Longest a refresh waits for a slot in the global cap before giving the grant back (seconds).
CLOUDFLARE_RATELIMIT_MAX_WAIT = env.float("CLOUDFLARE_RATELIMIT_MAX_WAIT", default=5.0)
# Where the shared counters live; empty = the Celery broker when it is redis://, else per process.
CLOUDFLARE_RATELIMIT_REDIS_URL = env.str("CLOUDFLARE_RATELIMIT_REDIS_URL", default="")
# Transient failures back off exponentially from BASE to MAX seconds (with jitter, >= Retry-After).
GRANT_RETRY_BASE = env.int("GRANT_RETRY_BASE", default=30)
GRANT_RETRY_MAX = env.int("GRANT_RETRY_MAX", default=900)
# After a refresh with no answer (timeout after sending), ask again this soon (seconds).
GRANT_UNCERTAIN_RETRY = env.int("GRANT_UNCERTAIN_RETRY", default=30)
# An unanswered refresh is resolved by evidence before anything is sent again: the old access token
# is probed once the request cannot still be running at Cloudflare (SETTLE seconds after it was found
# unanswered; Cloudflare's edge ends a request after 100 s). Refused: the refresh took effect, the
# grant is lost. Accepted: a refresh is safe. No evidence (the old access token expired, or the server
# keeps old access tokens alive): GRANT_UNCERTAIN_POLICY "hold" (default: never re-send; the grant is
# marked lost) or "resend" (re-send the old refresh token: saves the grant if the first request never
# arrived, and is a reuse, which kills the grant, if it did).
GRANT_UNCERTAIN_SETTLE = env.int("GRANT_UNCERTAIN_SETTLE", default=70)
GRANT_UNCERTAIN_POLICY = env.str("GRANT_UNCERTAIN_POLICY", default="hold")
# Whether the OAuth server revokes the previous access token when a refresh succeeds (Hydra does):
# only then is the old access token's answer evidence.
CLOUDFLARE_REFRESH_REVOKES_OLD_ACCESS = env.bool("CLOUDFLARE_REFRESH_REVOKES_OLD_ACCESS", default=True)
# Seconds a rotated refresh token is still accepted (unknown at Cloudflare: 0 = no grace). Within it,
# re-sending after an unanswered refresh is safe whatever happened.
CLOUDFLARE_REFRESH_GRACE_SECONDS = env.int("CLOUDFLARE_REFRESH_GRACE_SECONDS", default=0)
# New tokens received while the database is unreachable: the fenced write is retried for this many
# seconds (lease extended), then the tokens go to the encrypted spool, applied when it is back.
GRANT_WRITE_RETRY_SECONDS = env.int("GRANT_WRITE_RETRY_SECONDS", default=20)
# One incident alert instead of one per grant: when at least GRANT_INCIDENT_MIN_GRANTS grants of one
# OAuth app start failing within GRANT_INCIDENT_WINDOW seconds; per-grant "refresh failing" alerts
# are held that long and dropped if an incident covers them.
GRANT_INCIDENT_MIN_GRANTS = env.int("GRANT_INCIDENT_MIN_GRANTS", default=5)
GRANT_INCIDENT_WINDOW = env.int("GRANT_INCIDENT_WINDOW", default=300)
GRANT_INCIDENT_HOLD = env.int("GRANT_INCIDENT_HOLD", default=120)
# After Cloudflare refuses the app's credentials, pause that app's refreshes this long (seconds).
GRANT_CLIENT_CONFIG_BACKOFF = env.int("GRANT_CLIENT_CONFIG_BACKOFF", default=300)
# The sweeps: rows claimed per transaction, transactions per sweep, and how long a claimed row
# stays invisible to the next sweep (if its message is lost it is found again after this delay).
GRANT_SWEEP_BATCH = env.int("GRANT_SWEEP_BATCH", default=500)
# Seconds between beat's refresh sweeps (agencyportal/celery.py; 15 s: a grant freed by a dead
# worker's lease is found within seconds); refreshes due sooner than the next sweep get a follow-up
# sweep, at least GRANT_SWEEP_FOLLOWUP_MIN seconds apart.
GRANT_SWEEP_INTERVAL = env.int("GRANT_SWEEP_INTERVAL", default=15)
GRANT_SWEEP_FOLLOWUP_MIN = env.int("GRANT_SWEEP_FOLLOWUP_MIN", default=5)
GRANT_SWEEP_MAX_BATCHES = env.int("GRANT_SWEEP_MAX_BATCHES", default=40)
# Short (30 s): a message lost with a killed worker or a broker restart is re-sent within a minute;
# a duplicate costs one claim that finds the grant taken or fresh.
GRANT_DISPATCH_RETRY = env.int("GRANT_DISPATCH_RETRY", default=30)
# Token calls a worker process keeps in flight: a task claims grants of its message as places free
# up (one statement per refill), runs their calls concurrently (one thread per call, sharing the
# process's TLS context) and writes each result fenced; 1 sends one message per grant, one call at a
# time. Concurrent token calls per box: worker processes x GRANT_REFRESH_BATCH.
GRANT_REFRESH_BATCH = env.int("GRANT_REFRESH_BATCH", default=16)
# Grants per refresh message (0: 16 times GRANT_REFRESH_BATCH): the window refills from its own
# message, so a process does not wait for its slowest call before the next grants go out.
GRANT_REFRESH_PER_MESSAGE = env.int("GRANT_REFRESH_PER_MESSAGE", default=0)
# A sweep that finds fewer grants than fill its messages shares them over up to this many messages
# (of at least GRANT_REFRESH_BATCH grants each), so that several worker processes take part: set it
# to the worker processes of all boxes.
GRANT_REFRESH_SPREAD = env.int("GRANT_REFRESH_SPREAD", default=4)
# Health checks per task message, run at once in a per-process pool of threads (each with its own
# database connection: worker processes x GRANT_CHECK_BATCH connections at most); 1: one per message.
GRANT_CHECK_BATCH = env.int("GRANT_CHECK_BATCH", default=8)

# Bulk changes (changes/). An item's lease outlives the hard task time limit, so a second worker
# never runs an item while the first still may; a killed worker's item runs again (reading before
# writing) once the lease expires and the sweep finds it.
CHANGE_ITEM_LEASE = env.int("CHANGE_ITEM_LEASE", default=180)
# A queued item whose message has not been picked up after this long is dispatched again.
CHANGE_REDISPATCH_AFTER = env.int("CHANGE_REDISPATCH_AFTER", default=60)
# The most zones one bulk change covers.
CHANGE_MAX_ZONES = env.int("CHANGE_MAX_ZONES", default=2000)
# Alert delivery: attempts (with exponential backoff) before a channel is marked failed for good.
ALERT_DELIVERY_MAX_ATTEMPTS = env.int("ALERT_DELIVERY_MAX_ATTEMPTS", default=8)
ALERT_WEBHOOK_TIMEOUT = env.float("ALERT_WEBHOOK_TIMEOUT", default=10.0)

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery-broker"
    # Every folder the transport writes, the exchange tables ("control") included, lives under var/:
    # kombu's default for that one is a folder named "control" in the working directory.
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Visibility timeout far above the hard time limit, so Redis never redelivers a running task.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Refresh / revoke / check work: a task is acknowledged only when it finished, and a worker holds
# one message at a time, so a killed worker's task goes back to the queue instead of being lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A refresh (rate wait 5 s + probe 20 s + token call 35 s + write retries 20 s) < soft limit < hard
# limit << visibility timeout.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=100)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=130)
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", default=30.0)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Celery's Django fixup closes the database connection before and after every task unless this is
# set; agencyportal/celery.py closes them as Django's request cycle does instead (unusable or older
# than CONN_MAX_AGE), so a worker keeps one healthy connection across tasks.
CELERY_DB_REUSE_MAX = 10**9
# One queue by default; a separate name isolates a test run's workers from any other worker.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# Beat's schedule state file lives with the other runtime files.
CELERY_BEAT_SCHEDULE_FILENAME = env.str("CELERY_BEAT_SCHEDULE_FILENAME", default=str(VAR_DIR / "celerybeat-schedule"))

# Console output a task prints (the development email backend) is information, not a warning.
CELERY_WORKER_REDIRECT_STDOUTS_LEVEL = "INFO"

# --- Migration off API tokens (apitokens) -----------------------------------------------------
# Days the old token stays on standby after cutover (one-click rollback), then it is removed.
MIGRATION_ROLLBACK_WINDOW_DAYS = env.int("MIGRATION_ROLLBACK_WINDOW_DAYS", default=14)
# Days before the rollback window ends that staff get a reminder.
MIGRATION_REMINDER_DAYS = env.int("MIGRATION_REMINDER_DAYS", default=2)
# Seconds between re-verifications of every stored API token (expiry, revocation, reach).
API_TOKEN_VERIFY_INTERVAL = env.int("API_TOKEN_VERIFY_INTERVAL", default=24 * 3600)
# Verification runs: after disconnecting, probe the old tokens for this many seconds (the refresh
# window) before recording "access gone", pausing this many seconds between probes.
VERIFICATION_PROBE_WINDOW = env.int("VERIFICATION_PROBE_WINDOW", default=60)
VERIFICATION_PROBE_INTERVAL = env.float("VERIFICATION_PROBE_INTERVAL", default=5.0)

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# Quiet by default: the engine's own lines (refreshes, checks, alerts) and warnings. LOG_VERBOSE=True
# adds every task received / succeeded, beat's schedule lines and each sign-in's lockout bookkeeping.
LOG_VERBOSE = env.bool("LOG_VERBOSE", default=False)
_CHATTY = "INFO" if LOG_VERBOSE else "WARNING"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "agencyportal.logging.RedactSecretsFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]},
        # The development server's access log, through the same redaction: the OAuth callback's
        # query string carries `code` and `state`.
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # urllib3 logs request lines at DEBUG, with query strings: keep it at INFO.
        "urllib3": {"level": "INFO"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
        "axes": {"level": _CHATTY},
        "celery.app.trace": {"level": _CHATTY},
        "celery.worker.strategy": {"level": _CHATTY},
        "celery.beat": {"level": _CHATTY},
        # The MCP SDK logs every stateless request's start and end at INFO.
        "mcp": {"level": _CHATTY},
    },
}

# --- Agents: MCP server and its OAuth authorization server (agents/, docs/agents.md) -------------
# The MCP resource: tokens are bound to this exact URL (RFC 8707) and refused anywhere else. In
# production a proxy sends SITE_URL/mcp to the MCP process; `make run` serves it on its own port.
MCP_URL = env.str("MCP_URL", default=f"{SITE_URL}/mcp").rstrip("/")
# Largest JSON-RPC request body the MCP server reads (bytes).
MCP_MAX_BODY_BYTES = env.int("MCP_MAX_BODY_BYTES", default=256 * 1024)
# Tool calls per agent connection per minute (Cloudflare's own budgets apply on top).
AGENT_CALLS_PER_MINUTE = env.int("AGENT_CALLS_PER_MINUTE", default=60)
# Client ID Metadata Documents are fetched over https from public addresses only. Tests serve one
# on the loopback address (https, with their own CA): never on in production.
AGENT_METADATA_ALLOW_LOOPBACK = env.bool("AGENT_METADATA_ALLOW_LOOPBACK", default=False)
AGENT_METADATA_CA_BUNDLE = env.str("AGENT_METADATA_CA_BUNDLE", default="") or None
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER = {
    # One scope: "use the portal's MCP tools"; which tools is the consent's business (agents.models).
    "SCOPES": {"mcp": "Use the Agency Portal's tools through MCP"},
    "DEFAULT_SCOPES": ["mcp"],
    "OIDC_ISS_ENDPOINT": SITE_URL,
    # Authorization code + PKCE S256, nothing else.
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["none"],
    # RFC 9207: `iss` in every authorization response.
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    # Bearer tokens in the Authorization header only, never in a URL.
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    # Tokens are stored as their SHA-256 only.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("AGENT_ACCESS_TOKEN_SECONDS", default=600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("AGENT_REFRESH_TOKEN_SECONDS", default=30 * 24 * 3600),
    # Single-use refresh tokens; a reused one revokes its family (and agents.views the connection).
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    # Native clients redirect to a loopback port of their choosing (RFC 8252).
    "ALLOW_LOCALHOST_LOOPBACK": True,
    "REQUEST_APPROVAL_PROMPT": "force",
    # Client ID Metadata Documents, and RFC 7591 registration for older clients (public clients only).
    "CIMD_ENABLED": True,
    "CIMD_METADATA_FETCHER": "agents.metadata.MetadataFetcher",
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
}
# django-oauth-toolkit warns that http redirect URIs are allowed: they must be, for native MCP clients'
# loopback callbacks (RFC 8252). The portal accepts http only on loopback addresses (agents/metadata.py:
# `redirect_uri_ok`, checked at registration and at consent), everything else must be https.
SILENCED_SYSTEM_CHECKS = ["oauth2_provider.W008"]
