"""Playwright with Debian's Chromium, and one page object per back-office screen.

Without /usr/bin/chromium the browser tests skip with a message, unless
ORDERTALLY_REQUIRE_BROWSER=1 (CI), where they fail. With ORDERTALLY_SCREENSHOTS=1 the tests
write each screen, in each language, to docs/screens/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Response, async_playwright, expect
from playwright.async_api import Playwright as AsyncPlaywright

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENS = Path(__file__).resolve().parents[2] / "docs" / "screens"
VIEWPORT = {"width": 1360, "height": 860}


def require_browser() -> None:
    """Skip (locally) or fail (CI) when Debian's Chromium is not installed."""
    if CHROMIUM.exists():
        return
    message = "Chromium not installed: apt-get install -y chromium fonts-noto-cjk"
    if os.environ.get("ORDERTALLY_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


async def launch() -> tuple[AsyncPlaywright, Browser]:
    """Start Playwright and Debian's Chromium."""
    playwright = await async_playwright().start()
    browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
    return playwright, browser


async def screenshot(page: Page, name: str) -> None:
    """Write the screen to docs/screens/ when ORDERTALLY_SCREENSHOTS=1."""
    if os.environ.get("ORDERTALLY_SCREENSHOTS") != "1":
        return
    SCREENS.mkdir(parents=True, exist_ok=True)
    lang = await page.locator("html").get_attribute("lang")
    await page.wait_for_timeout(300)  # the chart's first frame
    await page.screenshot(path=str(SCREENS / f"{name}-{lang}.png"), full_page=True)


class Screen:
    """What every signed-in screen has: the top bar."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base

    async def switch_language(self, locale: str) -> None:
        """Use the language switch in the top bar."""
        await self.page.click(f"a[data-lang={locale}]")
        await self.page.wait_for_load_state()

    async def sign_out(self) -> None:
        """Sign out from the top bar."""
        await self.page.click("button[data-action=logout]")
        await expect(self.page).to_have_url(re.compile(r"/ui/login$"))

    async def nav_keys(self) -> list[str]:
        """The entries of the top bar."""
        return [
            key or ""
            for key in await self.page.locator("[data-nav]").evaluate_all(
                "els => els.map(e => e.dataset.nav)"
            )
        ]


class LoginPage(Screen):
    async def open(self) -> LoginPage:
        await self.page.goto(f"{self.base}/ui/login")
        return self

    async def sign_in(self, username: str, password: str) -> Dashboard:
        """Type the credentials and submit; lands on the dashboard."""
        await self.page.fill("input[name=username]", username)
        await self.page.fill("input[name=password]", password)
        await self.page.click("button[data-action=login]")
        await expect(self.page).to_have_url(f"{self.base}/ui/")
        return Dashboard(self.page, self.base)


class Dashboard(Screen):
    async def figure(self, name: str) -> str:
        """The text of one figure."""
        return (await self.page.locator(f"[data-figure={name}]").inner_text()).strip()

    async def chart_drawn(self) -> None:
        """ECharts drew the throughput chart."""
        await expect(self.page.locator("#chart-throughput canvas")).to_have_count(1)


class OrdersList(Screen):
    async def open(self) -> OrdersList:
        await self.page.goto(f"{self.base}/ui/orders")
        return self

    async def filter_status(self, status: str) -> None:
        """Pick a status; htmx replaces the table."""
        async with self.page.expect_response(re.compile(r"/ui/orders\?")):
            await self.page.select_option("select[data-filter=status]", status)

    async def search(self, words: str) -> None:
        """Type in the search box; htmx replaces the table once typing pauses."""
        async with self.page.expect_response(re.compile(r"/ui/orders\?.*q=")):
            await self.page.fill("input[data-filter=q]", words)

    async def why(self, order_no: str) -> list[str]:
        """The fields each term of the search matched, beside an order."""
        return await self.page.locator(f"[data-why='{order_no}'] [data-field]").evaluate_all(
            "spans => spans.map(s => s.dataset.field)"
        )

    async def order_numbers(self) -> list[str]:
        return await self.page.locator("tr[data-order]").evaluate_all(
            "rows => rows.map(r => r.dataset.order)"
        )

    async def open_order(self, order_no: str) -> OrderDetail:
        await self.page.click(f"tr[data-order='{order_no}'] a")
        await expect(self.page).to_have_url(f"{self.base}/ui/orders/{order_no}")
        return OrderDetail(self.page, self.base)

    async def save_view(self, name: str, *, shared: bool = False) -> None:
        """Save the current search and filters under a name."""
        await self.page.fill("form[data-form=save-view] input[name=view_name]", name)
        if shared:
            await self.page.check("form[data-form=save-view] input[name=shared]")
        await self.page.click("button[data-action=save-view]")
        await self.page.wait_for_load_state()

    async def views(self) -> list[str]:
        """The saved views offered above the filters."""
        return await self.page.locator("[data-view]").evaluate_all(
            "els => els.map(e => e.dataset.view)"
        )

    async def apply_view(self, name: str) -> None:
        await self.page.click(f"[data-view='{name}'] a")
        await self.page.wait_for_load_state()

    async def pick(self, *order_nos: str) -> None:
        """Tick orders in the list, with the keyboard (Space on each checkbox)."""
        for order_no in order_nos:
            await self.page.focus(f"input[data-pick='{order_no}']")
            await self.page.keyboard.press("Space")

    async def preview_bulk(self, action: str, *, scope: str = "picked", **fields: str) -> BatchPage:
        """Choose a bulk action and preview it: lands on the batch's page."""
        await self.page.select_option("select[data-bulk=scope]", scope)
        await self.page.select_option("select[data-bulk=action]", action)
        for name, value in fields.items():
            await self.page.fill(f"input[data-bulk={name}]", value)
        await self.page.click("button[data-action=bulk-preview]")
        await expect(self.page).to_have_url(re.compile(r"/ui/batches/\d+$"))
        return BatchPage(self.page, self.base)


class BatchPage(Screen):
    async def state(self) -> str:
        return await self.page.locator("[data-batch-state]").get_attribute("data-batch-state") or ""

    async def figure(self, name: str) -> str:
        return (await self.page.locator(f"[data-batch={name}]").inner_text()).strip()

    async def sample(self) -> list[str]:
        return await self.page.locator("[data-sample]").evaluate_all(
            "els => els.map(e => e.dataset.sample)"
        )

    async def confirm(self) -> None:
        await self.page.click("button[data-action=confirm-batch]")
        await expect(self.page.locator("[data-batch-flash]")).to_be_visible()

    async def wait_for(self, state: str) -> None:
        """htmx refreshes the progress card while the batch is queued or running."""
        await expect(self.page.locator(f"[data-batch-state={state}]")).to_be_visible(timeout=15000)


class ImportPage(Screen):
    async def open(self) -> ImportPage:
        await self.page.goto(f"{self.base}/ui/channels/import")
        return self

    async def upload(self, account: str, path: str, template: str = "") -> None:
        """Pick the account, the template and the file, and upload: lands on its progress."""
        await self.page.select_option("select[data-import=account]", account)
        await self.page.select_option("select[data-import=template]", template)
        await self.page.set_input_files("input[data-import=file]", path)
        await self.page.click("button[data-action=upload]")
        await expect(self.page).to_have_url(re.compile(r"/ui/imports/\d+$"))

    async def state(self) -> str:
        return (
            await self.page.locator("[data-import-state]").get_attribute("data-import-state") or ""
        )

    async def wait_for(self, state: str) -> None:
        """htmx refreshes the progress card while the import is queued or running."""
        await expect(self.page.locator(f"[data-import-state={state}]")).to_be_visible(timeout=15000)

    async def figure(self, name: str) -> str:
        return (await self.page.locator(f"[data-import={name}]").inner_text()).strip()

    async def download_rejected(self, to: str) -> str:
        """Download the rejected rows; returns the file's text."""
        async with self.page.expect_download() as info:
            await self.page.click("a[data-action=download-rejected]")
        download = await info.value
        await download.save_as(to)
        return Path(to).read_text(encoding="utf-8-sig")  # noqa: ASYNC240 (a small test file)


class OrderDetail(Screen):
    async def status(self) -> str:
        return await self.page.locator("[data-status]").get_attribute("data-status") or ""

    async def highlighted_node(self) -> str:
        return await self.page.locator(".node.current").get_attribute("data-node") or ""

    async def cancel(self, reason: str) -> None:
        """Cancel with a reason; the page reloads with the order closed."""
        await self.page.fill("#cancel-form input[name=reason]", reason)
        await self.page.click("button[data-action=cancel]")
        await expect(self.page.locator("[data-status]")).to_have_attribute("data-status", "closed")


class UsersPage(Screen):
    async def open(self) -> Response | None:
        return await self.page.goto(f"{self.base}/ui/users")

    async def create(self, username: str, role: str, password: str) -> None:
        await self.page.fill("#new-user input[name=username]", username)
        await self.page.select_option("#new-user select[name=role]", role)
        await self.page.fill("#new-user input[name=password]", password)
        await self.page.click("button[data-action=create-user]")
        await expect(self.page.locator(f"tr[data-user='{username}']")).to_have_count(1)


class OrderManualPayment(Screen):
    """The 补单 form on an unpaid order's page (finance)."""

    async def open(self, order_no: str) -> OrderManualPayment:
        await self.page.goto(f"{self.base}/ui/orders/{order_no}")
        return self

    async def record(self, reference: str, amount: str, day: str, reason: str) -> None:
        """Fill in the evidence and submit it; lands on the finance screen."""
        form = self.page.locator("#manual-request")
        await form.locator("input[name=reference]").fill(reference)
        await form.locator("input[name=amount]").fill(amount)
        await form.locator("input[name=paid_at]").fill(day)
        await form.locator("input[name=reason]").fill(reason)
        await self.page.click("button[data-action=request-manual]")
        await expect(self.page).to_have_url(re.compile(r"/ui/payments\?done=requested$"))


class FinancePage(Screen):
    async def open(self) -> Response | None:
        return await self.page.goto(f"{self.base}/ui/payments")

    async def pending(self) -> list[str]:
        """Ids of the 补单 requests awaiting a second person."""
        return await self.page.locator("tr[data-manual]").evaluate_all(
            "rows => rows.map(r => r.dataset.manual)"
        )

    async def approve(self, manual_id: str) -> None:
        """Press Approve on one request."""
        await self.page.click(f"tr[data-manual='{manual_id}'] button[data-action=approve]")
        await self.page.wait_for_load_state()

    async def refusal(self, manual_id: str) -> str:
        """The reason shown when a decision was refused."""
        return await self.page.locator(f"[data-refusal='{manual_id}']").inner_text()

    async def reconcile(self, provider: str, path: str) -> dict[str, str]:
        """Upload a statement; returns the count per category."""
        await self.page.select_option("#reconcile-form select[name=provider]", provider)
        await self.page.set_input_files("#reconcile-form input[name=statement]", path)
        await self.page.click("button[data-action=reconcile]")
        await expect(self.page.locator("#recon-counts")).to_have_count(1)
        return dict(
            await self.page.locator("[data-count]").evaluate_all(
                "els => els.map(e => [e.dataset.count, e.textContent.trim()])"
            )
        )


class ShippingPage(Screen):
    async def open(self) -> Response | None:
        return await self.page.goto(f"{self.base}/ui/shipping")

    async def waiting(self) -> list[str]:
        return await self.page.locator("tr[data-waiting]").evaluate_all(
            "rows => rows.map(r => r.dataset.waiting)"
        )

    async def ship(self, rows: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """Paste a shipped list and ship it; returns (line, result) per row."""
        text = "订单号,快递公司,运单号\n" + "".join(f"{o},{c},{w}\n" for o, c, w in rows)
        await self.page.fill("#ship-form textarea[name=list]", text)
        await self.page.click("button[data-action=ship-batch]")
        await expect(self.page.locator("#ship-results")).to_have_count(1)
        found = await self.page.locator("tr[data-result-line]").evaluate_all(
            "rows => rows.map(r => [r.dataset.resultLine, r.dataset.result])"
        )
        return [(line, result) for line, result in found]


class CasesList(Screen):
    """The exception workbench."""

    async def open(self) -> CasesList:
        await self.page.goto(f"{self.base}/ui/cases")
        return self

    async def filter_state(self, state: str) -> None:
        """Pick a state; htmx replaces the table."""
        async with self.page.expect_response(re.compile(r"/ui/cases\?")):
            await self.page.select_option("select[data-filter=state]", state)

    async def only_late(self) -> None:
        """Tick "past SLA only"; htmx replaces the table."""
        async with self.page.expect_response(re.compile(r"/ui/cases\?")):
            await self.page.check("input[data-filter=breached]")

    async def case_ids(self) -> list[int]:
        ids = await self.page.locator("tr[data-case]").evaluate_all(
            "rows => rows.map(r => r.dataset.case)"
        )
        return [int(i) for i in ids]

    async def row_text(self, case_id: int) -> str:
        return await self.page.locator(f"tr[data-case='{case_id}']").inner_text()

    async def open_case(self, case_id: int) -> CaseDetail:
        await self.page.click(f"a[data-open-case='{case_id}']")
        await expect(self.page).to_have_url(f"{self.base}/ui/cases/{case_id}")
        return CaseDetail(self.page, self.base)

    async def open_order_of(self, case_id: int, order_no: str) -> OrderDetail:
        await self.page.click(f"tr[data-case='{case_id}'] a.mono")
        await expect(self.page).to_have_url(f"{self.base}/ui/orders/{order_no}")
        return OrderDetail(self.page, self.base)


class CaseDetail(Screen):
    """One exception case: its facts, log and actions."""

    async def open(self, case_id: int) -> CaseDetail:
        await self.page.goto(f"{self.base}/ui/cases/{case_id}")
        return self

    async def state(self) -> str:
        return await self.page.locator("[data-state]").get_attribute("data-state") or ""

    async def owner(self) -> str:
        return await self.page.locator("[data-owner]").get_attribute("data-owner") or ""

    async def hand_off(self, role: str, evidence: dict[str, str], note: str = "") -> None:
        """Pick the role, fill in the evidence given, and hand off; the page comes back."""
        form = self.page.locator("#hand-off-form")
        await form.locator("select[name=to_role]").select_option(role)
        for key, ref in evidence.items():
            await form.locator(f"input[data-evidence-input='{key}']").fill(ref)
        await form.locator("input[name=note]").fill(note)
        await self.page.click("button[data-action=hand-off]")
        await self.page.wait_for_load_state()

    async def error(self) -> str:
        """The refusal shown beside the forms."""
        return (await self.page.locator("p.flash.error").inner_text()).strip()

    async def flash(self) -> str:
        return (await self.page.locator("[data-case-flash]").inner_text()).strip()

    async def assign_to_me(self) -> None:
        await self.page.click("button[data-action=assign-me]")
        await expect(self.page.locator("[data-case-flash]")).to_have_count(1)

    async def resolve(self, code: str, resolution: str) -> None:
        form = self.page.locator("#resolve-form")
        await form.locator("select[name=code]").select_option(code)
        await form.locator("input[name=resolution]").fill(resolution)
        await self.page.click("button[data-action=resolve-case]")
        await expect(self.page.locator("[data-state]")).to_have_attribute("data-state", "resolved")

    async def log_actions(self) -> list[str]:
        return await self.page.locator("[data-log]").evaluate_all(
            "rows => rows.map(r => r.dataset.log)"
        )


class RulesList(Screen):
    async def open(self) -> RulesList:
        await self.page.goto(f"{self.base}/ui/rules")
        return self

    async def rules(self) -> dict[str, str]:
        """Each rule's code and whether it is enabled ("yes"/"no")."""
        return dict(
            await self.page.locator("tr[data-rule]").evaluate_all(
                "rows => rows.map(r => [r.dataset.rule, r.dataset.enabled])"
            )
        )

    async def new_rule(self) -> RuleEditor:
        await self.page.click("a[data-action=new-rule]")
        await expect(self.page).to_have_url(f"{self.base}/ui/rules/new")
        return RuleEditor(self.page, self.base)


class RuleEditor(Screen):
    """The rule editor: fields, actions, dry run, save, enable."""

    async def write(
        self, code: str, name: str, trigger: str, condition: str, action: dict[str, str]
    ) -> None:
        """Fill in the rule; the first action row's fields come after its kind is picked."""
        await self.page.fill("#rule-form input[name=code]", code)
        await self.page.fill("#rule-form input[name=name]", name)
        await self.page.select_option("#rule-form select[name=trigger]", trigger)
        await self.set_condition(condition)
        kind = action.pop("kind")
        async with self.page.expect_response(re.compile(r"/ui/rules/action-fields")):
            await self.page.select_option("select[name='a0.kind']", kind)
        for param, value in action.items():
            await self.page.fill(f"input[name='a0.{param}']", value)

    async def set_condition(self, condition: str) -> None:
        await self.page.fill("#rule-form textarea[name=condition]", condition)

    async def save(self) -> None:
        await self.page.click("button[data-action=save-rule]")
        await self.page.wait_for_load_state()

    async def field_error(self, field: str) -> str:
        return (await self.page.locator(f"[data-field-error={field}]").inner_text()).strip()

    async def dry_run(self, days: int) -> tuple[int, int, list[str]]:
        """Dry-run the draft (htmx): (matched, evaluated, sample subjects)."""
        await self.page.fill("#rule-form input[name=days]", str(days))
        async with self.page.expect_response(re.compile(r"/ui/rules/dry-run")):
            await self.page.click("button[data-action=dry-run]")
        await expect(self.page.locator("[data-dry-result]")).to_have_count(1)
        matched = await self.page.locator("[data-dry=matched]").inner_text()
        evaluated = await self.page.locator("[data-dry=evaluated]").inner_text()
        subjects = await self.page.locator("[data-dry-match]").evaluate_all(
            "rows => rows.map(r => r.dataset.dryMatch)"
        )
        return int(matched.replace(",", "")), int(evaluated.replace(",", "")), subjects

    async def state(self) -> str:
        return await self.page.locator("[data-rule-state]").get_attribute("data-rule-state") or ""

    async def enable(self) -> None:
        await self.page.click("button[data-action=enable]")
        await expect(self.page.locator("[data-rule-state]")).to_have_attribute(
            "data-rule-state", "enabled"
        )

    async def versions(self) -> list[str]:
        return await self.page.locator("[data-rule-version]").evaluate_all(
            "rows => rows.map(r => r.dataset.ruleVersion)"
        )


class ReviewQueue(Screen):
    """审单: the orders waiting at a review stage."""

    async def open(self, stage: str = "cs") -> ReviewQueue:
        await self.page.goto(f"{self.base}/ui/review?stage={stage}")
        return self

    async def waiting(self) -> list[str]:
        return await self.page.locator("tr[data-review]").evaluate_all(
            "rows => rows.map(r => r.dataset.review)"
        )

    async def reasons(self, order_no: str) -> list[str]:
        return await self.page.locator(f"tr[data-review='{order_no}'] [data-reason]").evaluate_all(
            "chips => chips.map(c => c.textContent.trim())"
        )

    async def pass_order(self, order_no: str) -> None:
        await self.page.click(f"tr[data-review='{order_no}'] button[data-action=pass-review]")
        await expect(self.page.locator("[data-review-flash]")).to_have_count(1)

    async def hold(self, order_no: str, reason: str) -> None:
        """Open the row's hold form, give the reason, hold."""
        form = self.page.locator(f"[data-hold-form='{order_no}']")
        await form.locator("summary").click()
        await form.locator("[data-field=hold-reason]").fill(reason)
        await form.locator("button[data-action=hold-review]").click()
        await expect(self.page.locator("[data-review-flash]")).to_have_count(1)

    async def held(self, order_no: str) -> str:
        return (await self.page.locator(f"[data-held='{order_no}']").inner_text()).strip()

    async def edit(self, order_no: str, *, remark: str, warehouse: str) -> None:
        """Open the row's edit form, change the remark and the warehouse, save."""
        form = self.page.locator(f"[data-edit-form='{order_no}']")
        await form.locator("summary").click()
        await form.locator("[data-field=remark]").fill(remark)
        await form.locator("[data-field=warehouse]").select_option(warehouse)
        await form.locator("button[data-action=edit-review]").click()
        await expect(self.page.locator("[data-review-flash]")).to_have_count(1)

    async def shown(self, order_no: str, what: str) -> str:
        """The row's remark or warehouses line."""
        return (await self.page.locator(f"[data-{what}='{order_no}']").inner_text()).strip()


class AftersalesQueue(Screen):
    """售后: the queue of after-sales cases."""

    async def open(self, query: str = "") -> AftersalesQueue:
        await self.page.goto(f"{self.base}/ui/aftersales{query}")
        return self

    async def filter_type(self, case_type: str) -> None:
        """Pick a type; htmx replaces the table."""
        async with self.page.expect_response(re.compile(r"/ui/aftersales\?")):
            await self.page.select_option("select[data-filter=type]", case_type)

    async def case_numbers(self) -> list[str]:
        return await self.page.locator("tr[data-aftersale]").evaluate_all(
            "rows => rows.map(r => r.dataset.aftersale)"
        )

    async def open_case(self, case_no: str) -> AftersaleCasePage:
        await self.page.click(f"tr[data-aftersale='{case_no}'] a[href='/ui/aftersales/{case_no}']")
        await expect(self.page).to_have_url(f"{self.base}/ui/aftersales/{case_no}")
        return AftersaleCasePage(self.page, self.base)


class NewAftersale(Screen):
    """The form customer service opens a case with, from the order's page."""

    async def from_order(self, order_no: str) -> NewAftersale:
        await self.page.goto(f"{self.base}/ui/orders/{order_no}")
        await self.page.click("a[data-action=new-aftersale]")
        await expect(self.page).to_have_url(f"{self.base}/ui/aftersales/new?order={order_no}")
        return self

    async def open_return_and_refund(
        self, reason: str, quantities: dict[int, int], goods: str, evidence: list[str]
    ) -> AftersaleCasePage:
        """Fill in a return-and-refund and send it; lands on the new case."""
        form = self.page.locator("#new-aftersale")
        await form.locator("select[name=type]").select_option("return_refund")
        await form.locator("input[name=reason_code]").fill(reason)
        for line_no, quantity in quantities.items():
            await form.locator(f"input[name=qty_{line_no}]").fill(str(quantity))
        await form.locator("input[name=refund_goods]").fill(goods)
        await form.locator("textarea[name=evidence]").fill("\n".join(evidence))
        await self.page.click("button[data-action=open-aftersale]")
        await expect(self.page).to_have_url(re.compile(r"/ui/aftersales/AS\d+\?done=opened$"))
        return AftersaleCasePage(self.page, self.base)


class AftersaleCasePage(Screen):
    """One after-sales case and the steps the role may take."""

    async def open(self, case_no: str) -> AftersaleCasePage:
        await self.page.goto(f"{self.base}/ui/aftersales/{case_no}")
        return self

    async def case_no(self) -> str:
        return (await self.page.locator("h1 .mono").inner_text()).strip()

    async def status(self) -> str:
        return (
            await self.page.locator("h1 [data-case-status]").get_attribute("data-case-status") or ""
        )

    async def reason(self) -> tuple[str, str]:
        """The reason as the page words it, and the code behind it."""
        shown = self.page.locator("#case-facts [data-reason]")
        return (await shown.inner_text()).strip(), await shown.get_attribute("data-reason") or ""

    async def products(self) -> list[tuple[str, str]]:
        """(product name, SKU) of each line, as shown."""
        return [
            (
                (await row.locator("[data-product-name]").inner_text()).strip(),
                (await row.locator("[data-sku]").inner_text()).strip(),
            )
            for row in await self.page.locator("tr[data-case-line]").all()
        ]

    async def steps_offered(self) -> list[str]:
        return await self.page.locator("#steps button[data-action]").evaluate_all(
            "buttons => buttons.map(b => b.dataset.action)"
        )

    async def _press(self, action: str) -> None:
        await self.page.click(f"button[data-action={action}]")
        await expect(self.page.locator("[data-done]")).to_have_count(1)

    async def approve(self, responsibility: str) -> None:
        await self.page.select_option("#decide select[name=responsibility]", responsibility)
        await self._press("approve")

    async def record_return(self, warehouse: str, carrier: str, waybill: str) -> None:
        await self.page.select_option("#receive select[name=warehouse]", warehouse)
        await self.page.fill("#receive input[name=carrier]", carrier)
        await self.page.fill("#receive input[name=waybill_no]", waybill)
        await self._press("receive-return")

    async def inspect(self, warehouse: str, good: dict[int, int], damaged: dict[int, int]) -> None:
        """Per line: units good (restocked) and damaged (written off, with a reason)."""
        await self.page.select_option("#inspect select[name=warehouse]", warehouse)
        for line_no, n in good.items():
            await self.page.fill(f"#inspect input[name=good_{line_no}]", str(n))
        for line_no, n in damaged.items():
            await self.page.fill(f"#inspect input[name=damaged_{line_no}]", str(n))
            await self.page.fill(f"#inspect input[name=reason_{line_no}]", "外包装破损")
        await self._press("inspect")

    async def refund(self) -> None:
        """Refund what is left through the payment provider."""
        await self._press("refund")

    async def refund_states(self) -> list[str]:
        return await self.page.locator("tr[data-refund]").evaluate_all(
            "rows => rows.map(r => r.dataset.refundState)"
        )

    async def history(self) -> list[str]:
        return await self.page.locator("li[data-step]").evaluate_all(
            "items => items.map(i => i.dataset.step)"
        )

    async def line(self, line_no: int) -> dict[str, str]:
        row = self.page.locator(f"tr[data-case-line='{line_no}']")
        return {
            key: (await row.locator(f"[data-{key}]").inner_text()).strip()
            for key in ("received", "restocked", "written-off")
        }


class ExportsPage(Screen):
    """导出: start an export, follow it, download it."""

    async def open(self) -> ExportsPage:
        await self.page.goto(f"{self.base}/ui/exports")
        return self

    async def start(self, template: str, fmt: str, filters: dict[str, str]) -> str:
        """Choose the template (htmx brings its filters), the format and filters; start it.
        Returns the export number of the page it lands on."""
        async with self.page.expect_response(re.compile(r"/ui/exports\?template=")):
            await self.page.select_option("select[data-field=template]", template)
        await self.page.select_option("select[data-field=format]", fmt)
        for key, value in filters.items():
            await self.page.fill(f"input[data-filter={key}]", value)
        await self.page.click("button[data-action=start-export]")
        await expect(self.page).to_have_url(re.compile(r"/ui/exports/EXP[0-9A-F]+$"))
        return self.page.url.rsplit("/", 1)[1]

    async def state(self) -> str:
        return await self.page.locator("#export-progress").get_attribute("data-export-state") or ""

    async def wait_until_done(self) -> None:
        """htmx polls the progress block until the export is done."""
        await expect(self.page.locator("#export-progress")).to_have_attribute(
            "data-export-state", "done", timeout=20_000
        )

    async def manifest(self, key: str) -> str:
        return (await self.page.locator(f"[data-manifest={key}]").inner_text()).strip()

    async def download(self, into: Path) -> Path:
        """Click the download button and save the file."""
        async with self.page.expect_download() as info:
            await self.page.click("a[data-action=download]")
        download = await info.value
        target = into / download.suggested_filename
        await download.save_as(str(target))
        return target


class AnalyticsPage(Screen):
    """分析: timeliness KPIs, charts and the stage table."""

    async def open(self, date_from: str, date_to: str, by: str = "channel") -> AnalyticsPage:
        await self.page.goto(
            f"{self.base}/ui/analytics?date_from={date_from}&date_to={date_to}&by={by}"
        )
        return self

    async def charts_drawn(self) -> None:
        """ECharts drew both charts."""
        await expect(self.page.locator("#chart-stages canvas")).to_have_count(1)
        await expect(self.page.locator("#chart-daily canvas")).to_have_count(1)

    async def kpi(self, name: str) -> str:
        return (await self.page.locator(f"[data-kpi={name}]").inner_text()).strip()

    async def stage_rows(self) -> list[tuple[str, str]]:
        found = await self.page.locator("tr[data-stage]").evaluate_all(
            "rows => rows.map(r => [r.dataset.stage, r.dataset.key])"
        )
        return [(s, k) for s, k in found]
