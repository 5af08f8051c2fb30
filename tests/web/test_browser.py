"""The dashboard in real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): live task
updates, the attempt history, replaying a dead letter, and pausing a queue. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jetbridge
import pytest

from tests.harness import Harness

from .conftest import Served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def waiter(driver: Any, timeout: float = 60) -> Callable[[Callable[[Any], Any]], Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    return lambda cond: WebDriverWait(driver, timeout, poll_frequency=0.1).until(cond)


def text_of(driver: Any, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


async def click(driver: Any, css: str, *, confirm: bool = False) -> None:
    """Click, accepting the page's confirm() dialog when the button asks for one.

    A live refresh may replace the button between finding and clicking it (a stale element, not clicked): the
    wait finds the current one again until a click lands.
    """
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def clicked(d: Any) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait = WebDriverWait(driver, 60, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    await anyio.to_thread.run_sync(wait.until, clicked)
    if confirm:
        await anyio.to_thread.run_sync(waiter(driver), lambda d: d.switch_to.alert)
        await anyio.to_thread.run_sync(lambda: driver.switch_to.alert.accept())


async def test_task_completes_live_and_shows_its_history(browser: Any, web: Served, h: Harness,
                                                         tmp_path: Path) -> None:
    async def work(task: jetbridge.Task) -> Any:
        return {"done": True}

    async with httpx.AsyncClient(base_url=web.url) as c:
        task = (await c.post("/v1/tasks", json={"type": f"{h.unique}:w", "queue": h.queue,
                                                "payload": {"order": 7}})).json()
    await anyio.to_thread.run_sync(browser.get, f"{web.url}/ui/tasks/{task['id']}")
    assert await anyio.to_thread.run_sync(text_of, browser, "#task-state") == "new"
    await anyio.to_thread.run_sync(browser.execute_script, "window.__notReloaded = true")
    # Live: the page must have its event stream open before the task runs.
    await anyio.to_thread.run_sync(waiter(browser), lambda d: "on" in d.find_element("id", "live-dot")
                                   .get_attribute("class"))
    async with h.service({f"{h.unique}:w": work}), h.dispatcher():
        await anyio.to_thread.run_sync(waiter(browser), lambda d: text_of(d, "#task-state") == "complete")
    assert await anyio.to_thread.run_sync(browser.execute_script, "return window.__notReloaded === true")
    history = await anyio.to_thread.run_sync(text_of, browser, "#history")
    assert "#1" in history and "complete" in history
    assert '"done": true' in await anyio.to_thread.run_sync(text_of, browser, "#result")
    browser.save_screenshot(str(tmp_path / "task.png"))


async def test_replay_a_dead_letter(browser: Any, web: Served, h: Harness, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    calls: list[str] = []

    async def flaky(task: jetbridge.Task) -> Any:
        calls.append(task.id)
        if len(calls) == 1:
            raise jetbridge.Terminate("bad input")
        return "fixed"

    async with h.service({f"{h.unique}:f": flaky}), h.dispatcher():
        task_id = await h.producer.enqueue(f"{h.unique}:f", queue=h.queue)
        assert (await h.producer.wait(task_id, timeout=30)).state == "terminated"
        url = f"{web.url}/ui/dead-letters?queue={h.queue}"
        await anyio.to_thread.run_sync(browser.get, url)
        row = f'tr[data-task="{task_id}"] button.replay'
        # The index follows the store: the row shows up live if the page came first.
        await anyio.to_thread.run_sync(waiter(browser), lambda d: d.find_elements(By.CSS_SELECTOR, row))
        browser.save_screenshot(str(tmp_path / "dead-letters.png"))
        await click(browser, row)
        await anyio.to_thread.run_sync(waiter(browser), lambda d: "replayed" in text_of(d, "#flash"))
        assert (await h.producer.wait(task_id, timeout=30)).state == "complete"
        await anyio.to_thread.run_sync(waiter(browser), lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    await anyio.to_thread.run_sync(browser.get, f"{web.url}/ui/tasks/{task_id}")
    history = await anyio.to_thread.run_sync(text_of, browser, "#history")
    assert "replay 1" in history and "terminate" in history


async def test_pause_a_queue_and_see_it_paused(browser: Any, web: Served, h: Harness, tmp_path: Path) -> None:
    """Paused in the dashboard, the queue holds a new task while a dispatcher runs; resumed, the task runs."""

    async def work(task: jetbridge.Task) -> str:
        return "ran"

    async with httpx.AsyncClient(base_url=web.url) as c, h.service({f"{h.unique}:p": work}), h.dispatcher():
        await anyio.to_thread.run_sync(browser.get, f"{web.url}/ui/queues/{h.queue}")
        assert await anyio.to_thread.run_sync(text_of, browser, "#queue-state") == "running"
        await click(browser, "#pause")
        await anyio.to_thread.run_sync(waiter(browser), lambda d: text_of(d, "#queue-state") == "paused")
        assert (await c.get(f"/v1/queues/{h.queue}")).json()["paused"] is True
        task = (await c.post("/v1/tasks", json={"type": f"{h.unique}:p", "queue": h.queue})).json()
        await anyio.to_thread.run_sync(browser.get, f"{web.url}/")
        row = await anyio.to_thread.run_sync(text_of, browser, f'tr[data-queue="{h.queue}"]')
        assert "paused" in row
        browser.save_screenshot(str(tmp_path / "overview-paused.png"))
        assert (await c.get(f"/v1/tasks/{task['id']}")).json()["state"] == "new"  # held by the pause
        await anyio.to_thread.run_sync(browser.get, f"{web.url}/ui/queues/{h.queue}")
        await click(browser, "#resume")
        await anyio.to_thread.run_sync(waiter(browser), lambda d: text_of(d, "#queue-state") == "running")
        assert (await h.producer.wait(task["id"], timeout=30)).state == "complete"
