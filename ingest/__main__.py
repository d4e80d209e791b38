"""Run the ingest service: `python -m ingest` (settings from the environment, see settings.py)."""

import logging
import ssl
import sys

from aiohttp import web

from ingest.app import SERVER_OPTIONS, create_app
from ingest.settings import Settings, SettingsError

# Swarm's default stop grace period is 10 s; in-flight batches get most of it.
SHUTDOWN_TIMEOUT_S = 8


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"ingest: bad setting: {e}", file=sys.stderr)
        return 2
    context = None
    if settings.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    web.run_app(create_app(settings), port=settings.port, ssl_context=context,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None, print=None, **SERVER_OPTIONS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
