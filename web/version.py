"""The running package's version, as installed (``importlib.metadata``).

One source for ``/healthz``, the OpenAPI document and ``runyard_info``: the
version in ``pyproject.toml`` reaches all three through the installed
package's metadata, so none of them can drift from what is deployed.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "runyard"


@cache
def package_version() -> str:
    """The installed distribution's version; ``0+unknown`` when run from a bare checkout."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
