import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
# Audit logs (and anything else under $XDG_STATE_HOME) of the processes the tests start go
# to a throwaway directory, never into the home of whoever runs the tests.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="vncmcp-test-state-")

from broker.demo import start_x11vnc, start_xvnc  # noqa: E402


@pytest.fixture
def xvnc():
    """An Xvnc desktop (security None) with an xterm in it."""
    desktop = start_xvnc(geometry="800x600")
    try:
        yield desktop
    finally:
        desktop.stop()


@pytest.fixture(params=["xvnc", "x11vnc"])
def any_server(request):
    """Each real server kind in turn, security None, empty desktop."""
    start = start_xvnc if request.param == "xvnc" else start_x11vnc
    desktop = start(geometry="800x600")
    try:
        yield desktop
    finally:
        desktop.stop()
