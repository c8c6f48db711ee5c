"""One bot instance on the PostgreSQL store, as `mailbot run` runs it, for the failover tests and bench to
SIGKILL: the service under the mailbox's lease until SIGTERM.

    MAILBOT_DATABASE_URL=… python tests/lease_worker.py CONFIG [--now ISO]

It builds the store and the service itself (the CLI's `run` also takes the state folder's writer lock, which
two instances on one machine must not share).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mailbot.config import load  # noqa: E402
from mailbot.runner import run_forever  # noqa: E402
from mailbot.store.postgresql.engine import PostgresStore  # noqa: E402
from mailbot.wiring import make_service  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--now", type=datetime.fromisoformat, default=None)
    args = parser.parse_args()
    settings = load(args.config)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {settings.bot.instance_name} %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    store = PostgresStore(os.environ[settings.store.dsn_env])
    service = make_service(settings, store)
    try:
        return run_forever(service, settings, fixed_now=args.now)
    finally:
        service.close()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
