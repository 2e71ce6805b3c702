"""The live page (`GET /`) in headless Chromium against two real workers, and the `/stats` it reads.

The browser is Debian's `chromium` driven through Debian's `chromedriver` (`make test` installs both); the page's
screenshot is kept in `.artifacts/live-page.png`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.cluster import ADMIN_TOKEN, call

pytestmark = pytest.mark.broker

ROOT = Path(__file__).parents[2]
PAGE = ROOT / "web" / "static" / "live.html"
SCREENSHOT = ROOT / ".artifacts" / "live-page.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 20.0


def browser() -> webdriver.Chrome:
    if not Path(CHROMEDRIVER).exists():
        pytest.fail(f"{CHROMEDRIVER} is missing: `make test` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1200", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


async def until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], what: str) -> Any:
    """Wait in a thread (the event loop stays free) until `condition(driver)` is truthy; the page re-renders its
    tables every second, so an element read as it is replaced is read again."""
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    try:
        return await asyncio.to_thread(wait.until, condition)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {WAIT_S} s: {text(driver, 'status')!r}") from None


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def figure(shown: str) -> float | None:
    """A figure as the page shows it ("1,234", "12.5"), or None while it shows none (a dash)."""
    shown = shown.replace(",", "")
    return float(shown) if re.fullmatch(r"-?\d+(\.\d+)?", shown) else None


def number(driver: webdriver.Chrome, element_id: str) -> float | None:
    return figure(text(driver, element_id))


def cells(driver: webdriver.Chrome, rows_selector: str) -> list[list[str]]:
    """The text of each cell of the rows, read at once: the page replaces its tables as it updates them."""
    script = "return [...document.querySelectorAll(arguments[0])].map(r => [...r.cells].map(c => c.textContent))"
    return driver.execute_script(script, rows_selector)


def bars(driver: webdriver.Chrome) -> list[tuple[int, int]]:
    """(partition, balance) of each bar of the segments chart."""
    script = """return [...document.querySelectorAll('#segments rect.bar')]
                  .map(b => [Number(b.dataset.partition), Number(b.dataset.balance)])"""
    return [(partition, balance) for partition, balance in driver.execute_script(script)]


def use_token(driver: webdriver.Chrome, token: str) -> None:
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token, Keys.ENTER)


def test_the_page_is_one_file_that_fetches_nothing_from_elsewhere() -> None:
    html = PAGE.read_text()
    # The only "://" is the SVG namespace name, which is never fetched.
    assert re.findall(r"\w+://[^\s\"'<>]*", html) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(?!data:)", html)
    assert "@import" not in html


async def test_stats_gathers_every_partition_from_both_workers(session, module_cluster) -> None:
    urls = [worker.url for worker in module_cluster.workers]
    internal = {worker.internal_url for worker in module_cluster.workers}
    status, stats = await call(session, "GET", f"{urls[1]}/stats")
    assert status == 200, stats
    assert [p["partition"] for p in stats["partitions"]] == [0, 1, 2, 3]
    assert {p["owner"] for p in stats["partitions"]} == internal
    # lag is null until the owner has fetched from the partition once (its end offset is not known before)
    assert all(p["applied_offset"] >= -1 and (p["lag_records"] or 0) >= 0 for p in stats["partitions"])
    assert {w["url"] for w in stats["workers"]} == internal and all(w["reachable"] for w in stats["workers"])
    assert [w["answering"] for w in stats["workers"]].count(True) == 1
    assert sorted(p for w in stats["workers"] for p in w["partitions"]) == [0, 1, 2, 3]
    for name in ("applied_total", "rejected_total", "segment_moves_total"):
        assert stats[name] == sum(w[name] for w in stats["workers"])

    status, minted = await call(session, "POST", f"{urls[0]}/tokens", {"scopes": ["read"], "accounts": ["x"]})
    assert status == 201
    async with session.get(f"{urls[0]}/stats", headers={"Authorization": f"Bearer {minted['token']}"}) as response:
        assert response.status == 403
    async with session.get(f"{urls[0]}/stats", headers={"Authorization": "Bearer nope"}) as response:
        assert response.status == 401
    async with session.get(f"{urls[0]}/", headers={"Authorization": ""}) as response:
        assert response.status == 200 and response.content_type == "text/html"
        assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
        assert await response.text() == PAGE.read_text()


async def test_the_live_page_shows_the_figures_moving_and_an_account(session, module_cluster) -> None:
    urls = [worker.url for worker in module_cluster.workers]
    for account in ("live-a", "live-b"):
        assert (await call(session, "POST", f"{urls[0]}/accounts", {"id": account}))[0] == 201
    deposit = {"id": "live-d", "account": "live-a", "amount": 10_000}
    assert (await call(session, "POST", f"{urls[0]}/deposits?wait=10", deposit))[1]["status"] == "applied"

    driver = await asyncio.to_thread(browser)
    try:
        driver.get(f"{urls[0]}/")
        use_token(driver, "not-the-token")
        await until(driver, lambda d: "401" in text(d, "status"), "a 401 for a wrong token")
        assert "not a valid one" in text(driver, "status")

        use_token(driver, ADMIN_TOKEN)
        await until(driver, lambda d: number(d, "applied-total") is not None, "the applied total")
        await until(driver, lambda d: number(d, "applied-rate") is not None, "a rate (two samples)")
        partitions = await until(driver, lambda d: cells(d, "#partitions tbody tr"), "the partitions")
        assert [row[0] for row in partitions] == ["0", "1", "2", "3"]
        owners = {worker.internal_url.removeprefix("http://") for worker in module_cluster.workers}
        assert {row[1] for row in partitions} == owners
        assert all(figure(row[3]) is not None for row in partitions), partitions
        before = number(driver, "applied-total")
        assert before is not None and before >= 1

        # One at a time, each answered once decided: every one applies (no two debits race for the segments).
        transfers = [{"id": f"live-t{n}", "payer": "live-a", "payee": "live-b", "amount": 100 + n} for n in range(5)]
        for n, transfer in enumerate(transfers):
            status, body = await call(session, "POST", f"{urls[n % 2]}/transfers?wait=10", transfer)
            assert (status, body["status"]) == (200, "applied"), body

        def moved(d: webdriver.Chrome) -> tuple[float, float] | None:
            # total and rate of one update, read at once: the update whose total first shows the transfers
            # counted them in its rate too
            total, rate = map(figure, d.execute_script("return [arguments[0].textContent, arguments[1].textContent]",
                                                       d.find_element(By.ID, "applied-total"),
                                                       d.find_element(By.ID, "applied-rate")))  # fmt: skip
            return (total, rate) if total is not None and total >= before + len(transfers) else None

        total, rate = await until(driver, moved, "the applied total moving")
        assert rate is not None and rate > 0, (total, rate)

        driver.find_element(By.ID, "account").send_keys("live-a", Keys.ENTER)
        expected_balance = 10_000 - sum(t["amount"] for t in transfers)
        await until(driver, lambda d: number(d, "account-balance") == expected_balance, "live-a's balance")
        segments = bars(driver)
        assert sorted(partition for partition, _ in segments) == [0, 1, 2, 3]
        assert sum(balance for _, balance in segments) == expected_balance
        history = await until(driver, lambda d: cells(d, "#history tbody tr"), "live-a's transactions")
        assert [row[0] for row in history] == ["live-t4", "live-t3", "live-t2", "live-t1", "live-t0", "live-d"]
        assert history[0][1:5] == ["transfer", "-104", "live-b", "applied"], history[0]
        assert history[-1][1:5] == ["deposit", "+10,000", "\N{EN DASH}", "applied"], history[-1]

        search = driver.find_element(By.ID, "account")
        search.clear()
        search.send_keys("live-nobody", Keys.ENTER)
        await until(driver, lambda d: "404" in text(d, "account-error"), "a 404 for an unknown account")
        search.clear()
        search.send_keys("live-a", Keys.ENTER)
        await until(driver, lambda d: number(d, "account-balance") == expected_balance, "live-a again")

        # Nothing the page does is refused by its Content-Security-Policy, and its script never threw.
        console = [entry["message"] for entry in driver.get_log("browser")]
        assert not [line for line in console if "Content Security Policy" in line or "Uncaught" in line], console

        SCREENSHOT.parent.mkdir(exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, max(800, int(height) + 40))
        assert driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
