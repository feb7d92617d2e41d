"""The project sheet in headless Chromium: two people edit live; paste, fill down, history, the past."""

from __future__ import annotations

import time

import pytest

from metadata.models import Event, Property, PropertyType, Template, TemplateProperty
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from metadata.services.projects import create_project, set_member
from portal.models import User
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]

PASSWORD = "sheet-pw-123"


@pytest.fixture
def lab():
    people = {name: User.objects.create_user(name, password=PASSWORD) for name in ("alice", "bob", "carol")}
    species, _ = Property.objects.update_or_create(key="species", defaults={
        "label": "Species", "type": PropertyType.CHOICE, "description": "Latin name",
        "options": [{"value": "Homo sapiens", "description": "human"}, {"value": "Mus musculus"}]})
    tissue, _ = Property.objects.update_or_create(key="tissue", defaults={
        "label": "Tissue", "type": PropertyType.TEXT, "options": []})
    slide, _ = Property.objects.update_or_create(key="slide_link", defaults={
        "label": "Slide", "type": PropertyType.SLIDE, "options": []})
    template = Template.objects.create(key="sheet_test", name="Sheet test", entity_kinds=[
        {"key": "sample", "label": "Sample", "prefix": "S"}])
    for position, prop in enumerate([species, tissue, slide]):
        TemplateProperty.objects.create(
            template=template, property=prop, entity_kind="sample", position=position
        )
    project = create_project(name="Live lab", description="", owner=people["alice"], template=template)
    set_member(project, people["bob"], "writer", actor=people["alice"])
    set_member(project, people["carol"], "reader", actor=people["alice"])
    samples = create_entities(project.entity_kinds.get(key="sample"), 4, user=people["alice"])
    return project, people, samples


def open_sheet(browser, base: str, username: str, project):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    sign_in(page, base, username, PASSWORD)
    page.goto(f"{base}/projects/{project.pk}/sheet/")
    page.wait_for_function("window.portalSheet && window.portalSheet.ready")
    page.wait_for_function("document.getElementById('sheet-connection').dataset.state === 'open'")
    return context, page


def cell(page, entity_id: int, field: str):
    return page.locator(f".tabulator-row:has(.tabulator-cell[tabulator-field='_mnemonic']) "
                        f".tabulator-cell[tabulator-field='{field}']").nth(
        page.evaluate(f"window.portalSheet.table.getRow({entity_id}).getPosition() - 1"))


def cell_text(page, entity_id: int, field: str) -> str:
    return page.evaluate(
        f"window.portalSheet.table.getRow({entity_id}).getCell('{field}').getElement().textContent")


def wait_cell(page, entity_id: int, field: str, text: str, timeout: float = 5000) -> None:
    page.wait_for_function(  # rows are briefly absent while the sheet reloads
        f"(() => {{ const row = window.portalSheet.table.getRow({entity_id});"
        f" return row && row.getCell('{field}').getElement().textContent === {text!r}; }})()",
        timeout=timeout)


def wait_message(page, condition: str) -> None:
    page.wait_for_function(f"document.getElementById('sheet-message').textContent.{condition}"
                           if condition.startswith("startsWith") else
                           f"document.getElementById('sheet-message').textContent {condition}")


def stored(entity, key: str):
    event = Event.objects.filter(entity=entity, property__key=key).order_by("-timestamp", "-id").first()
    return event.value if event else None


def test_two_people_see_each_others_edits_live(browser, asgi_server, lab):
    project, people, samples = lab
    first, second = samples[0], samples[1]
    alice_context, alice = open_sheet(browser, asgi_server.url, "alice", project)
    bob_context, bob = open_sheet(browser, asgi_server.url, "bob", project)
    navigations = []
    bob.on("framenavigated", lambda frame: navigations.append(frame.url))

    # Alice types into a cell (keyboard: select, type, Enter); Bob sees it without reloading.
    cell(alice, first.pk, "tissue").click()
    alice.keyboard.type("lung")
    started = time.monotonic()
    alice.keyboard.press("Enter")
    wait_cell(bob, first.pk, "tissue", "lung")
    latency = time.monotonic() - started
    print(f"edit seen by the other browser after {latency * 1000:.0f} ms")
    assert stored(first, "tissue") == "lung"
    marked = bob.evaluate(
        f"(() => {{ const el = window.portalSheet.table.getRow({first.pk}).getCell('tissue').getElement();"
        " return [el.classList.contains('cell-remote'), el.dataset.author, el.title]; })()")
    assert marked[0] and marked[1] == "alice" and "Changed by alice" in marked[2]

    # Bob's edit reaches Alice the same way.
    cell(bob, second.pk, "tissue").dblclick()
    bob.keyboard.type("liver")
    bob.keyboard.press("Enter")
    wait_cell(alice, second.pk, "tissue", "liver")

    # Both change one cell at the same moment: both end with the later event's value.
    alice.evaluate(f"window.portalSheet.table.getRow({first.pk}).getCell('species').setValue('Mus musculus')")
    bob.evaluate(f"window.portalSheet.table.getRow({first.pk}).getCell('species').setValue('Homo sapiens')")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        final = stored(first, "species")
        if Event.objects.filter(entity=first, property__key="species").count() >= 1 and final and (
            cell_text(alice, first.pk, "species") == cell_text(bob, first.pk, "species") == final
        ):
            break
        time.sleep(0.1)
    final = stored(first, "species")
    assert cell_text(alice, first.pk, "species") == cell_text(bob, first.pk, "species") == final
    assert navigations == [], "the sheet must update without reloading"

    # A row's page links to it in the sheet: selected and in view.
    alice.goto(f"{asgi_server.url}/projects/{project.pk}/sheet/?row={samples[3].mnemonic}")
    alice.wait_for_function("window.portalSheet && window.portalSheet.ready")
    alice.wait_for_function(
        f"window.portalSheet.table.getRanges()[0]?.getRows()[0]?.getData()._id === {samples[3].pk}")

    # A reader sees edits live but cannot change anything.
    carol_context, carol = open_sheet(browser, asgi_server.url, "carol", project)
    assert carol.locator("#add-rows").count() == 0
    cell(carol, samples[2].pk, "tissue").dblclick()
    assert carol.locator(".tabulator-cell.tabulator-editing").count() == 0
    append_events(project, [{"entity": samples[2].pk, "property": "tissue", "value": "colon"}],
                  author=people["bob"])
    wait_cell(carol, samples[2].pk, "tissue", "colon")
    for context in (alice_context, bob_context, carol_context):
        context.close()


def test_spreadsheet_tools(browser, asgi_server, lab):
    project, people, samples = lab
    before_edits = append_events(project, [{"entity": samples[0].pk, "property": "tissue", "value": "skin"}],
                                 author=people["bob"]).timestamp
    time.sleep(1.1)  # the as-of picker has a resolution of one second
    context, page = open_sheet(browser, asgi_server.url, "alice", project)
    assert page.locator("#sheet-count").inner_text() == "4 rows"

    # Invalid values are saved and shown red with the reason; the option's case variant is named.
    cell(page, samples[0].pk, "species").click()
    page.keyboard.type("homo sapiens")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"window.portalSheet.table.getRow({samples[0].pk}).getCell('species').getElement()"
        ".classList.contains('cell-invalid')")
    title = page.evaluate(
        f"window.portalSheet.table.getRow({samples[0].pk}).getCell('species').getElement().title")
    assert "did you mean 'Homo sapiens'" in title
    page.wait_for_function("document.getElementById('sheet-message').textContent.startsWith('Saved')")
    assert stored(samples[0], "species") == "homo sapiens"

    # Paste a 2 × 2 block from a spreadsheet program: one batch.
    batches_before = Event.objects.values("batch").distinct().count()
    cell(page, samples[1].pk, "species").click()
    page.evaluate("""() => {
        const data = new DataTransfer();
        data.setData('text/plain', 'Mus musculus\\tbone\\r\\nHomo sapiens\\t"brain, left"\\r\\n');
        document.querySelector('#sheet .tabulator-tableholder').dispatchEvent(
            new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
    }""")
    wait_cell(page, samples[2].pk, "tissue", "brain, left")
    page.wait_for_function("document.getElementById('sheet-message').textContent === 'Saved 4 changes.'")
    assert [stored(samples[1], "species"), stored(samples[1], "tissue"),
            stored(samples[2], "species"), stored(samples[2], "tissue")] == [
        "Mus musculus", "bone", "Homo sapiens", "brain, left"]
    assert Event.objects.values("batch").distinct().count() == batches_before + 1

    # Fill down: select three cells of a column with Shift+↓ and press Ctrl+D.
    cell(page, samples[1].pk, "tissue").click()
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Control+d")
    wait_cell(page, samples[3].pk, "tissue", "bone")
    page.wait_for_function("document.getElementById('sheet-message').textContent.startsWith('Saved')")
    assert stored(samples[2], "tissue") == stored(samples[3], "tissue") == "bone"

    # A link to a slide that does not exist (or is hidden) is marked as such.
    cell(page, samples[3].pk, "slide_link").click()
    page.keyboard.type("41")
    page.keyboard.press("Enter")
    page.wait_for_function(
        f"window.portalSheet.table.getRow({samples[3].pk}).getCell('slide_link').getElement()"
        ".querySelector('.link-missing') !== null")

    # Cell history (Alt+H) lists who set what.
    cell(page, samples[0].pk, "tissue").click()
    page.keyboard.press("Alt+h")
    dialog = page.locator("#history-dialog")
    dialog.wait_for(state="visible")
    page.wait_for_function("document.querySelector('#history-body li') !== null")
    assert "bob" in dialog.inner_text() and "“skin”" in dialog.inner_text()
    dialog.get_by_role("button", name="Close").click()

    # Recent changes: undo the fill-down (one batch); the cells get their earlier values back.
    page.get_by_role("button", name="Recent changes").click()
    changes = page.locator("#batches-dialog")
    changes.locator("li").first.wait_for()
    fill = changes.locator("li").nth(1)  # the newest is the slide link
    assert "alice changed 2 cells" in fill.inner_text()
    fill.get_by_role("button", name="Undo").click()
    wait_message(page, "startsWith('Undone: 2 cells')")
    changes.get_by_role("button", name="Close").click()
    wait_cell(page, samples[2].pk, "tissue", "brain, left")
    wait_cell(page, samples[3].pk, "tissue", "")

    # Add rows.
    page.locator("#add-count").fill("2")
    page.get_by_role("button", name="Add rows").click()
    page.wait_for_function("document.getElementById('sheet-count').textContent === '6 rows'")

    # The past: read-only, with the cells changed since marked.
    local = page.evaluate(f"""(() => {{ const d = new Date({before_edits.timestamp() * 1000 + 1000});
        const p = (n) => String(n).padStart(2, '0');
        return `${{d.getFullYear()}}-${{p(d.getMonth() + 1)}}-${{p(d.getDate())}}`
            + `T${{p(d.getHours())}}:${{p(d.getMinutes())}}:${{p(d.getSeconds())}}`; }})()""")
    page.locator("#as-of").fill(local)
    page.get_by_role("button", name="Show").click()
    page.locator("#as-of-banner").wait_for(state="visible")
    assert "Read-only" in page.locator("#as-of-banner").inner_text()
    wait_cell(page, samples[1].pk, "tissue", "")
    assert cell_text(page, samples[0].pk, "tissue") == "skin"
    assert page.evaluate(
        f"window.portalSheet.table.getRow({samples[1].pk}).getCell('tissue').getElement()"
        ".classList.contains('cell-diff')")
    assert page.locator("#sheet-count").inner_text() == "4 rows"
    cell(page, samples[1].pk, "tissue").dblclick()
    assert page.locator(".tabulator-cell.tabulator-editing").count() == 0
    page.screenshot(path=str(asgi_server.log_path.parent / "sheet-past.png"))
    page.get_by_role("button", name="Back to now").click()
    wait_cell(page, samples[1].pk, "tissue", "bone")
    page.screenshot(path=str(asgi_server.log_path.parent / "sheet.png"))

    # A project admin redacts a value from the history (with a reason, audited).
    page.on("dialog", lambda prompt: prompt.accept("personal data"))
    cell(page, samples[0].pk, "tissue").click()
    page.get_by_role("button", name="Cell history").click()
    page.locator("#history-body li").first.wait_for()
    page.locator("#history-body").get_by_role("button", name="Redact…").click()
    wait_message(page, "=== 'The value was redacted.'")
    wait_cell(page, samples[0].pk, "tissue", "")
    page.wait_for_function("document.getElementById('history-body').textContent.includes('later redacted')")
    assert Event.objects.get(entity=samples[0], property__key="tissue", kind="set").redacted
    context.close()


def test_a_long_sheet_shows_its_first_rows_then_all(browser, asgi_server, lab):
    project, people, samples = lab
    more = create_entities(project.entity_kinds.get(key="sample"), 400, user=people["alice"])
    context, page = open_sheet(browser, asgi_server.url, "bob", project)
    page.wait_for_function("window.portalSheet.complete", timeout=15000)
    assert page.locator("#sheet-count").inner_text() == "404 rows"
    # The last row came with the rest: it can be edited like the first.
    page.evaluate(f"window.portalSheet.table.scrollToRow({more[-1].pk}, 'center', false)")
    page.evaluate(f"window.portalSheet.table.getRow({more[-1].pk}).getCell('tissue').setValue('skin')")
    deadline = time.monotonic() + 5
    while stored(more[-1], "tissue") != "skin" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored(more[-1], "tissue") == "skin"
    context.close()
