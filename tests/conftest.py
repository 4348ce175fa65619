"""Shared test settings: Hypothesis profiles and the backend fixtures."""

import os

import pytest
from hypothesis import HealthCheck, settings
from optional import REQUIRE_OPENCL, skip_unless_required

import microconv as mc

settings.register_profile("dev", max_examples=15, deadline=None)
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

@pytest.fixture(autouse=True, scope="session")
def private_user_cache(tmp_path_factory):
    """Runs keep generated letters in the user cache (data.kept_letters); the tests keep
    theirs in a folder of their own, so that a test run never fills or reads the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


REQUIRED_BACKENDS = {"opencl": REQUIRE_OPENCL}      # the backends CI installs


def backend_or_skip(name):
    """The named backend, or a skip with the reason it cannot run here (a failure in CI)."""
    known = name in mc.backends.names()
    reason = mc.backends.unavailable_reason(name) if known else "not installed"
    if reason is not None:
        skip_unless_required(REQUIRED_BACKENDS.get(name), f"{name} backend unavailable: {reason}")
    return mc.backends.get(name)
