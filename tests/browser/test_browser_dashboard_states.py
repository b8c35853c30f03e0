"""The dashboard page in headless Chromium, in states set up by hand: a real Dashboard (its HTTP routes and
WebSocket) fed scripted statuses, so that each test sees exactly the case a new user ran into (the defects of
"Operator experience", 9) within a second or two, with no network to start.
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from browser_env import CHROMIUM, CHROMIUM_ARGS, chromium_missing
from served_dashboard import ORGS, FakeControls, ServedDashboard, endpoint, peer_id, status

from rumor.ops.dashboard import Dashboard

WAIT_MS = 10_000
"""How long an expectation may wait for the page (it usually holds at once)."""

EVERY_PEER = {name: status(name) for name in ORGS}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if (missing := chromium_missing()) is not None:
        pytest.skip(missing)
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


OpenPage = Callable[..., Any]


@pytest.fixture
def open_page(browser: Any) -> Iterator[OpenPage]:
    """``open_page(url, width=..., no_websocket=False)``: a fresh page on ``url``; none may raise a script error."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def open_(url: str, *, width: int = 1400, height: int = 1000, no_websocket: bool = False) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        if no_websocket:
            # A WebSocket that never opens (a proxy that drops the upgrade, a headless fetcher): nothing ever
            # arrives over it, and no error says why.
            context.add_init_script("window.WebSocket = function () { return {}; };")
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.goto(url)
        pages.append(page)
        return page

    yield open_
    try:
        for page in pages:
            assert not page.errors, page.errors
    finally:
        for context in contexts:
            context.close()


def network(controls: FakeControls | None = None, statuses: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """A network view of the four scripted peers (``statuses`` may be changed while it runs)."""
    statuses = EVERY_PEER if statuses is None else statuses
    controls = controls or FakeControls(dict.fromkeys(statuses, "running"))
    return ServedDashboard(lambda: dict(statuses), view="network", controls=controls, **kwargs)


def set_latencies(samples_ms: list[int], *, exact: bool = True) -> Callable[[Dashboard], None]:
    def apply(dashboard: Dashboard) -> None:
        model = dashboard.model
        model.latencies["mychannel"] = deque((ms / 1000 for ms in samples_ms), maxlen=model.keep_latencies)
        model.exact["mychannel"] = exact

    return apply


def box(locator: Any) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None, f"{locator} is not laid out"
    return dict(found)


def inside(inner: dict[str, float], outer: dict[str, float], slack: float = 0.5) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack
    )


# --------------------------------------------------------------------------------------------------
# 1. a peer killed by a signal


def test_a_killed_peer_is_labelled_killed_and_its_last_log_line_stands_apart(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    statuses = dict(EVERY_PEER)
    controls = FakeControls(dict.fromkeys(ORGS, "running"))
    with network(controls, statuses) as served:
        served.refresh()  # seen running first, as network up sees its peers
        statuses["p1"] = None
        controls.states["p1"] = "killed"
        last_line = "2024-05-01 10:00:00 INFO rumor.core.channel: block 41 committed on mychannel"
        text = f"{peer_id('p1')} killed by SIGKILL"
        event = {"event": "peer_killed", "peer": None, "text": text, "last_log": last_line}
        served.call(lambda d: d.model.add_event(event))
        served.refresh()
        page = open_page(served.url)
        node = page.locator(f'#graph g.node[data-peer="{peer_id("p1")}"]')
        expect(node).to_have_attribute("data-state", "dead", timeout=WAIT_MS)
        expect(node.locator("text.sub")).to_have_text("killed")
        row = page.locator(f'#peers-body tr[data-peer="{peer_id("p1")}"]')
        expect(row.locator("span.dot")).to_have_attribute("title", "killed")
        expect(row).to_contain_text("killed")
        entry = page.locator("#events li[data-event=peer_killed]")
        expect(entry).to_contain_text(f"{peer_id('p1')} killed by SIGKILL")
        expect(entry.locator(".last-log")).to_have_text(f"last log line: {last_line}")
        # the event's own line says what happened and nothing more
        own_text = entry.evaluate(
            "li => [...li.childNodes].filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent).join('')"
        )
        assert own_text == f"{peer_id('p1')} killed by SIGKILL"


# --------------------------------------------------------------------------------------------------
# 2. the block-propagation histogram


def test_the_histogram_scales_to_failover_stalls_without_overlapping_labels(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    fast = [30 + (7 * i) % 60 for i in range(60)]  # gossip hops: 30-89 ms
    stalls = [10_000, 10_050, 10_120, 10_200, 10_300, 10_400]  # a leader's failover
    with network() as served:
        served.call(set_latencies(fast + stalls))
        served.refresh()
        page = open_page(served.url)
        expect(page.locator("#latency rect.bar-rect").first).to_have_attribute(
            "data-count", re.compile(r"^\d+$"), timeout=WAIT_MS
        )
        # One look, in one go: each snapshot draws the chart anew, and a node measured after it was replaced
        # has no geometry.
        chart = page.evaluate(
            """() => {
                const svg = document.getElementById("latency");
                const r = (e) => { const b = e.getBoundingClientRect();
                                   return {x: b.x, y: b.y, width: b.width, height: b.height}; };
                const bars = [...svg.querySelectorAll("rect.bar-rect")];
                const peak = Math.max(...bars.map((b) => +b.dataset.count));
                const tallest = bars.find((b) => +b.dataset.count === peak);
                return {
                    svg: r(svg),
                    bins: bars.map((b) => [+b.dataset.lo, +b.dataset.hi, +b.dataset.count]),
                    ticks: [...svg.querySelectorAll("text.tick")].map(r),
                    tallest: r(tallest),
                    peakLabels: [...svg.querySelectorAll("text.count")]
                        .filter((t) => t.textContent === String(peak)).map(r),
                };
            }"""
        )
        found = chart["bins"]
        assert sum(count for _, _, count in found) == len(fast) + len(stalls)
        # the stalls have a bar of their own that says ~10 s, the fast blocks bars that say tens of ms
        slow = [(lo, hi, count) for lo, hi, count in found if count and lo >= 1000]
        assert slow and sum(count for *_, count in slow) == len(stalls), found
        assert all(lo <= 10_000 and hi > 10_400 for lo, hi, _ in slow), found
        assert all(hi <= 200 for lo, hi, count in found if count and lo < 1000), found

        svg, ticks = chart["svg"], chart["ticks"]
        assert len(ticks) >= 3
        for a, b in itertools.pairwise(ticks):
            assert a["x"] + a["width"] <= b["x"], f"tick labels overlap: {a} {b}"
        assert all(inside(t, svg) for t in ticks), (ticks, svg)
        # the tallest bar, and its count, entirely within the chart
        assert inside(chart["tallest"], svg), chart
        assert chart["peakLabels"] and all(inside(c, svg) for c in chart["peakLabels"]), chart


# --------------------------------------------------------------------------------------------------
# 3. the peers table in a narrow window


def test_the_peers_table_stays_inside_its_card_at_820_px(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    two_channels = {name: status(name, channels=("mychannel", "otherchannel")) for name in ORGS}
    with network(statuses=two_channels) as served:
        page = open_page(served.url, width=820)
        button = page.locator(f'#peers-body tr[data-peer="{peer_id("q1")}"] button[data-action="stop"]')
        expect(button).to_be_attached(timeout=WAIT_MS)
        geometry = page.evaluate(
            """() => {
                const table = document.getElementById("peers");
                const card = table.closest(".card");
                let clip = table;  // what shows of the table: it, or the box it scrolls in
                for (let e = table.parentElement; e !== card; e = e.parentElement) {
                    if (["auto", "scroll"].includes(getComputedStyle(e).overflowX)) clip = e;
                }
                const r = (e) => e.getBoundingClientRect();
                return {clipRight: r(clip).right, cardRight: r(card).right,
                        viewport: document.documentElement.clientWidth,
                        pageWidth: document.documentElement.scrollWidth};
            }"""
        )
        assert geometry["clipRight"] <= geometry["cardRight"] + 0.5, geometry
        assert geometry["cardRight"] <= geometry["viewport"], geometry
        assert geometry["pageWidth"] <= geometry["viewport"], geometry
        # the last column can still be reached: scrolled to, within the card
        button.scroll_into_view_if_needed()
        assert inside(box(button), box(page.locator("#peers").locator("xpath=ancestor::section[1]")))


# --------------------------------------------------------------------------------------------------
# 4. the header while the load is paused


def test_the_header_says_the_load_is_paused(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    controls = FakeControls(dict.fromkeys(ORGS, "running"), {"rate": 2, "paused": True, "blocks": 17, "error": None})
    with network(controls) as served:
        page = open_page(served.url)
        text = page.locator("#load-text")
        expect(text).to_contain_text("paused", timeout=WAIT_MS)
        expect(text).not_to_contain_text("load 2 block/s")
        expect(text).to_contain_text("17 blocks submitted")
        expect(page.locator("#load-toggle")).to_have_text("Resume load")


# --------------------------------------------------------------------------------------------------
# 5. the traffic chart on a page opened late


def test_the_traffic_chart_shows_the_last_minutes_at_once(open_page: OpenPage) -> None:
    rounds = 40
    with network(interval=3600.0, only_when_watched=True) as served:  # no round of its own while the test runs

        def past_minute(dashboard: Dashboard) -> None:
            start = time.time() - 2 * rounds - 5
            for i in range(rounds):
                statuses = {name: status(name, sent=i * 30 * (1 + i % 3)) for name in ORGS}
                dashboard.model.update(float(i * 2), statuses, wall=start + 2 * i)

        served.call(past_minute)
        page = open_page(served.url)
        # every point of the last minutes drawn, not one per snapshot since the page opened
        page.wait_for_function(
            """n => {
                const path = document.querySelector('#traffic path.msgs');
                return path !== null && ((path.getAttribute('d') || '').match(/[ML]/g) || []).length >= n;
            }""",
            arg=rounds,
            timeout=WAIT_MS,
        )


# --------------------------------------------------------------------------------------------------
# 6. durations under a second


def test_propagation_times_under_a_second_are_shown_in_ms(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    with network() as served:
        served.call(set_latencies([38, 40, 41, 41, 42, 45, 120]))
        served.refresh()
        page = open_page(served.url)
        text = page.locator("#latency-text")
        expect(text).to_contain_text("median 41 ms", timeout=WAIT_MS)
        expect(text).to_contain_text("max 120 ms")
        expect(text).not_to_contain_text("0.0 s")


# --------------------------------------------------------------------------------------------------
# 7. a page whose WebSocket never opens


def test_the_page_renders_over_http_when_the_websocket_never_opens(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    statuses = dict(EVERY_PEER)
    with network(statuses=statuses) as served:
        page = open_page(served.url, no_websocket=True)
        for name in ORGS:
            expect(page.locator(f'#graph g.node[data-peer="{peer_id(name)}"]')).to_be_attached(timeout=WAIT_MS)
            expect(page.locator(f'#peers-body tr[data-peer="{peer_id(name)}"]')).to_be_visible()
        expect(page.locator("#conn")).not_to_have_text("connecting…")
        # and it keeps up, over HTTP
        statuses["q1"] = status("q1", height=9)
        cell = page.locator(f'#peers-body tr[data-peer="{peer_id("q1")}"] td.height .value')
        expect(cell).to_have_text("9", timeout=WAIT_MS)


# --------------------------------------------------------------------------------------------------
# 8. a single peer's dashboard names the other peers


def test_a_peers_own_dashboard_names_other_peers_by_peer_id(open_page: OpenPage) -> None:
    from playwright.sync_api import expect

    own = peer_id("p0")
    with ServedDashboard(lambda: {own: status("p0")}, view="peer", only_when_watched=True) as served:
        page = open_page(served.url)
        for name in ("p1", "q0", "q1"):
            row = page.locator(f'#peers-body tr[data-peer="{peer_id(name)}"]')
            expect(row).to_be_visible(timeout=WAIT_MS)
            expect(row.locator("td .endpoint")).to_have_text(endpoint(name))
            node = page.locator(f'#graph g.node[data-peer="{peer_id(name)}"]')
            expect(node.locator("text.label").first).to_have_text(peer_id(name).split(".example.com")[0])
        expect(page.locator(f'#peers-body tr[data-peer="{endpoint("p1")}"]')).to_have_count(0)
