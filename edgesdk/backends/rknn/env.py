"""Where the RKNN converter's own environment is: the platforms it builds for and its python. Shared by
the backend (__init__) and the converter, which never import each other's module."""
from __future__ import annotations

import os
from pathlib import Path

# target_platform values of rknn-toolkit2 2.5.0 that have an NPU of this family (the RV110x/RV1126B
# microcontroller-class chips take other models and are left out)
PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")
SETUP_COMMAND = "tools/rknn_env.sh"
MISSING = (f"the RKNN converter's environment is missing: run `{SETUP_COMMAND}` (or `make rknn-env`) to create it "
           "under ~/.cache/edgesdk/rknn, or point EDGESDK_RKNN_PYTHON at a python that has rknn-toolkit2")


def rknn_python() -> Path | None:
    """The python of the rknn-toolkit2 environment: $EDGESDK_RKNN_PYTHON, else the one tools/rknn_env.sh
    made ($EDGESDK_CACHE/rknn/current, only once complete)."""
    given = os.environ.get("EDGESDK_RKNN_PYTHON")
    if given:
        return Path(given) if Path(given).is_file() else None
    root = Path(os.environ.get("EDGESDK_CACHE") or "~/.cache/edgesdk").expanduser() / "rknn" / "current"
    python = root / "bin" / "python"
    return python if (root / ".complete").is_file() and python.is_file() else None
