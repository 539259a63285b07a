"""The README's main job, as a user types it: `ablate run depth --preset demo`, then its
report. It must show the paper's phenomenon, not only run: on digits, plain-44 ends with a
clearly higher training error than plain-8 (degradation) while ResNet-44 ends lower than
ResNet-8, over three seeds; and its report must give that answer, both halves tested, on
the first screen of a 1400 x 900 window, with every table and plot label whole."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from report_browser import CHROMIUM, report_layout_problems
from scipy import stats


@pytest.mark.slow
def test_readme_main_job_shows_degradation_significantly(tmp_path):
    exe = Path(sys.executable).with_name("ablate")
    run = subprocess.run(
        [str(exe), "run", "depth", "--preset", "demo", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "12 trials; 0 already done; this run: 12 finished" in run.stdout
    report = subprocess.run(
        [str(exe), "report", "depth", "--preset", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "ablate-reports" / "depth@demo"
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["status"] == "finished").all() and len(trials) == 12

    def train_errors(shortcut: str, depth: int) -> pd.Series:
        arm = trials[(trials["shortcut"] == shortcut) & (trials["depth"] == depth)]
        assert len(arm) == 3
        return 100 * arm["train/error"]

    # The README's stated results, recomputed here from the report's per-trial numbers.
    deep, shallow = train_errors("none", 44), train_errors("none", 8)
    plain = stats.ttest_ind(deep, shallow, equal_var=False)
    assert 60 <= deep.mean() <= 75 and 30 <= shallow.mean() <= 42, (deep, shallow)
    assert deep.mean() - shallow.mean() > 10 and plain.pvalue < 0.01, (deep, shallow)
    deep, shallow = train_errors("A", 44), train_errors("A", 8)
    residual = stats.ttest_ind(deep, shallow, equal_var=False)
    assert 10 <= deep.mean() <= 25 and 28 <= shallow.mean() <= 40, (deep, shallow)
    assert deep.mean() < shallow.mean() and residual.pvalue < 0.05, (deep, shallow)
    effects = pd.read_csv(out / "effects.csv").set_index("term")
    interaction = effects.loc["shortcut × depth"]
    assert -65 <= interaction["estimate_pct"] <= -40 and interaction["p"] < 0.01, interaction
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for claim in (
        "plain-44 ends with a training error between 60 and 75%, well above plain-8's 30 to 42% "
        "(Welch p < 0.01)",
        "ResNet-44 ends between 10 and 25%, below ResNet-8's 28 to 40% (Welch p < 0.05)",
        "interaction lies between -65 and -40 points",
    ):
        assert claim in " ".join(readme.split()), claim  # the README states what is checked

    page = unescape((out / "index.html").read_text())
    answer = re.search(r'<section class="[\w -]+" id="answer">.*?</section>', page, re.S)[0]
    # Both halves of the question, each tested in the answer: plain nets, then residual ones.
    p_value = r"Welch p (?:< (0\.001)|= ([\d.e-]+));"
    for sentence in (
        r"Degradation appears: plain-44 ends with [\d.]+% training error against [\d.]+% for "
        r"plain-8 \([\d.]+ points higher; " + p_value,
        r"The deeper residual net trains better: ResNet-44 ends with [\d.]+% training error "
        r"against [\d.]+% for ResNet-8 \([\d.]+ points lower; " + p_value,
    ):
        found = re.search(sentence, answer)
        assert found, (sentence, answer)
        assert float(found[1] or found[2]) < 0.05, found[0]
    assert "The benefit of shortcuts grows with depth, as the paper finds: shortcut A" in answer
    assert answer.index("The benefit of shortcuts") < answer.index("Degradation appears")
    # A reduced run: the answer describes this run and never claims the study's question.
    assert "Its verdicts hold for this reduced setting only" in page
    assert "the data show" not in answer and "describe this run only" in answer
    # The answer comes first: before the comparison, the effects and the details.
    answer = page.index('id="answer"')
    assert answer < page.index('id="comparison"') < page.index('id="details"')
    if CHROMIUM.exists():  # Debian's Chromium; the report tests say when it is missing
        assert report_layout_problems(out / "index.html", tmp_path / "first-screen.png") == []
