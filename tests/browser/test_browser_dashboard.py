"""The dashboard in a real browser: `rumor network up` with 2 orgs × 2 peers, headless Chromium driven by Playwright.

Debian's chromium (/usr/bin/chromium, installed by `make test`) is used; Playwright downloads no browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from browser_env import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from netup_proc import alive, network_up
from polling import wait_until

from rumor.network import free_base_port

PEERS = ["peer0.org1.example.com", "peer1.org1.example.com", "peer0.org2.example.com", "peer1.org2.example.com"]


@pytest.fixture
def browser_page(tmp_path: Path):  # type: ignore[no-untyped-def]
    if (missing := chromium_missing()) is not None:
        pytest.skip(missing)
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1150},
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.errors = errors  # type: ignore[attr-defined]
            yield page
        finally:
            context.close()


def test_dashboard_shows_the_network_and_a_stopped_peer(tmp_path: Path, browser_page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = browser_page
    root = tmp_path / "net"
    args = ["--dir", str(root), "--orgs", "2", "--peers-per-org", "2", "--base-port", str(free_base_port(4))]
    with network_up(*args, "--rate", "4", "--dashboard-port", "0") as up:
        url = up.wait_ready()
        page.goto(url)
        expect(page.locator("#conn")).to_have_text("live", timeout=15_000)

        # every peer: a node in the graph and a row in the table, alive
        for peer in PEERS:
            expect(page.locator(f'#graph g.node[data-peer="{peer}"]')).to_have_attribute("data-state", "alive")
            expect(page.locator(f'#peers-body tr[data-peer="{peer}"]')).to_be_visible()
        assert page.locator("#graph g.node").count() == len(PEERS)
        expect(page.locator("#graph line.edge").first).to_be_attached()

        # heights rise on every peer
        cell = page.locator(f'#peers-body tr[data-peer="{PEERS[3]}"] td.height')

        def height() -> int:
            text = cell.inner_text().strip()
            return int(text) if text.isdigit() else -1

        first = wait_until(lambda: height() > 0 and height(), 30, "a first height")
        wait_until(lambda: height() >= first + 3, 60, "the height to rise")
        # one leader per org, marked
        expect(page.locator('#graph g.node[data-leader="1"]')).to_have_count(2, timeout=45_000)
        # time to all peers measured for some blocks
        expect(page.locator("#latency rect.bar-rect").first).to_be_attached(timeout=30_000)
        expect(page.locator("#events li").first).to_be_attached()

        # stop a peer with its button: it turns dead, and the log says so
        victim = PEERS[1]
        pid = up.children()[victim]
        page.locator(f'#peers-body tr[data-peer="{victim}"] button[data-action="stop"]').click()
        expect(page.locator(f'#graph g.node[data-peer="{victim}"]')).to_have_attribute(
            "data-state", "dead", timeout=30_000
        )
        expect(page.locator(f'#peers-body tr[data-peer="{victim}"]')).to_have_attribute("data-state", "dead")
        expect(page.locator("#events li", has_text=f"operator stopped {victim}")).to_have_count(1, timeout=10_000)
        expect(page.locator("#events li[data-event=peer_dead]").first).to_be_attached(timeout=30_000)
        wait_until(lambda: not alive(pid), 30, "the stopped peer's process to end")

        # pause the load from the header
        page.locator("#load-toggle").click()
        expect(page.locator("#load-toggle")).to_have_text("Resume load", timeout=10_000)

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")

        # start it again: alive once more
        page.locator(f'#peers-body tr[data-peer="{victim}"] button[data-action="start"]').click()
        expect(page.locator(f'#graph g.node[data-peer="{victim}"]')).to_have_attribute(
            "data-state", "alive", timeout=60_000
        )
        assert not page.errors, page.errors  # type: ignore[attr-defined]
        assert up.interrupt() == 0, up.output()
        assert not [p for p in up.seen_children if alive(p)]
