"""The Hypothesis profile of the fuzz tests: reproducible, bounded for a 2-core CI, nothing written to the repo.

- ``derandomize=True``: the examples are derived from each test's name, so CI runs the same inputs every time
  and a failure seen once is seen again; ``database=None``: no ``.hypothesis/`` example database in the checkout.
- ``max_examples``: 100 per property unless ``IDP_FUZZ_EXAMPLES`` says otherwise (e.g. 1000 for a long local run);
  ``IDP_FUZZ_RANDOM=1`` draws new examples each run instead (for exploring locally, never in CI).
- ``deadline=None``: an example is a few HTTP requests against SQLite or PostgreSQL on a shared machine, whose
  latency varies with the neighbours' load; a per-example deadline would make the suite flaky, not safer. The
  example count bounds the runtime instead.

Every property runs as an inner ``@given`` function (``prop``) that an ordinary test calls at its end: the app,
the database and the fixtures are built once per test, and each example runs against the state the earlier ones
left. That is deliberate for an attacker's input (a server must hold up after any sequence of bad requests), and
each property states what it needs: a fresh snapshot before each example, or a valid session made again. So
Hypothesis' ``function_scoped_fixture`` health check does not apply: no fixture is reused across examples
while believing it fresh.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "idp-fuzz",
    max_examples=int(os.environ.get("IDP_FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize=os.environ.get("IDP_FUZZ_RANDOM") != "1",
    database=None,
    # An example sends whole HTTP requests: slower than Hypothesis expects of a unit test, by design.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)
