"""report.html of a diagnose run, opened from disk in a real headless Chromium: every image decodes.

Skipped where no Chromium/Chrome is installed (Debian: ``apt-get install chromium``).
"""

import json
import re
import shutil
import subprocess

import pytest

from descentlab.cli import main
from descentlab.experiments.rundir import RunDir

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)

pytestmark = [pytest.mark.browser, pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed")]

# Appended to a copy of the page: after load, write what the browser made of every image into the DOM.
_PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(img => ({
    complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
  const out = document.createElement("pre");
  out.id = "probe";
  const mark = "@@" + "PROBE";  // split so the marker itself is not in the page source
  out.textContent = mark + JSON.stringify({images: images, tables: document.querySelectorAll("table").length,
                                           title: document.title}) + mark;
  document.body.appendChild(out);
});
</script>
"""


def _open_in_browser(page, profile):
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r"@@PROBE(.*?)@@PROBE", result.stdout, re.S)
    assert match, f"the browser did not run the page's script: {result.stderr[-500:]}"
    return json.loads(match.group(1))


def test_report_opens_from_disk_and_every_image_decodes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["diagnose", "--steps", "120", "--window", "20", "--max-stalls", "1", "--out", str(out),
                 "--no-progress"]) == 0
    stalls = RunDir.open(out).read_json("stalls.json")
    diagnosed = sum(1 for s in stalls if s["status"] == "diagnosed")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text((out / "report.html").read_text().replace("</body>", _PROBE + "</body>"))
    seen = _open_in_browser(probe_page, tmp_path / "profile")
    assert seen["title"].startswith("diagnose:")
    # the loss curve, then per diagnosed stall its spectrum, its escape-direction slice and its remedy trials
    tried = sum(1 for s in stalls if (s.get("trials") or {}).get("status") == "ran")
    assert tried == diagnosed and len(seen["images"]) == 1 + 3 * diagnosed
    assert all(img["complete"] and img["width"] > 100 and img["height"] > 100 for img in seen["images"])
    assert seen["tables"] >= 1
