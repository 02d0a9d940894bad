"""Start one simulator: ``python -m simulators.run psa --port 18101 --dsn postgresql://...``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from simulators import PORTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(PORTS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--dsn", help="PostgreSQL for simulator state (default: $SIM_DSN)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.dsn:
        os.environ["SIM_DSN"] = args.dsn
    import uvicorn

    module = importlib.import_module(f"simulators.{args.name}.app")
    uvicorn.run(
        module.create(),
        host=args.host,
        port=args.port or PORTS[args.name],
        log_level=args.log_level,
        access_log=False,
        timeout_keep_alive=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
