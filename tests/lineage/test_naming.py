"""Dataset namespaces of HTTP systems: ``scheme://host[:port]`` only, never user info (issue 13.11)."""

from __future__ import annotations

import pytest

from psa_erp_sync.lineage import naming


@pytest.mark.parametrize(
    ("url", "namespace"),
    [
        ("https://user:pw@api.example.com", "https://api.example.com"),
        ("https://user:p%40ss@api.example.com:8443/v2/base", "https://api.example.com:8443"),
        ("http://token@127.0.0.1:18101", "http://127.0.0.1:18101"),
        ("http://u:pw@[::1]:8080/x", "http://[::1]:8080"),
        ("HTTPS://API.Example.com", "https://api.example.com"),
        ("https://api.example.com", "https://api.example.com"),
    ],
)
def test_http_namespace_never_carries_user_info(url: str, namespace: str) -> None:
    assert naming.http_namespace(url) == namespace
