"""Settings of the example shop: SQLite, the ``django://`` transport, results in the database.

Everything runs on one SQLite file with no services: the web process inserts task messages into
the same database (inside the view's transaction), and ``tqworker`` claims them from there.
Environment variables, for the test suite and for trying things out:

* ``EXAMPLE_DB`` — path of the SQLite file (default ``example_project/db.sqlite3``)
* ``EXAMPLE_STEP_SECONDS`` — how long each step of the demo charge takes (default 0.8)
* ``EXAMPLE_DEBUG`` — ``0`` turns DEBUG off
"""

import os
from pathlib import Path

from django_tq import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

# A development key for a demo that listens on 127.0.0.1 only. Never deploy with it.
SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "django-insecure-django_tq-example-project")
DEBUG = os.environ.get("EXAMPLE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_tq",
    "orders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",  # the admin in the browser's language
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB") or BASE_DIR / "db.sqlite3",
        # WAL lets the worker read while the web writes; IMMEDIATE takes the write lock when a
        # transaction starts, so two writers queue up (for `timeout` seconds) instead of failing
        # with "database is locked" half-way through.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
# django_tq ships English and Simplified Chinese; the browser's language (or the
# ``django_language`` cookie) picks one.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

# Receipts are "sent" to the worker's terminal.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "shop@example.com"

# django_tq: the queue lives in this project's database. Results go to the TaskResult table
# (the default RESULT_BACKEND, "django-db"); see docs/settings.md for every other key.
# BEAT_SCHEDULE declares periodic tasks in code; `tqbeat` syncs them into the database at start,
# where the admin shows them (Task queue > Periodic tasks) next to those created there.
TQ = {
    "BROKER_URL": "django://",
    "BEAT_SCHEDULE": {
        "sales-report": {
            "task": "orders.tasks.rebuild_report",
            "schedule": crontab(minute="*"),
            "description": "Rebuild the sales report every minute.",
        },
        "nightly-sales-report": {
            "task": "orders.tasks.rebuild_report",
            "schedule": crontab(minute=0, hour=3, timezone="Europe/Paris"),
            "misfire_policy": "skip",
            "description": "The 03:00 (Paris) report; skipped if beat was down at the time.",
        },
    },
}

# How long each step of the demo charge takes, so progress is visible in the browser.
ORDERS_STEP_SECONDS = float(os.environ.get("EXAMPLE_STEP_SECONDS", "0.8"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[%(asctime)s %(levelname)s %(name)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_tq": {"handlers": ["console"], "level": "INFO"},
        "orders": {"handlers": ["console"], "level": "INFO"},
    },
}
