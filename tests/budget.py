"""How many examples a property test draws. CI (`make test`) draws a share of them so the
suite stays within its time budget; ``HYPOTHESIS_PROFILE=thorough`` (`make test-all`)
draws them all. Most of these tests' time is compiling (one compile per network
structure and specialisation), so the CI share still covers every structure family."""

import os

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


def examples(full: int, ci: int) -> int:
    """`full` examples in a thorough run, `ci` in CI."""
    return full if THOROUGH else ci
