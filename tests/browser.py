"""Debian's chromium for the browser tests: the flags this machine's closed network needs.

Never `playwright install`: the tests drive the system chromium through playwright-core.
Without the background-networking flags chromium keeps trying hosts the network refuses.
"""

from __future__ import annotations

import tempfile
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# CSP violations (a blocked fetch never reaches the network, but must fail the test too)
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.blockedURI));
"""


def chromium_context(playwright: Any, viewport: dict[str, int]) -> tuple[Any, str]:
    """A persistent chromium context on a fresh, empty profile, and that profile's folder
    (the caller closes the context, then removes the folder)."""
    profile = tempfile.mkdtemp(prefix="fk-chromium-")
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        args=ARGS,
        headless=True,
        viewport=viewport,
        device_scale_factor=1,
    )
    return context, profile
