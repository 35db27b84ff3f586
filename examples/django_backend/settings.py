"""Django settings of the example backend: sessions and authentication, SQLite.

The database lives in ``EXAMPLE_DB_DIR`` (a new temporary directory when unset), so the
example never writes into the checkout. ``SECRET_KEY`` comes from ``DJANGO_SECRET_KEY``; the
fallback is for running the example on your machine only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret-" + "x" * 32)
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "examples.django_backend.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
ASGI_APPLICATION = "examples.django_backend.asgi.application"

_db_dir = os.environ.get("EXAMPLE_DB_DIR") or tempfile.mkdtemp(prefix="hubbub-django-")
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": Path(_db_dir) / "db.sqlite3"}
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True

LOGIN_REDIRECT_URL = "/"
PASSWORD_HASHERS = [  # the default (PBKDF2) is right for production; this keeps the demo quick
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
