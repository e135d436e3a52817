"""What a person does on the page, as Playwright steps (async API)."""

from pathlib import Path
from typing import Any, Optional

TIMEOUT = 20_000  # ms: the engine pays within a few seconds; CI machines are slow


class Sessions:
    """One browser context and tab per user, logged in once through LNbits' login
    form; each test takes the user's tab and opens the extension page in it."""

    def __init__(self, browser: Any, url: str):
        self.browser = browser
        self.url = url
        self.pages: dict[str, Any] = {}

    async def page(self, account: Any, tab: str = "") -> Any:
        page = self.pages.get(account.username)
        if page is None:
            page = await self._login(account.username, account.password)
            self.pages[account.username] = page
            await open_page(page, self.url, tab)
            # LNbits' one-time "save your credentials" notice (remembered per browser)
            await page.get_by_role("button", name="I understand").click()
        else:
            await open_page(page, self.url, tab)
        page.errors.clear()
        return page

    async def _login(self, username: str, password: str) -> Any:
        context = await self.browser.new_context(
            viewport={"width": 1400, "height": 900}
        )
        context.set_default_timeout(TIMEOUT)
        page = await context.new_page()
        page.errors = []  # uncaught errors in the page's JavaScript
        page.on("pageerror", lambda exc: _page_error(page, exc))
        await page.goto(self.url + "/", wait_until="domcontentloaded")
        await page.get_by_label("Username or Email *").fill(username)
        await page.get_by_label("Password *").first.fill(password)
        async with page.expect_response(
            lambda r: r.url.endswith("/api/v1/auth") and r.request.method == "POST"
        ) as answer:
            await page.get_by_role("button", name="Login").click()
        response = await answer.value
        assert response.ok, f"login of {username} refused: {await response.text()}"
        # the session cookie is set: go straight to the extension, not via the wallet
        return page

    async def close(self) -> None:
        for page in self.pages.values():
            await page.context.close()


def _page_error(page: Any, exc: Any) -> None:
    # LNbits 1.6.2's own sidebar throws when a payment reaches one of the user's
    # wallets while no wallet page is open (lnbits-manage-wallet-list reads
    # g.wallet.id, null outside the wallet page): not this page's error.
    if "onWebsocketMessage" in (exc.stack or ""):
        return
    page.errors.append(f"{exc}\n{exc.stack}")


async def open_page(page: Any, url: str, tab: str = "") -> None:
    target = f"{url}/satmachineadmin/" + (f"?tab={tab}" if tab else "")
    await page.goto(target, wait_until="domcontentloaded")
    await page.get_by_test_id("satmachine-page").wait_for()


async def tab(page: Any, name: str) -> None:
    await page.get_by_role("tab", name=name).click()


async def choose(page: Any, label: str, option: str, scope: Any = None) -> None:
    """Pick `option` in the q-select labelled `label`."""
    await (scope or page).get_by_label(label, exact=True).click()
    await page.get_by_role("option", name=option).first.click()


async def notified(page: Any, text: str) -> None:
    await page.locator(".q-notification").filter(has_text=text).first.wait_for()


def rows(page: Any, test_id: str) -> Any:
    return page.get_by_test_id(test_id).locator("tbody tr")


async def shot(page: Any, folder: Optional[Path], name: str) -> None:
    """A screenshot for the README, when SATMACHINE_SCREENSHOTS names a folder."""
    if folder is None:
        return
    await dismiss_notifications(page)
    await page.wait_for_timeout(400)  # let animations and charts settle
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    _shrink(path)


def _shrink(path: Path) -> None:
    """256 colours, no dithering: a tenth of the size, the same picture for a UI.
    Pillow comes with LNbits; without it the full-colour file stays."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    small.save(path, optimize=True)


async def dismiss_notifications(page: Any) -> None:
    await page.evaluate(
        "document.querySelectorAll('.q-notification').forEach(n => n.remove())"
    )
