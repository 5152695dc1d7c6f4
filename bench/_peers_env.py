"""The peer comparison's environments: the peers' venvs (pinned, cached), a venv that
runs another checkout of stockq (for before/after runs), and the machine's facts."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# The peers as the comparison installs them: one venv for all but arq (arq pins an
# older redis client), the same redis-py and hiredis as stockq's own venv.
PEER_PINS: tuple[str, ...] = (
    "rq==2.12.0",
    "dramatiq[redis]==2.2.1",
    "celery[redis]==5.7.0",
    "huey==3.5.4",
    "saq[redis,hiredis]==0.26.4",
    "redis[hiredis]==7.4.1",
    "hiredis==3.5.0",
)
ARQ_PINS: tuple[str, ...] = ("arq==0.28.0", "hiredis==3.5.0")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stockq" / "peerbench"


def _base_python() -> str:
    """The interpreter the project's venv was made from (peers get the same one)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return base if os.path.exists(base) else sys.executable


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venv(cache: Path, name: str, pins: tuple[str, ...]) -> Path:
    """A venv under ``cache`` with exactly ``pins`` installed, made once and reused (its
    name carries a digest of the pins and the Python version); ``freeze.txt`` in it
    records every distribution it holds."""
    key = hashlib.sha1("\n".join((platform.python_version(), *pins)).encode()).hexdigest()[:10]
    venv = cache / f"{name}-{key}"
    done = venv / "freeze.txt"
    if done.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"peers: creating {venv} ({' '.join(pins)})", flush=True)
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    pip = [str(_venv_python(venv)), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", *pins], check=True)
    freeze = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True)
    done.write_text(freeze.stdout)
    return venv


def tree_venv(cache: Path, tree: Path) -> Path:
    """A venv that runs the stockq of another checkout ``tree`` (a git worktree of an
    older commit) with this venv's dependencies: ``tree`` comes first on sys.path, then
    this venv's site-packages; ``bin/stockq`` starts that tree's CLI."""
    tree = tree.resolve()
    key = hashlib.sha1(str(tree).encode()).hexdigest()[:10]
    venv = cache / f"stockq-tree-{key}"
    python = _venv_python(venv)
    if not python.exists():
        subprocess.run([_base_python(), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    (site / "stockq_tree.pth").write_text(
        f"{tree}\nimport site; site.addsitedir({ours!r})\n")
    script = venv / "bin" / "stockq"
    # the tree's console script: app/entry.py where it has one (it starts the fork server)
    entry = "app.entry" if (tree / "app" / "entry.py").exists() else "app.cli"
    script.write_text(f"#!{python}\nimport sys\nfrom {entry} import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return venv


def compile_bytecode(tree: Path) -> None:
    """Write the bytecode of a stockq checkout's modules, as its install would
    (ops/bootstrap.sh; pip for a wheel): the peers' packages come with theirs, and a
    worker that compiles app/ from source at every start (PYTHONDONTWRITEBYTECODE set)
    is not what runs in production."""
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(tree / "app"), str(tree / "plugins_bridge")],
                   check=True, stdout=subprocess.DEVNULL)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def redis_server_version() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        return "not installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def machine() -> dict[str, str]:
    return {
        "cpu": f"{os.cpu_count()} × {_cpu_model()}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis_server_version(),
    }
