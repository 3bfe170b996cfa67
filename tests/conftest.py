"""Session-wide test setup: float64 in JAX and a reproducible hypothesis profile."""

import os

import jax

jax.config.update("jax_enable_x64", True)

from hypothesis import HealthCheck, settings  # noqa: E402

# CI: derandomized (same examples every run), no example database, no deadline (the
# first example of each shape pays a jit compile). HYPOTHESIS_PROFILE=dev explores.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
