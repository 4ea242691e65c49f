"""The HTTP layer under every client; clients import it through ``providers/http.py``."""
