"""The HTTP client for talking to a runyard server: ``runyard.client.Client``
(sync) and ``AsyncClient``, their typed errors and the models they return.

Its public name, so that a service writes ``from runyard.client import Client``
without knowing that the client lives with the server's code in
:mod:`runyard.web.client` (docs/client.md).
"""

from runyard.web.client import *  # noqa: F403
from runyard.web.client import __all__ as __all__
