"""The runyard runtime: actors on an asyncio loop, one supervisor per run.

Nothing in this package speaks HTTP or touches a database: the web layer and
the persistence layer talk to it only through the messages in
:mod:`actors.messages`.
"""
