"""What a backend's probe (compat's live check of a model against an installed engine) answers, and
the helpers every probe shares to read an engine's error. Build side; no engine imported here."""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Probe:
    """What an engine did with the model: ok, or the ops it named and why it failed."""

    ok: bool
    ops: list[str] = field(default_factory=list)
    reason: str = ""


def op_name(domain: str, op: str) -> str:
    """An op as the compat report spells it: 'Op' in the default domain (''), else 'domain:Op'."""
    return f"{domain}:{op}" if domain else op


def engine_label(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist} {version(dist)}"
    except PackageNotFoundError:
        return dist


def report_names(names, ops: set) -> list[str]:
    """Engine-reported op names (maybe 'domain.Op' or 'Op-17') as the report spells them."""
    out = set()
    for raw in names:
        token = re.sub(r"-\d+$", "", raw.strip())
        match = [op_name(d, op) for d, op in ops if op == token or f"{d}.{op}" == token or f"{d}:{op}" == token]
        out.update(match or [token])
    return sorted(out)


def key_line(message: str) -> str:
    """The telling line of an engine's error message, without source paths and C++ signatures."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    line = lines[-1] if lines else message
    line = re.sub(r"^.*\.(?:cc|cpp|h):\d+ \S+\(.*?\) ", "", line)
    return line if len(line) <= 200 else line[:197] + "..."
