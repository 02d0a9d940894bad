"""The ingress stays split (issue 17): no function over 80 lines, and the names other code imports
from ``psa_erp_sync.api.ingress`` are still there after the split into a package."""

from __future__ import annotations

import ast
from pathlib import Path

from psa_erp_sync.api import ingress

PACKAGE = Path(ingress.__file__).parent
MAX_FUNCTION_LINES = 80


def _function_lengths(path: Path) -> dict[str, int]:
    tree = ast.parse(path.read_text())
    return {
        f"{path.name}:{node.lineno} {node.name}": (node.end_lineno or node.lineno) - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_no_function_of_the_ingress_is_over_80_lines() -> None:
    lengths: dict[str, int] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        lengths.update(_function_lengths(path))
    assert len(lengths) > 20, lengths  # the package was read, not an empty glob
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, too_long


def test_the_former_module_names_are_importable_from_the_package() -> None:
    for name in (
        "create_app",
        "ingress_conn_id",
        "open_pool",
        "InboxWriter",
        "Secrets",
        "SecretUnavailable",
        "SecretMisconfigured",
        "secrets_from_airflow",
        "signature_of",
        "verify",
        "ErpEvent",
        "PsaEvent",
        "PSA_EVENTS",
        "ERP_EVENTS",
        "MAX_BODY_BYTES",
        "POOL_TIMEOUT_S",
        "POOL_MAX_SIZE",
        "CONNECT_TIMEOUT_S",
        "STATEMENT_TIMEOUT_MS",
        "RETRY_AFTER_S",
        "EXCEPTION_DOMAIN",
    ):
        assert hasattr(ingress, name), name
    # The secret cache reads its tunable from signing; the package does not offer a dead copy.
    assert not hasattr(ingress, "SECRET_CACHE_S")
    assert hasattr(ingress.signing, "SECRET_CACHE_S")
