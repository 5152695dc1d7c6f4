"""The real stock_datasource snapshot for tests: its source, and a virtualenv with what
its plugin manager and TuShare plugins import, at the versions its ``uv.lock`` pins.

The snapshot (``../shared/thirdparty/stock_datasource-*.tar.gz`` beside the checkout) is
used unmodified: :func:`extract` unpacks it into a directory the caller owns.  The
virtualenv is built once per lock and stockq dependency list, under
``$STOCKQ_TEST_CACHE`` (default ``~/.cache/stockq-tests``), and reused by later runs:

* the snapshot's packages: :data:`ROOTS` and everything they need, each pinned as in
  ``uv.lock`` (markers for other platforms dropped);
* stockq's runtime dependencies from ``pyproject.toml`` (not the embedded engine: a
  worker from this environment writes to a ClickHouse server, if at all).

Neither stockq nor the snapshot is installed into it: processes started from it get
both on ``PYTHONPATH`` (:func:`pythonpath`), so they always run the checkout's code.
``yfinance`` is deliberately left out: the snapshot's ``tushare_hk_daily`` imports it at
module level, so that plugin stays a real example of a module that fails to import.

Run ``python -m tests.sds_env`` to build (or find) the environment and print its path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_NAME = "stock_datasource-f180446"


def _thirdparty() -> Path:
    """Where the snapshot lies: $STOCKQ_THIRDPARTY, else ``shared/thirdparty`` beside the
    checkout, else the workplace's ``/work/shared/thirdparty`` (a clone elsewhere)."""
    candidates = [Path(p) for p in (os.environ.get("STOCKQ_THIRDPARTY", ""),) if p]
    candidates += [ROOT.parent / "shared" / "thirdparty", Path("/work/shared/thirdparty")]
    for place in candidates:
        if (place / f"{SNAPSHOT_NAME}.tar.gz").is_file():
            return place
    return candidates[0]  # the tests then fail naming where they looked


THIRDPARTY = _thirdparty()
SNAPSHOT = THIRDPARTY / f"{SNAPSHOT_NAME}.tar.gz"

#: what ``core.plugin_manager``, ``core.base_plugin``, ``config.settings``,
#: ``models.database`` and the TuShare plugins import (``pytz``: the ClickHouse client;
#: ``fastapi``: the QMT data source that ``tushare_daily`` and ``tushare_stk_mins`` load)
ROOTS = ("tushare", "pandas", "numpy", "clickhouse-driver", "tenacity", "loguru",
         "pydantic", "pydantic-settings", "python-dotenv", "requests", "pytz", "fastapi")
LEFT_OUT = ("chdb-core",)  # stockq dependencies a worker here does not need
_OTHER_PLATFORMS = ("win32", "Windows", "darwin", "Darwin")
_READY = ".ready"


def _lock_text() -> str:
    with tarfile.open(SNAPSHOT) as tar:
        member = tar.extractfile(f"{SNAPSHOT_NAME}/uv.lock")
        if member is None:
            raise FileNotFoundError(f"{SNAPSHOT} has no uv.lock")
        return member.read().decode("utf-8")


def pins(lock_text: str | None = None) -> list[str]:
    """``name==version`` of :data:`ROOTS` and their dependencies, from ``uv.lock``."""
    lock = tomllib.loads(lock_text if lock_text is not None else _lock_text())
    packages: dict[str, dict[str, Any]] = {}
    for package in lock["package"]:
        packages.setdefault(package["name"], package)
    found: dict[str, str] = {}

    def walk(name: str) -> None:
        if name in found:
            return
        package = packages[name]
        found[name] = package["version"]
        for dep in package.get("dependencies", []):
            marker = str(dep.get("marker", ""))
            if not any(word in marker for word in _OTHER_PLATFORMS):
                walk(dep["name"])

    for root in ROOTS:
        walk(root)
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def stockq_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [req for req in project["project"]["dependencies"]
            if not any(req.startswith(name) for name in LEFT_OUT)]


def cache_root() -> Path:
    configured = os.environ.get("STOCKQ_TEST_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "stockq-tests"
    base.mkdir(parents=True, exist_ok=True)
    return base


def requirements() -> list[str]:
    return [*pins(), *stockq_requirements()]


def venv_path() -> Path:
    digest = hashlib.sha256("\n".join(
        [sys.version.split()[0], *requirements()]).encode()).hexdigest()[:16]
    return cache_root() / f"sds-venv-{digest}"


def ensure_venv() -> Path:
    """The environment's directory, built now when no earlier run left it ready."""
    path = venv_path()
    if (path / _READY).exists():
        return path
    with open(cache_root() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        if (path / _READY).exists():
            return path
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)],
                       check=True)
        listed = path / "requirements.txt"
        listed.write_text("\n".join(requirements()) + "\n", encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
             "--disable-pip-version-check", "--quiet", "--no-input", "-r", str(listed)],
            capture_output=True, text=True)
        noise = "WARNING: Location"  # this machine's pip configuration, not an error
        sys.stderr.write("".join(line for line in done.stderr.splitlines(keepends=True)
                                 if not line.startswith(noise)))
        done.check_returncode()
        (path / _READY).write_text("ok\n", encoding="utf-8")
    return path


def python(venv: Path) -> Path:
    return venv / "bin" / "python"


def extract(dest: Path) -> Path:
    """Unpack the snapshot under ``dest``; returns its ``src`` directory."""
    with tarfile.open(SNAPSHOT) as tar:
        tar.extractall(dest, filter="data")
    return dest / SNAPSHOT_NAME / "src"


def pythonpath(snapshot_src: Path) -> str:
    """``PYTHONPATH`` for a process of the environment: the checkout, then the snapshot."""
    return os.pathsep.join([str(ROOT), str(snapshot_src)])


if __name__ == "__main__":
    print(ensure_venv())
