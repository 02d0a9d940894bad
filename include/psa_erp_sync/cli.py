"""The ``psa-erp-sync`` command: operations a platform engineer runs where the package is installed.

    psa-erp-sync env check        the selected environment exists and Airflow's OpenLineage settings match it
    psa-erp-sync env show         the environment, and the AIRFLOW__* variables it fixes (``export`` lines)
    psa-erp-sync migrate ...      apply the ODS migrations (``python -m psa_erp_sync.ods.migrate``)
    psa-erp-sync trace ...        the path of one record (``python -m psa_erp_sync.trace``)
    psa-erp-sync post ...         post one ERP record type outside Airflow (``python -m psa_erp_sync.posting``)

The environment is selected with ``PSA_ERP_SYNC_ENV`` (``config/environments/<name>.yaml``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psa_erp_sync.config import Environment


def _load_environment(name: str | None) -> Environment | None:
    """The named (or selected) environment; None, with the reason on stderr, when it cannot be loaded."""
    from psa_erp_sync.config import EnvironmentConfigError, load_environment

    try:
        return load_environment(name)
    except EnvironmentConfigError as exc:
        print(f"psa-erp-sync: {exc}", file=sys.stderr)
        return None


def _env_check(args: argparse.Namespace) -> int:
    from psa_erp_sync.config import environment_mismatches

    environment = _load_environment(args.name)
    if environment is None:
        return 2
    if args.airflow:
        from airflow.configuration import conf

        problems = environment_mismatches(
            environment,
            transport=conf.get("openlineage", "transport", fallback="") or None,
            namespace=conf.get("openlineage", "namespace", fallback=None),
        )
        for problem in problems:
            print(f"psa-erp-sync: {problem}", file=sys.stderr)
        if problems:
            return 1
    print(f"environment {environment.name}: ok")
    return 0


def _env_show(args: argparse.Namespace) -> int:
    from psa_erp_sync.config import airflow_environment_variables

    environment = _load_environment(args.name)
    if environment is None:
        return 2
    print(f"# environment {environment.name}: {environment.model_dump_json(exclude={'name'})}")
    for key, value in airflow_environment_variables(environment).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Delegated commands keep their own options and help.
    delegated = {
        "migrate": "psa_erp_sync.ods.migrate",
        "trace": "psa_erp_sync.trace.__main__",
        "post": "psa_erp_sync.posting.__main__",
    }
    if argv and argv[0] in delegated:
        import importlib

        module = importlib.import_module(delegated[argv[0]])
        return int(module.main(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="psa-erp-sync", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{env,migrate,trace,post}")
    env = commands.add_parser("env", help="the deployment environment").add_subparsers(
        dest="action", required=True
    )
    check = env.add_parser("check", help="fail unless the environment exists (and Airflow matches it)")
    check.add_argument("--name", help="environment name (default: $PSA_ERP_SYNC_ENV)")
    check.add_argument(
        "--airflow", action="store_true", help="also compare Airflow's [openlineage] settings with the file"
    )
    check.set_defaults(func=_env_check)
    show = env.add_parser("show", help="print the environment and the AIRFLOW__* variables it fixes")
    show.add_argument("--name", help="environment name (default: $PSA_ERP_SYNC_ENV)")
    show.set_defaults(func=_env_show)
    for name in delegated:
        commands.add_parser(name, help=f"see: psa-erp-sync {name} --help")
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
