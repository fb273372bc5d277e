"""The budget report's HTML in a real headless Chromium: it renders its tables and plots offline,
with no console errors, fits a phone's width without scrolling sideways, and prints (Chromium is
Debian's, installed by testbed/scripts/install-chromium.sh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from report_runs import write_sample_report
from sobert_testbed import browser

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# Loads the report in a 390 px frame and writes what it measured into the DOM (the report itself has
# no script; this page is the test's).
PHONE_PROBE = """<!doctype html><html><body>
<iframe id="f" src="PAGE" style="width:390px;height:800px;border:0"></iframe>
<script>
document.getElementById('f').addEventListener('load', () => {
  const d = document.getElementById('f').contentDocument;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({scrollWidth: d.documentElement.scrollWidth,
    clientWidth: d.documentElement.clientWidth, tables: d.querySelectorAll('table').length});
  document.body.appendChild(out);
});
</script></body></html>"""


OFFLINE = ["unshare", "--net"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def chromium() -> str:
    return browser.chromium()  # not installable: a skip, a failure under CI (testbed_plugin)


def test_report_html_renders_offline_without_console_errors(chromium, tmp_path):
    _, report, markdown = write_sample_report(tmp_path)
    assert report["state"] == "budget-stopped" and "| pretrain |" in markdown
    page = tmp_path / "s" / "runs" / "rep" / "cost" / "report.html"
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    # Offline: the screenshot is taken in a network namespace of its own, with no route anywhere.
    result = subprocess.run(
        [*OFFLINE, chromium, *flags, "--window-size=1000,1600", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists(), result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.stdout.count("<img") == 3 and "Budget report: run rep" in dom.stdout  # spend, phases, loss
    assert dom.stdout.count("<table") >= 2 and "<pre" not in dom.stdout and "| ---" not in dom.stdout
    assert "<td>pretrain</td>" in dom.stdout

    # At a phone's width (390 CSS px) the page lays out without a sideways scroll.
    probe = tmp_path / "probe.html"
    probe.write_text(PHONE_PROBE.replace("PAGE", page.as_uri()))
    laid_out = subprocess.run([chromium, *flags, "--allow-file-access-from-files", "--virtual-time-budget=10000",
                               "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    measured = json.loads(laid_out.stdout.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0])
    assert measured["tables"] >= 2 and measured["scrollWidth"] <= measured["clientWidth"] <= 390, measured
    phone = tmp_path / "phone.png"
    subprocess.run([chromium, *flags, "--window-size=390,1600", f"--screenshot={phone}", page.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    assert phone.exists()

    # Printed: a PDF with the report's text on its pages.
    pdf = tmp_path / "report.pdf"
    subprocess.run([chromium, *flags, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    assert pdf.exists() and pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000
    from PIL import Image

    image = Image.open(shot).convert("L")
    lo, hi = image.getextrema()
    assert hi - lo > 100  # plots drawn: not a blank page
    colors = len(set(image.resize((200, 320)).get_flattened_data()))
    assert colors > 20
