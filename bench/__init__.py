"""Reproducible benchmarks: runyard against a pure-asyncio baseline, side by side.

``make bench`` (``python -m bench``); see ``docs/performance.md``.
"""
