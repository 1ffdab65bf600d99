"""runyard: durable, reconnectable agent runs.

One import package for the whole distribution, so that installing runyard
adds a single top-level name (``runyard``) and none as generic as ``web``.
Its three rooms are subpackages (docs/design.md, "The rooms"); in the
repository they stay top-level folders, linked in here:

- :mod:`runyard.actors`: the runtime, to embed it in a Python service
  (``from runyard.actors import Runtime, StartRun``; docs/internals.md);
- :mod:`runyard.client`: the HTTP client, to talk to a running server;
- :mod:`runyard.web`: the server itself (``runyard serve``);
- :mod:`runyard.persistence`: the stores.

Nothing else is imported here: a run-code child imports
:mod:`runyard.actors.code.child` through this package and must pay for none
of the server's modules.
"""

__version__ = "0.1.0"
"""The distribution's version; pyproject.toml reads it from here."""
