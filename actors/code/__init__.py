"""run-code: submitted agent code, run in a child process per run.

One concept per module:

- :mod:`runyard.actors.code.validate`: submit-time checks (``compile()`` and ``ast``
  only; the server never executes submitted code);
- :mod:`runyard.actors.code.protocol`: the frames between the server and a child;
- :mod:`runyard.actors.code.child`: the child's ``main()`` (the submitted code's ``ctx``,
  captured ``print``/``logging``, limits);
- :mod:`runyard.actors.code.agent`: the in-server side, an ordinary agent that spawns
  and supervises the child, so the run actor treats it like any other.

This package's ``__init__`` stays empty on purpose: the child imports
:mod:`runyard.actors.code.child` and must not pay for (or see) the server's modules.
"""
