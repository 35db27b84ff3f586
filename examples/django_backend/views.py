"""Django views answering hubbub's proxy requests (the Centrifugo v6 proxy format, so the same
views serve Centrifugo unchanged).

* ``connect``: hubbub forwards the browser's ``Cookie`` header of the WebSocket handshake
  (``http_headers = ["Cookie"]`` in ``proxy.toml``), so Django's session middleware finds the
  logged-in user as for any page. A logged-in user becomes the connection's user (its primary
  key); anyone else is disconnected with 4501 (terminal: the client does not reconnect).
* ``subscribe`` and ``publish``: channels ``team:<group>`` are for the members of the Django
  group ``<group>`` (superusers: every team); a publication must be ``{"text": "..."}`` and is
  rewritten to carry its author, so no one can publish as someone else.
* ``rpc``: method ``whoami`` answers who the connection is, in Django's terms.

The proxy requests carry the connection's user in ``user`` (set by the connect answer); these
views trust it because only hubbub calls them: serve them on an address that browsers cannot
reach (or check a shared secret sent with ``http.static_headers``). They are exempt from CSRF
for the same reason: the caller is hubbub, not a browser form.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

TEAM_NAMESPACE = "team:"
MAX_TEXT = 1000

Reply = dict[str, Any]
View = Callable[[HttpRequest], HttpResponse]


def proxy_view(handler: Callable[[HttpRequest, Reply], Reply]) -> View:
    """A POST-only, CSRF-exempt view that decodes the proxy request's JSON body, calls
    ``handler(request, body)`` and answers its reply as JSON (HTTP 200, as the proxy expects).
    A body that is not a JSON object is a 400: hubbub treats it as a backend failure."""

    @csrf_exempt
    @require_POST
    def view(request: HttpRequest) -> HttpResponse:
        try:
            body = json.loads(request.body)
        except ValueError:
            return HttpResponse("the body is not JSON", status=400)
        if not isinstance(body, dict):
            return HttpResponse("the body is not a JSON object", status=400)
        return JsonResponse(handler(request, body))

    view.__name__ = handler.__name__
    view.__doc__ = handler.__doc__
    return view


def error(code: int, message: str) -> Reply:
    """An error reply for the command (custom codes are 400-1999)."""
    return {"error": {"code": code, "message": message}}


def user_of(body: Reply) -> AbstractBaseUser | None:
    """The active Django user the proxy request is for (``user`` holds its primary key)."""
    user_id = body.get("user")
    if not isinstance(user_id, str) or not user_id.isdigit():
        return None
    return get_user_model().objects.filter(pk=int(user_id), is_active=True).first()


def may_use_team(user: AbstractBaseUser, channel: object) -> bool:
    """The permission rule: ``team:<group>`` is open to the group's members and superusers."""
    if not isinstance(channel, str) or not channel.startswith(TEAM_NAMESPACE):
        return False
    group = channel.removeprefix(TEAM_NAMESPACE)
    if getattr(user, "is_superuser", False):
        return True
    return bool(group) and user.groups.filter(name=group).exists()


def home(request: HttpRequest) -> HttpResponse:
    """Who is logged in (a page to check the session in a browser)."""
    name = request.user.get_username() if request.user.is_authenticated else "nobody"
    return HttpResponse(f"logged in as {name}\n", content_type="text/plain")


@proxy_view
def connect(request: HttpRequest, body: Reply) -> Reply:
    """The connect proxy: the session's user, or a terminal disconnect."""
    user = request.user
    if not user.is_authenticated:
        return {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    return {"result": {"user": str(user.pk), "info": {"username": user.get_username()}}}


@proxy_view
def subscribe(request: HttpRequest, body: Reply) -> Reply:
    """The subscribe proxy: members of the team only."""
    user = user_of(body)
    if user is None or not may_use_team(user, body.get("channel")):
        return error(403, "permission denied")
    return {"result": {}}


@proxy_view
def publish(request: HttpRequest, body: Reply) -> Reply:
    """The publish proxy: members of the team only, ``{"text": "..."}`` only, signed with the
    author's name (the published data replaces what the client sent)."""
    user = user_of(body)
    if user is None or not may_use_team(user, body.get("channel")):
        return error(403, "permission denied")
    data = body.get("data")
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return error(400, f"publish {{'text': '...'}} of 1 to {MAX_TEXT} characters")
    return {"result": {"data": {"text": text.strip(), "by": user.get_username()}}}


@proxy_view
def rpc(request: HttpRequest, body: Reply) -> Reply:
    """The RPC proxy: ``whoami``; any other method is an error 404."""
    user = user_of(body)
    if body.get("method") != "whoami":
        return error(404, "unknown method")
    if user is None:
        return error(403, "permission denied")
    groups = sorted(user.groups.values_list("name", flat=True))
    return {
        "result": {
            "data": {"user": str(user.pk), "username": user.get_username(), "groups": groups}
        }
    }
