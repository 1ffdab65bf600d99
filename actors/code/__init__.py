"""run-code: submitted agent code, run in a child process per run.

One concept per module:

- :mod:`actors.code.validate`: submit-time checks (``compile()`` and ``ast``
  only; the server never executes submitted code);
- :mod:`actors.code.protocol`: the frames between the server and a child;
- :mod:`actors.code.child`: the child's ``main()`` (the submitted code's ``ctx``,
  captured ``print``/``logging``, limits);
- :mod:`actors.code.agent`: the in-server side, an ordinary agent that spawns
  and supervises the child, so the run actor treats it like any other.

This package's ``__init__`` stays empty on purpose: the child imports
:mod:`actors.code.child` and must not pay for (or see) the server's modules.
"""
