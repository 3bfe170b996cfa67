"""Session-wide test setup: float64 in JAX, a reproducible hypothesis profile, and compiled
code released after every test module so that the whole suite runs in one process."""

import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)

from hypothesis import HealthCheck, settings  # noqa: E402

# CI: derandomized (same examples every run), no example database, no deadline (the
# first example of each shape pays a jit compile). HYPOTHESIS_PROFILE=dev explores;
# HYPOTHESIS_PROFILE=thorough draws the full example counts (`make test-all`).
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# thorough: CI's settings with every property test's full example count (tests/budget.py).
settings.register_profile("thorough", parent=settings.get_profile("ci"))
settings.register_profile(
    "dev", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Every compiled XLA CPU executable holds its machine code in memory mappings of its own
# (about 3 per kernel: code, read-only data, data) for as long as JAX's caches keep it;
# one jitted gradient of the event engine takes ~700, an op-by-op test thousands. Linux
# caps a process at vm.max_map_count mappings (65,530 by default); at the cap the next
# compile fails inside LLVM ("Cannot allocate memory") and the process segfaults or
# aborts. The suite in one process reached it after ~100 tests
# (benchmarks/compile_sweep.py reproduces it in a minute). Releasing the compiled code
# after each module bounds the count by the largest module; the check after each test
# bounds it for a module that alone would come near the cap.


def _mappings() -> int | None:
    """This process's memory mappings (Linux), or None where /proc does not say."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def _max_mappings() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65530


_MAPPINGS_BUDGET = _max_mappings() // 2


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code_per_module():
    yield
    jax.clear_caches()


@pytest.fixture(autouse=True)
def _release_compiled_code_near_the_cap():
    yield
    count = _mappings()
    if count is not None and count > _MAPPINGS_BUDGET:
        jax.clear_caches()
