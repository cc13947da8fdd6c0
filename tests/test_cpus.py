"""The default worker count follows the CPUs the process may use (affinity and cgroup quota),
not the host's core count (admin_service/cpus.py, read by gunicorn.conf.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from admin_service.cpus import cgroup_cpu_quota, usable_cpus
from tests.support import ROOT


def cgroup_v2(root: Path, cpu_max: str, *, at: str = "") -> tuple[Path, Path]:
    """A cgroup v2 tree with `cpu.max` at `at` (relative), and a /proc/self/cgroup placing the process there."""
    folder = root / at if at else root
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.max").write_text(cpu_max + "\n")
    own = root.parent / "self-cgroup"
    own.write_text(f"0::/{at}\n")
    return root, own


def test_a_cgroup_v2_quota_caps_the_cpus(tmp_path: Path) -> None:
    root, own = cgroup_v2(tmp_path / "cg", "150000 100000")

    assert cgroup_cpu_quota(root, own) == 1.5
    assert usable_cpus(root, own) == min(2, len(os.sched_getaffinity(0)))


def test_a_quota_on_a_parent_cgroup_applies_to_its_children(tmp_path: Path) -> None:
    root, own = cgroup_v2(tmp_path / "cg", "100000 100000", at="kubepods/pod1")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "cpu.max").write_text("100000 100000\n")

    assert cgroup_cpu_quota(root, own) == 1.0
    assert usable_cpus(root, own) == 1


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    root, own = cgroup_v2(tmp_path / "cg", "max 100000")

    assert cgroup_cpu_quota(root, own) is None
    assert usable_cpus(root, own) == len(os.sched_getaffinity(0))


def test_a_cgroup_v1_cfs_quota_caps_the_cpus(tmp_path: Path) -> None:
    cpu = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("50000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    own = tmp_path / "self-cgroup"
    own.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")

    assert cgroup_cpu_quota(tmp_path / "cg", own) == 0.5
    assert usable_cpus(tmp_path / "cg", own) == 1


def test_the_real_call_follows_the_cpu_affinity_not_the_host_count() -> None:
    """In a process allowed one CPU of this machine's cores, one CPU is usable (gunicorn.conf.py
    then starts its floor of 2 workers, not one per host core)."""
    code = (
        "import os; from admin_service.cpus import usable_cpus; "
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); print(usable_cpus(), os.cpu_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    usable, host = map(int, out.split())
    assert usable == 1 and host == os.cpu_count()
