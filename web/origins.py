"""What an origin is, written one way: ``scheme://host[:port]``.

Browsers write ``Origin`` in this form; ``RUNYARD_PUBLIC_ORIGIN`` and the
origin rebuilt from ``Host`` / ``X-Forwarded-*`` are brought to it so the
cross-site guard (:mod:`runyard.web.same_origin`) compares like with like.  Kept
apart from the guard because settings validation needs it too, and the
guard's module imports the error shape, which imports the settings.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]``, lowercase, default port dropped; ``None`` if ``text`` is not one.

    Accepts exactly an http(s) origin, optionally with a trailing ``/``; a
    path, query, fragment or credentials make it ``None`` (so a ``Host``
    header carrying a path cannot pass for an origin).
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port  # ValueError if out of range or not a number
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6, as browsers write it in Origin
    shown_port = "" if port is None or port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{shown_port}"
