"""Quiet third-party build tools: quantizers print progress to stdout and warnings through the root
logger; `--json` output must stay clean, and our own progress lines say what is happening."""
from __future__ import annotations

import contextlib
import io
import logging


@contextlib.contextmanager
def quiet_build_tools():
    """Quantizers print progress to stdout and warnings through the root logger; `--json` output
    must stay clean, and our own progress lines say what is happening."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)
