"""Every kind of report page, opened from disk in headless Chromium at 1,280 px: nothing
overflows the page sideways (wide tables scroll inside their own box), every image decodes and
fits.

Skipped where no Chromium/Chrome is installed (Debian: ``apt-get install chromium``).
"""

import json
import re
import shutil
import subprocess

import pytest

from descentlab.cli import main

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
               None)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed")]

WIDTH = 1280

# After load: what sticks out past the viewport's right edge (outside a box that scrolls), and
# every image's decoded and drawn size.
_PROBE = """
<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const scrolls = el => { for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX; if (o === "auto" || o === "scroll") return true; } return false; };
  const over = Array.from(document.body.querySelectorAll("*"))
      .filter(el => el.getBoundingClientRect().right > width + 1 && !scrolls(el))
      .map(el => el.tagName + (el.className ? "." + el.className : ""));
  const images = Array.from(document.images).map(img => ({complete: img.complete, natural: img.naturalWidth,
      drawn: img.getBoundingClientRect().width, right: img.getBoundingClientRect().right}));
  const wraps = Array.from(document.querySelectorAll(".table-wrap")).map(w => ({
      scroll: w.scrollWidth, client: w.clientWidth, overflow: getComputedStyle(w).overflowX}));
  const out = document.createElement("pre");
  out.id = "probe";
  const mark = "@@" + "PROBE";
  out.textContent = mark + JSON.stringify({width: width, page: document.documentElement.scrollWidth, over: over,
                                           images: images, wraps: wraps}) + mark;
  document.body.appendChild(out);
});
</script>
"""

RUNS = {
    "compare": ["compare", "--optimizers", "sgd,momentum,adam", "--seeds", "1", "--budget", "2", "--steps", "20",
                "--workers", "1"],
    "batch-size": ["batch-size", "--sizes", "32,full", "--protocol", "same-epochs", "--epochs", "1", "--seeds", "1",
                   "--budget", "2", "--workers", "1"],
    "minimum-ratio": ["minimum-ratio", "--quick"],
    "diagnose": ["diagnose", "--steps", "120", "--window", "20", "--max-stalls", "1"],
    "surface": ["surface", "--steps", "40", "--animate"],
    "spectrum": ["spectrum", "--workload", "stall", "--per-layer"],
    "landscape": ["landscape", "--workload", "lecture", "--span", "2"],
    "normalization": ["normalization", "--models", "softmax,tanh", "--seeds", "2", "--steps", "30", "--rates",
                      "0.01,0.1,1"],
}


def _open(page, profile):
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--window-size={WIDTH},900", f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
               page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r"@@PROBE(.*?)@@PROBE", result.stdout, re.S)
    assert match, f"the browser did not run the page's script: {result.stderr[-500:]}"
    return json.loads(match.group(1))


@pytest.mark.parametrize("kind", list(RUNS))
def test_report_fits_a_1280_pixel_window(tmp_path, capsys, kind):
    out = tmp_path / "run"
    assert main([*RUNS[kind], "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text((out / "report.html").read_text().replace("</body>", _PROBE + "</body>"))
    seen = _open(probe_page, tmp_path / "profile")
    assert seen["width"] <= WIDTH
    assert seen["page"] <= seen["width"], f"{kind}: the page scrolls sideways; sticking out: {seen['over'][:10]}"
    assert seen["over"] == [], f"{kind}: {seen['over'][:10]}"
    assert seen["images"] and all(img["complete"] and img["natural"] > 100 for img in seen["images"]), seen["images"]
    assert all(img["right"] <= seen["width"] + 1 for img in seen["images"])
    # a table wider than the page scrolls inside its own box
    assert all(w["overflow"] == "auto" for w in seen["wraps"] if w["scroll"] > w["client"])
