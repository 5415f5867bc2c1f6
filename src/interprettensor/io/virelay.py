"""Deprecated: the ViRelAy project export moved beside SpRAy, to
:mod:`interprettensor.analysis.spray.virelay` (``from interprettensor.analysis.spray.virelay import
export_virelay``). This alias re-exports its names and warns once on import; it is the one module of
:mod:`interprettensor.io` that imports :mod:`interprettensor.analysis` (tests/test_layout.py names it)."""

from __future__ import annotations

import warnings
from typing import Any

from ..analysis.spray import virelay as _virelay
from ..analysis.spray.virelay import (LABEL_MAP_FILE, PROJECT_FILE, STRATEGIES, category_name,  # noqa: F401
                                      export_virelay)

__all__ = ["export_virelay", "PROJECT_FILE", "LABEL_MAP_FILE", "STRATEGIES"]

warnings.warn("interprettensor.io.virelay is deprecated: import export_virelay from "
              "interprettensor.analysis.spray.virelay", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    """The export module's other names (its helpers), as the old module had them."""
    return getattr(_virelay, name)
