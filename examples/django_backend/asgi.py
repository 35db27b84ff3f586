"""The ASGI application: ``uvicorn examples.django_backend.asgi:application --port 9000``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_backend.settings")
application = get_asgi_application()
