"""A fake TuShare Pro HTTP server with deterministic data, for tests and the demo.

    python ops/fake_tushare.py --host 127.0.0.1 --port 0 [--token T] [--page-limit N]

The server itself is :mod:`plugins_bridge.tushare.fake_server` (installed with the
package, so ``stockq run --demo`` can start it in-process)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins_bridge.tushare.fake_server import FakeTushare, main

__all__ = ["FakeTushare", "main"]

if __name__ == "__main__":
    main()
