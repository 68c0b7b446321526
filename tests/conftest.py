"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures (real files collected from Xen and distributions); skip when absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture
def xenapi_host(tmp_path):
    """A started xend with the Xen-API on a unix socket and a TCP port (tests.xenapi_helpers)."""
    from tests.xenapi_helpers import XenAPIHost

    h = XenAPIHost(tmp_path / "x")
    h.start()
    try:
        yield h
    finally:
        h.cleanup()
