#!/usr/bin/env python3
"""Screenshots of the folder page's account states for docs/ui/: a signed-in account's page, and the
Share dialog with a link and its QR code. Drives Debian's /usr/bin/chromium through Playwright against
a server with a users file on the demo tree of ui_screenshots.py; removes everything it made.

    PYTHONPATH=$PWD python tools/ui_share_screenshot.py [docs/ui]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.serverutil import Server  # noqa: E402
from tools.ui_screenshots import ARGS, demo_tree  # noqa: E402


def main() -> None:
    from playwright.sync_api import sync_playwright

    from zcopy.accounts import passwords

    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "docs/ui")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="zcopy-shots-")
    try:
        root = os.path.join(work, "root")
        os.makedirs(root)
        demo_tree(root)
        users = os.path.join(work, "users.txt")
        with open(users, "w") as f:
            f.write(f"alice {passwords.make('demo', time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)} /:rwd\n* - /:r\n")
        with Server(root, "--users", users, "--state-dir", os.path.join(work, "state")) as srv, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
            try:
                ctx = browser.new_context(viewport={"width": 1280, "height": 800},
                                          http_credentials={"username": "alice", "password": "demo"})
                page = ctx.new_page()
                page.goto(srv.url + "/")
                page.wait_for_selector("#sign-in")
                page.screenshot(path=os.path.join(out, "signin-desktop.png"))
                page.click("#sign-in")
                page.wait_for_selector("#signed-in")
                page.click("button[aria-label='Share report_10.pdf']")
                page.click("#share-make")
                page.wait_for_function("() => document.getElementById('share-qr').naturalWidth > 0")
                page.screenshot(path=os.path.join(out, "share-desktop.png"))
                ctx.close()
            finally:
                browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
