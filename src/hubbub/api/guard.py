"""What a state-changing HTTP request must look like, so that no web page can forge one.

A browser sends a cross-site POST without asking the server first (a CORS "simple request")
only when its ``Content-Type`` is ``text/plain``, ``application/x-www-form-urlencoded`` or
``multipart/form-data``, or when it has none; any other type, ``application/json`` included,
needs a preflight, which hubbub never grants. So a POST is accepted when:

* its ``Content-Type`` is ``application/json`` (parameters such as ``charset`` allowed), or
* its ``Origin`` is allowed by ``client.allowed_origins`` (the rule of the WebSocket
  handshake: the listed origins, or the server's own host when the list is empty), or
* it has neither ``Content-Type`` nor ``Origin``: a program, since browsers send ``Origin``
  with every POST.

Anything else is refused with 415, whatever the API key or development mode says: a page the
developer visits must not be able to publish through a key-less API on localhost.
"""

from __future__ import annotations

from starlette.datastructures import Headers

from hubbub.transports.admission import origin_allowed

JSON_MEDIA_TYPE = "application/json"


def media_type(headers: Headers) -> str:
    """The request's media type, lower case, without parameters ("" when there is none)."""
    return headers.get("content-type", "").partition(";")[0].strip().lower()


def forged_post_refusal(headers: Headers, allowed_origins: list[str]) -> str | None:
    """Why a POST with these headers is refused (a one-line explanation), or None to accept.

    Args:
        headers: the request's headers.
        allowed_origins: ``client.allowed_origins``.
    """
    kind = media_type(headers)
    if kind == JSON_MEDIA_TYPE:
        return None
    origin = headers.get("origin", "")
    if origin:
        if origin_allowed(origin, headers.get("host", ""), allowed_origins):
            return None
        return (
            f"origin {origin!r} is not in client.allowed_origins: send the body as "
            f"Content-Type: {JSON_MEDIA_TYPE}"
        )
    if not kind:
        return None
    return f"unsupported Content-Type {kind!r}: send the body as Content-Type: {JSON_MEDIA_TYPE}"
