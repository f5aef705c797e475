"""What the benchmarks share: the shop example's stream generator."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_generator() -> ModuleType:
    """examples/shop/generate.py, imported by path (examples/ is not a package)."""
    path = ROOT / "examples" / "shop" / "generate.py"
    spec = importlib.util.spec_from_file_location("shop_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
