"""What jsonb cannot hold, kept as text: the one rule staging, the inbox and the stream share."""

from __future__ import annotations

import re

# A JSON \u0000 escape that is not itself escaped (preceded by an even number of backslashes).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def escape_nul(payload: bytes) -> bytes:
    """JSON text with every ``\\u0000`` escape kept as the literal text ``\\u0000`` (jsonb cannot
    hold U+0000): a record that carries one is stored rather than failing its whole statement."""
    if b"\\u0000" in payload:
        return _NUL_ESCAPE.sub(rb"\1\\\\u0000", payload)
    return payload
