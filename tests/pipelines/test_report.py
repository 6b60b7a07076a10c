"""The retention report's flow, and the page drawn by a real browser.

The browser tests render the report of a small generated history in headless Chromium (Debian
packages ``chromium``, ``chromium-driver``) and check every chart is drawn with a real size and
the screenshot is not blank; they are skipped, saying why, when Chromium is not installed.
The analyses and the page on hand-made data are tested in ``tests/reporting/test_report.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def generated_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a small generated history (no model, no risk list), via `run_report`."""
    from features.synthetic import GeneratorParams, generate_crm_data, write_crm_data
    from pipelines.config import load_config
    from pipelines.report import run_report

    root = tmp_path_factory.mktemp("report")
    write_crm_data(generate_crm_data(GeneratorParams(n_customers=800, seed=3)), root / "data")
    cfg = load_config(
        None,
        {
            "data.events": {"path": str(root / "data" / "events.parquet")},
            "data.customers": {"path": str(root / "data" / "customers.parquet")},
            "data.subscriptions": {"path": str(root / "data" / "subscriptions.parquet")},
            "data.quarantine_dir": str(root / "quarantine"),
            "output_dir": str(root / "output"),
            "cutoffs.count": 3,
            "training.mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "training.mlflow.artifact_location": str(root / "artifacts"),
        },
        environ={},
    )
    return run_report(cfg)


@pytest.mark.slow
def test_run_report_writes_every_section(generated_report: Path):
    assert generated_report.name == "retention_report.html"
    page = generated_report.read_text(encoding="utf-8")
    for anchor in ("churn", "cohorts", "value", "segments", "behaviours", "backtest", "at-risk"):
        assert f"id='{anchor}'" in page
    assert "A: key customers (top 20%)" in page and "Decline: fading away" in page
    assert "No risk list at" in page and "no churn champion in the registry" in page


def _chromium(*arguments: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


_MEASURE = """<script>
document.addEventListener('DOMContentLoaded', () => {
  const boxes = [...document.querySelectorAll('figure svg, img')].map(element => {
    const box = element.getBoundingClientRect();
    return [box.width, box.height];
  });
  const out = document.createElement('pre');
  out.id = 'chart-sizes';
  out.textContent = JSON.stringify(boxes);
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow
@needs_chromium
def test_every_chart_is_drawn_with_a_real_size_in_chromium(generated_report: Path, tmp_path):
    page = generated_report.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page, encoding="utf-8")
    dom = _chromium("--window-size=1200,900", "--dump-dom", probe.as_uri()).stdout
    match = re.search(r'<pre id="chart-sizes">(.*?)</pre>', dom, re.S)
    assert match, "the measuring script did not run"
    sizes = json.loads(match.group(1))
    assert len(sizes) >= 10  # churn, 2 cohorts, Pareto, 4 segments, behaviours, backtest...
    assert all(width > 200 and height > 100 for width, height in sizes), sizes


@pytest.mark.slow
@needs_chromium
def test_the_screenshot_is_not_blank(generated_report: Path, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    _chromium("--window-size=1200,2400", f"--screenshot={shot}", generated_report.as_uri())
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    histogram = image.histogram()
    dark = sum(histogram[:128]) / (image.size[0] * image.size[1])
    assert 0.01 < dark < 0.6  # text and charts on a light page, not an empty or black image
    assert len(np.unique(np.asarray(image.resize((60, 120))))) > 20
