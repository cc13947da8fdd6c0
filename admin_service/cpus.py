"""How many CPUs this process may use: its CPU affinity and its cgroup's CPU quota, not the host's
count. A container limited to 2 CPUs on a 64-core host still sees os.cpu_count() == 64; gunicorn
would start 64 workers there, each with its own connection pool, all sharing 2 CPUs.

Read by gunicorn.conf.py for the default worker count (WEB_CONCURRENCY overrides it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
OWN_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, own_cgroup: Path = OWN_CGROUP) -> int:
    """The CPUs the scheduler lets this process run on, capped by its cgroup's quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota(cgroup_root, own_cgroup)
    if quota is not None:
        # 1.5 CPUs of quota keep two workers busy part of the time: round up.
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, own_cgroup: Path = OWN_CGROUP) -> float | None:
    """The tightest CPU quota, in CPUs, from this process's cgroup up to the root (cgroup v2
    `cpu.max`, else v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when there is none."""
    v2_path, v1_path = _own_paths(own_cgroup)
    quotas = [q for q in (_v2_quota(cgroup_root, v2_path), _v1_quota(cgroup_root, v1_path)) if q is not None]
    return min(quotas) if quotas else None


def _own_paths(own_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup paths from /proc/self/cgroup: ("0::/path" for v2, "N:cpu,...:/path" for v1).
    Inside a container's cgroup namespace both are "/", and its limits sit at the root."""
    v2, v1 = "/", "/"
    try:
        lines = own_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "cpu" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _levels(base: Path, path: str) -> list[Path]:
    """base/path and each of its parents up to base: a limit on any ancestor applies too."""
    levels = [base]
    current = base
    for part in Path(path).parts[1:] if path.startswith("/") else Path(path).parts:
        current = current / part
        levels.append(current)
    return levels


def _v2_quota(root: Path, path: str) -> float | None:
    found: list[float] = []
    for level in _levels(root, path):
        try:
            quota, period = (level / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and int(period) > 0:
            found.append(int(quota) / int(period))
    return min(found) if found else None


def _v1_quota(root: Path, path: str) -> float | None:
    found: list[float] = []
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for level in _levels(root / controller, path):
            try:
                quota = int((level / "cpu.cfs_quota_us").read_text())
                period = int((level / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                found.append(quota / period)
    return min(found) if found else None
