"""The HTTP face of runyard: FastAPI routes that translate requests into actor messages."""
