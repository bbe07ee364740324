"""The page at GET / in headless Chromium: upload a real slice, see the overlay and the numbers.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`) or the path in
$BRAINTUMOR_CHROMIUM. Without it the test fails, unless BRAINTUMOR_SKIP_BROWSER=1 is set, which skips it.
"""

import os
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # Chromium otherwise keeps trying to reach Google's services, which a closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


# Session scope, and first in each test's arguments, so that a missing browser is reported before
# the package-scoped service starts.
@pytest.fixture(scope="session")
def chromium_path() -> Path:
    path = Path(os.environ.get("BRAINTUMOR_CHROMIUM", "/usr/bin/chromium"))
    if not path.is_file():
        if os.environ.get("BRAINTUMOR_SKIP_BROWSER") == "1":
            pytest.skip(f"Chromium not found at {path} and BRAINTUMOR_SKIP_BROWSER=1")
        pytest.fail(
            f"Chromium not found at {path}: install it with `apt-get install -y chromium`, "
            "set BRAINTUMOR_CHROMIUM to its path, or set BRAINTUMOR_SKIP_BROWSER=1 to skip this test"
        )
    return path


@pytest.fixture(scope="module")
def browser_page(chromium_path, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def test_page_scores_uploaded_slice(chromium_path, browser_page, service_url, real_slice_path):
    page = browser_page
    page.goto(f"{service_url}/")
    assert page.is_hidden("#result")

    page.set_input_files("#slice-input", str(real_slice_path))
    page.wait_for_function("document.getElementById('probability').textContent.length > 0")
    page.wait_for_function("document.getElementById('overlay').complete && document.getElementById('overlay').naturalWidth > 0")

    assert page.is_visible("#result")
    assert page.text_content("#error") == ""
    assert "%" in page.text_content("#probability")
    assert "classifier" in page.text_content("#probability")
    assert "pixels" in page.text_content("#area")
    assert page.text_content("#label").split(" (")[0] in ("tumour", "no tumour")
    assert "tiny-segmenter-1" in page.text_content("#models")
    assert "slice-zscore-v1" in page.text_content("#normalization")
    size = page.eval_on_selector("#overlay", "image => [image.naturalWidth, image.naturalHeight]")
    assert size == [256, 256]
    assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")


def test_page_shows_rejection(chromium_path, browser_page, service_url, tmp_path):
    page = browser_page
    page.goto(f"{service_url}/")
    not_an_image = tmp_path / "notes.tif"
    not_an_image.write_text("not an image")

    page.set_input_files("#slice-input", str(not_an_image))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")

    assert "HTTP 415" in page.text_content("#error")
    assert "not a TIFF, PNG or JPEG image" in page.text_content("#error")
    assert page.is_hidden("#result")
