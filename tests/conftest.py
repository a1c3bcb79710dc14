"""Shared test configuration: the KVM tiers skip, with the reason, where /dev/kvm is unusable;
the kernel's lock-order checker is on, and a test that provoked a violation fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Before any kernel module makes a lock: the suite runs with lock-order checking
# (kernel/lockdep.py). `copra run` started by a test inherits it.
os.environ["COPRA_LOCKDEP"] = "1"

import pytest
from hypothesis import settings

from copra.hw.kvm import kvm_unavailable_reason
from copra.kernel import lockdep

# Hypothesis runs derandomized by default, so the suite is deterministic (the same
# examples every run, in CI too). `HYPOTHESIS_PROFILE=explore pytest` searches with
# fresh random examples, to look for new failures.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: The device the KVM tiers need; COPRA_TEST_KVM_DEVICE lets a test prove they skip.
KVM_REASON = kvm_unavailable_reason(os.environ.get("COPRA_TEST_KVM_DEVICE", "/dev/kvm"))


@pytest.fixture(autouse=True)
def _lock_order_holds() -> Iterator[None]:
    """Fail the test if any kernel lock was taken against the documented order, even
    where the kernel caught the LockOrderError (a syscall answers UNKNOWN then)."""
    lockdep.take_violations()
    yield
    found = lockdep.take_violations()
    if found:
        pytest.fail("lock-order violations:\n" + "\n".join(found))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=f"needs a usable /dev/kvm: {KVM_REASON}")
    for item in items:
        tier = item.path.parent.name
        if tier in ("kvm", "e2e", "compat"):
            item.add_marker(pytest.mark.kvm)
        if KVM_REASON is not None and "kvm" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    stats = terminalreporter.stats
    ran = sum(len(stats.get(k, [])) for k in ("passed", "failed", "error"))
    skipped = len(stats.get("skipped", []))
    kvm = "usable" if KVM_REASON is None else f"unusable ({KVM_REASON})"
    terminalreporter.write_line(f"copra: {ran} tests ran, {skipped} skipped; /dev/kvm {kvm}")
