"""A task's memory limit, applied inside its worker child while the plugin runs.

The limit is ``RLIMIT_DATA``: the process's private writable memory (its heap, the
memory it maps for itself, thread stacks; ``VmData`` in /proc/PID/status).  An
allocation past it fails, and Python raises ``MemoryError``, which ends the attempt
``failed`` with ``memory_exceeded`` instead of the host running out of memory.
``RLIMIT_AS`` would count address space only reserved, not used (numpy's BLAS threads
and chdb reserve hundreds of MB to GB of it), and refuse sound tasks.

Only the soft limit is lowered, for the run of one task, and set back afterwards.  The
limit is per process: a program the plugin starts inherits the same limit for itself.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MB = 1024 * 1024


def limit_mb(task: dict[str, Any], plugin: Any, default_mb: int) -> int:
    """The task's limit in MB (0: none): the task's own ``memory_limit_mb``, else the
    plugin's ``memory_limit_mb`` attribute, else the worker's default."""
    for value in (task.get("memory_limit_mb"), getattr(plugin, "memory_limit_mb", None),
                  default_mb):
        try:
            mb = int(value or 0)
        except (TypeError, ValueError):
            continue
        if mb > 0:
            return mb
    return 0


@contextmanager
def memory_limit(mb: int) -> Iterator[None]:
    """Lower the soft RLIMIT_DATA to ``mb`` MB inside the block (nothing for 0)."""
    if mb <= 0:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    want = mb * MB if hard == resource.RLIM_INFINITY else min(mb * MB, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
