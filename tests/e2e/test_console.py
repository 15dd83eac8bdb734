"""The web console at `/` in a real browser: Debian's chromium driven by Playwright.

Each test runs `certgraph migrate`, `certgraph seed` and `certgraph serve` as real processes
(auth off, sandbox on, the simulated CA deciding only when told), opens the console and acts
as a user would. Screenshots of the main states go to `test-artifacts/console/`.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.support import CERTGRAPH, cli_env, free_port, stop_process, wait_until

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 420, "height": 860}
# Seeded by `certgraph seed`: two certificates per status, 22 listed (DELETED is left out).
SEEDED_LISTED = 22
PENDING_DOMAIN = "Pending domain name verification-1"

expect.set_options(timeout=15_000)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png")


# ---- a real server


@dataclass(frozen=True)
class Served:
    base_url: str
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [CERTGRAPH, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"certgraph {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout


@contextmanager
def certgraph_server(directory: Path, **settings: str) -> Iterator[Served]:
    """Migrate, seed and serve a fresh SQLite database."""
    values = {
        "auth": "off",
        "sandbox": "1",
        "env": "development",
        "ca_auto_decide_seconds": "0",
        "ca_poll_seconds": "0.2",
        **settings,
    }
    served = Served("", cli_env(f"sqlite+aiosqlite:///{directory / 'console.db'}", **values))
    served.cli("migrate")
    served.cli("seed")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = directory / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [CERTGRAPH, "serve", "--port", str(port)],
            env=served.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            try:
                return httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, what="`certgraph serve` to be ready")
        yield Served(base_url, served.env)
    finally:
        stop_process(process, signal.SIGINT, timeout=15)


StartServer = Callable[..., Served]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Starts one server (settings as keyword arguments); it is stopped after the test."""
    with ExitStack() as stack:

        def start(**settings: str) -> Served:
            return stack.enter_context(certgraph_server(tmp_path, **settings))

        yield start


# ---- a real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium: make browser-deps"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"the console raised JavaScript errors: {errors}"


def open_console(page: Page, base_url: str, *, sandbox: bool = True) -> None:
    page.goto(f"{base_url}/")
    wait_for_the_list(page)
    sandbox_column = expect(page.get_by_role("columnheader", name="CA sandbox"))
    sandbox_column.to_be_visible() if sandbox else sandbox_column.to_be_hidden()
    # Any reload from here on would drop this marker.
    page.evaluate("window.__sameDocument = true")


def wait_for_the_list(page: Page) -> None:
    expect(page.locator("#summary")).to_contain_text(f"of {SEEDED_LISTED} certificates")
    # The subscription is up: changes arrive over the socket, not by polling.
    expect(page.locator("#live")).to_have_text("Live updates on")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def row(page: Page, name: str) -> Locator:
    header = page.get_by_role("rowheader", name=name, exact=True)
    return page.locator("#rows tr").filter(has=header)


def status_of(certificate: Locator) -> Locator:
    return certificate.locator('[data-role="status-label"]')


def withdraw_through_the_dialog(page: Page, certificate: Locator) -> None:
    certificate.get_by_role("button", name="Withdraw Application").click()
    dialog = page.get_by_role("dialog", name="Cancel Application")
    expect(dialog).to_be_visible()
    # Keyboard: focus starts on Cancel, Tab reaches Submit, Enter submits.
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Submit")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()


# ---- the tests


def test_the_list_shows_the_seeded_certificates_and_the_filters_narrow_it(
    start_server: StartServer, page: Page
) -> None:
    open_console(page, start_server().base_url)

    rows = page.locator("#rows tr")
    expect(rows).to_have_count(20)
    pending = row(page, PENDING_DOMAIN)
    expect(pending).to_contain_text("pending-domain-verification-1.example.com")
    expect(status_of(pending)).to_have_text("Pending domain name verification")
    expect(pending.get_by_role("button", name="Withdraw Application")).to_be_visible()
    expect(pending.get_by_role("button", name="Delete")).to_be_visible()
    screenshot(page, "01-list")

    page.get_by_role("button", name="Next").click()
    expect(rows).to_have_count(SEEDED_LISTED - 20)
    expect(page.locator("#summary")).to_have_text(
        f"Showing 21\N{EN DASH}{SEEDED_LISTED} of {SEEDED_LISTED} certificates"
    )
    page.get_by_role("button", name="Previous").click()
    expect(rows).to_have_count(20)

    page.get_by_label("Status", exact=True).select_option(label="Issued")
    expect(rows).to_have_count(2)
    for index in range(2):
        expect(status_of(rows.nth(index))).to_have_text("Issued")
        expect(rows.nth(index).get_by_role("button", name="Revoke")).to_be_visible()
    expect(page.locator("#summary")).to_have_text("Showing 1\N{EN DASH}2 of 2 certificates")

    page.get_by_label("Status", exact=True).select_option(label="All statuses")
    page.get_by_label("Search").fill("pending-domain-verification-1")
    expect(rows).to_have_count(1)
    expect(row(page, PENDING_DOMAIN)).to_be_visible()
    screenshot(page, "02-search")

    page.get_by_label("Search").fill("")
    expect(rows).to_have_count(20)
    page.set_viewport_size(NARROW)
    expect(pending.get_by_role("button", name="Withdraw Application")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the narrow page scrolls sideways"
    )
    screenshot(page, "03-narrow")


def test_withdraw_application_then_the_ca_approves_it_live(
    start_server: StartServer, page: Page
) -> None:
    open_console(page, start_server().base_url)
    certificate = row(page, PENDING_DOMAIN)

    # Escape closes the dialog without withdrawing and gives the focus back.
    opener = certificate.get_by_role("button", name="Withdraw Application")
    opener.click()
    dialog = page.get_by_role("dialog", name="Cancel Application")
    expect(dialog).to_contain_text("The CA will stop approving the information")
    expect(dialog).to_contain_text("The CA may already have approved it")
    expect(dialog).to_contain_text("cannot be undone")
    screenshot(page, "04-cancel-application-dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    expect(status_of(certificate)).to_have_text("Pending domain name verification")

    withdraw_through_the_dialog(page, certificate)

    toast = page.locator("#toasts").get_by_role("status")
    expect(toast).to_contain_text("Request for canceling the application submitted successfully")
    box = toast.bounding_box()
    assert box is not None
    assert box["y"] < 100 and box["x"] + box["width"] > WIDE["width"] - 40, "not upper right"
    expect(status_of(certificate)).to_have_text("CA verifying (application withdrawal)")
    expect(certificate).to_contain_text("Withdrawal requested")
    screenshot(page, "05-withdrawal-submitted")

    certificate.get_by_role("button", name="APPROVE").click()

    expect(status_of(certificate)).to_have_text("Pending application")
    expect(certificate).to_contain_text("Withdrawn")
    expect(certificate.get_by_role("button", name="Apply")).to_be_visible()
    assert same_document(page), "the page reloaded"
    screenshot(page, "06-withdrawn")


def test_withdrawing_after_the_ca_already_approved_shows_why_it_failed(
    start_server: StartServer, page: Page
) -> None:
    # The worker asks the CA once at start, then not again for a minute: the service learns
    # of the sandbox ISSUE only when the withdrawal asks the CA (at 0.2 s it would race).
    open_console(page, start_server(ca_poll_seconds="60").base_url)
    certificate = row(page, PENDING_DOMAIN)

    certificate.get_by_role("button", name="ISSUE").click()
    expect(page.locator("#toasts").get_by_role("status")).to_contain_text("Simulated CA: ISSUE")
    expect(status_of(certificate)).to_have_text("Pending domain name verification")

    withdraw_through_the_dialog(page, certificate)

    alert = page.locator("#toasts").get_by_role("alert")
    expect(alert).to_contain_text(
        "The CA had already approved this certificate; the withdrawal failed."
    )
    expect(status_of(certificate)).to_have_text("Issued")
    expect(certificate).to_contain_text("Withdrawal failed: the CA had already approved it")
    expect(certificate.get_by_role("button", name="Withdraw Application")).to_have_count(0)
    assert same_document(page), "the page reloaded"
    screenshot(page, "07-already-approved")


def test_without_the_sandbox_there_is_no_sandbox_column(
    start_server: StartServer, page: Page
) -> None:
    open_console(page, start_server(sandbox="0").base_url, sandbox=False)

    certificate = row(page, PENDING_DOMAIN)
    expect(certificate.get_by_role("button", name="Withdraw Application")).to_be_visible()
    expect(certificate.get_by_role("button", name="APPROVE")).to_be_hidden()


def test_the_console_asks_for_a_token_when_the_server_needs_one(
    start_server: StartServer, page: Page
) -> None:
    served = start_server(auth="token")
    token = served.cli("token", "create", "--tenant", "dev").strip().splitlines()[-1]

    page.goto(f"{served.base_url}/")
    prompt = page.get_by_role("dialog", name="API token")
    expect(prompt).to_be_visible()
    expect(page.get_by_label("Token", exact=True)).to_be_focused()
    page.get_by_label("Token", exact=True).fill("not-a-token")
    page.keyboard.press("Enter")
    expect(prompt).to_contain_text("The server refused that token")
    screenshot(page, "08-token-prompt")
    page.get_by_label("Token", exact=True).fill(token)
    page.keyboard.press("Enter")
    expect(prompt).to_be_hidden()
    wait_for_the_list(page)
    expect(page.locator("#tenant")).to_have_text("Tenant: dev")

    # The token is kept for the session: a reload asks no more.
    page.reload()
    wait_for_the_list(page)
    expect(prompt).to_be_hidden()


def test_apply_asks_for_the_organization_only_for_ov_and_ev(
    start_server: StartServer, page: Page
) -> None:
    open_console(page, start_server().base_url)
    dialog = page.get_by_role("dialog", name="Apply for certificate")

    dv = row(page, "Pending application-1")
    dv.get_by_role("button", name="Apply").click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Organization name")).to_be_hidden()
    dialog.get_by_label("Domain", exact=True).fill("Shop.Example.com")
    dialog.get_by_label("Validation method").select_option("HTTP")
    dialog.get_by_role("button", name="Apply").click()
    expect(dialog).to_be_hidden()
    expect(status_of(dv)).to_have_text("Pending domain name verification")
    expect(dv).to_contain_text("shop.example.com")

    ev = row(page, "Verification failed-1")
    ev.get_by_role("button", name="Apply").click()
    expect(dialog.get_by_label("Domain", exact=True)).to_have_value("rejected-1.example.com")
    dialog.get_by_role("button", name="Apply").click()
    expect(dialog.get_by_role("alert")).to_contain_text("organization name")
    dialog.get_by_label("Organization name").fill("Example Ltd")
    dialog.get_by_label("Country").fill("gb")
    screenshot(page, "09-apply-ev")
    dialog.get_by_role("button", name="Apply").click()
    expect(dialog).to_be_hidden()
    expect(status_of(ev)).to_have_text("Pending domain name verification")


def test_while_the_socket_is_down_the_console_polls(start_server: StartServer, page: Page) -> None:
    served = start_server()
    # Every WebSocket the page opens is closed at once, as by a proxy that refuses them.
    page.route_web_socket("**/graphql", lambda socket: socket.close())
    page.goto(f"{served.base_url}/")
    expect(page.locator("#summary")).to_contain_text(f"of {SEEDED_LISTED} certificates")
    expect(page.locator("#live")).to_have_text("Live updates off: refreshing every 5 s")
    page.evaluate("window.__sameDocument = true")
    certificate = row(page, PENDING_DOMAIN)
    certificate_id = certificate.get_attribute("data-id")

    # Someone else withdraws the application, through the API.
    answer = httpx.post(
        f"{served.base_url}/graphql",
        json={
            "query": "mutation($id: ID!) { withdrawApplication(input: {certificateId: $id})"
            " { __typename } }",
            "variables": {"id": certificate_id},
        },
    ).json()
    assert answer == {"data": {"withdrawApplication": {"__typename": "WithdrawApplicationSuccess"}}}

    expect(status_of(certificate)).to_have_text("CA verifying (application withdrawal)")
    assert same_document(page), "the page reloaded"
