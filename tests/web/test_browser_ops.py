"""The schedules page, the dead letters' preview and bulk delete, and the overview's charts in dark mode, in real
headless Chromium (as tests/web/test_browser.py). Screenshots go to the test's tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.harness import Harness

from .conftest import Served
from .test_browser import browser, click, pytestmark, text_of, waiter  # noqa: F401 - the fixture and the skip rule
from .test_ops import make_dead_letters


async def test_schedules_page_pause_and_trigger(browser: Any, web: Served, h: Harness,  # noqa: F811
                                                tmp_path: Path) -> None:
    name = f"s{h.unique}"
    row = f'tr[data-schedule="{name}"]'
    async with httpx.AsyncClient(base_url=web.url) as c:
        body = {"name": name, "schedule": "*/5 * * * *", "queue": h.queue, "task_type": f"{h.unique}:r"}
        assert (await c.post("/v1/schedules", json=body)).status_code == 201
        try:
            await anyio.to_thread.run_sync(browser.get, f"{web.url}/ui/schedules")
            assert len((await anyio.to_thread.run_sync(text_of, browser, f"{row} td.next")).splitlines()) == 3
            assert await anyio.to_thread.run_sync(text_of, browser, f"{row} td.state") == "active"
            await click(browser, f"{row} button.trigger", confirm=True)
            await anyio.to_thread.run_sync(waiter(browser), lambda d: "fired task" in text_of(d, "#flash"))
            task_id = (await anyio.to_thread.run_sync(text_of, browser, "#flash")).split()[-1]
            assert (await c.get(f"/v1/tasks/{task_id}")).json()["type"] == f"{h.unique}:r"
            await click(browser, f"{row} button.pause")
            await anyio.to_thread.run_sync(waiter(browser), lambda d: text_of(d, f"{row} td.state")
                                           .startswith("paused"))
            assert (await c.get(f"/v1/schedules/{name}")).json()["paused"] is True
            assert await anyio.to_thread.run_sync(text_of, browser, f"{row} td.next") == "—"
            browser.save_screenshot(str(tmp_path / "schedules.png"))
            await click(browser, f"{row} button.resume")
            await anyio.to_thread.run_sync(waiter(browser), lambda d: text_of(d, f"{row} td.state") == "active")
        finally:
            await c.delete(f"/v1/schedules/{name}")


async def test_dead_letters_preview_then_delete(browser: Any, web: Served, h: Harness,  # noqa: F811
                                                tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    ids = await make_dead_letters(h, 3)
    await anyio.to_thread.run_sync(browser.get, f"{web.url}/ui/dead-letters?queue={h.queue}")
    await anyio.to_thread.run_sync(waiter(browser), lambda d: len(d.find_elements(By.CSS_SELECTOR,
                                                                                   "tr[data-task]")) == 3)
    await click(browser, "#preview-matching")
    await anyio.to_thread.run_sync(waiter(browser), lambda d: "3 dead letters selected" in text_of(d, "#preview"))
    preview = await anyio.to_thread.run_sync(text_of, browser, "#preview")
    assert all(i in preview for i in ids)
    browser.save_screenshot(str(tmp_path / "dead-letters-preview.png"))
    await click(browser, "#bulk-delete", confirm=True)
    await anyio.to_thread.run_sync(waiter(browser), lambda d: "deleted 3 of 3" in text_of(d, "#flash"))
    await anyio.to_thread.run_sync(waiter(browser), lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[data-task]"))
    assert not await anyio.to_thread.run_sync(lambda: browser.find_elements(By.ID, "preview"))
    async with httpx.AsyncClient(base_url=web.url) as c:
        assert [(await c.get(f"/v1/tasks/{i}")).status_code for i in ids] == [404] * 3


async def test_overview_charts_in_dark_mode(browser: Any, web: Served, h: Harness,  # noqa: F811
                                            tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    await make_dead_letters(h, 1)
    await anyio.to_thread.run_sync(browser.get, f"{web.url}/")
    await anyio.to_thread.run_sync(browser.execute_script, "localStorage.setItem('jb-theme', 'dark')")
    await anyio.to_thread.run_sync(browser.get, f"{web.url}/")
    bar = f'tr[data-queue="{h.queue}"] td.spark rect.c-bad'
    await anyio.to_thread.run_sync(waiter(browser), lambda d: d.find_elements(By.CSS_SELECTOR, bar))
    background = await anyio.to_thread.run_sync(browser.execute_script,
                                                "return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 22, 26)"  # the dark palette
    fill = await anyio.to_thread.run_sync(browser.execute_script,
                                          f"return getComputedStyle(document.querySelector('{bar}')).fill")
    assert fill == "rgb(255, 123, 114)"  # --bad in dark mode
    browser.save_screenshot(str(tmp_path / "overview-dark.png"))
    await anyio.to_thread.run_sync(browser.execute_script, "localStorage.removeItem('jb-theme')")
