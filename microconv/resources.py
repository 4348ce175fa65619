"""How much memory and disk this machine can give, so sizes that cannot fit are refused up
front with one line, instead of failing late (or thrashing) half way through an allocation."""

from __future__ import annotations

import os
import shutil

from microconv.errors import ResourceError


def available_memory():
    """Bytes that can still be allocated: the kernel's MemAvailable (free memory plus caches
    it can drop), lowered to what a cgroup memory limit leaves, else the free pages."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62              # unknown: nothing is refused
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit != "max":
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def size_text(nbytes):
    """1536 -> '1.5 KB', 3.2e12 -> '3.2 TB' (powers of 1000, as disks and free(1) -h do not
    agree anyway; one digit is enough to see why something does not fit)."""
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if round(value, 1) < 1000 or unit == "PB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"


def require_memory(nbytes, what, advice="", error=ResourceError):
    """Refuse (``error``, a ResourceError unless the caller's kind of error fits better) when
    ``what`` needs more memory than is available."""
    available = available_memory()
    if nbytes > available:
        raise error(f"{what} needs {size_text(nbytes)} of memory, only "
                            f"{size_text(available)} are available" + (f"; {advice}" if advice
                                                                       else ""))


def require_disk(nbytes, folder, what):
    """Refuse when the file system of ``folder`` has less than ``nbytes`` free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return                          # cannot tell: the write itself will say
    if nbytes > free:
        raise ResourceError(f"{what} needs {size_text(nbytes)} of disk space, {folder} has "
                            f"{size_text(free)} free")
