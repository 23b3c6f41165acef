"""`make ablation`'s statistics by hand, and its quick setting end to end (8 rows, 2 seeds, the
shortcut experiment, report and chart)."""

import pytest

from helpers import load_script

ablation = load_script("ablation")


def test_paired_differences_and_their_interval_by_hand():
    seeds = [0, 1, 2]
    base = {"rougeL": [0.50, 0.60, 0.70], "grounding_all": [0.2, 0.3, 0.4]}
    row = {"rougeL": [0.60, 0.70, 0.80], "grounding_all": [0.1, 0.5, 0.3]}  # diffs +0.1 x3; -0.1, +0.2, -0.1
    scores = {**{("SFT", s): {k: v[i] for k, v in base.items()} for i, s in enumerate(seeds)},
              **{("+DPO", s): {k: v[i] for k, v in row.items()} for i, s in enumerate(seeds)}}
    mean, half = ablation.interval([-0.1, 0.2, -0.1])
    assert mean == pytest.approx(0.0) and half == pytest.approx(4.303 * 0.17320508 / 3 ** 0.5, rel=1e-4)
    table, findings = ablation.paired_differences(scores, ["SFT", "+DPO"], seeds)
    assert "| +DPO | +0.100 [+0.100, +0.100] | +0.000 [-0.430, +0.430] |" in table
    assert findings == ["+DPO vs SFT: ROUGE-L +0.100 [+0.100, +0.100]"]  # the interval excluding 0 only
    summary = ablation.summary_table(scores, ["SFT", "+DPO"], seeds)
    assert "| ROUGE-L | 0.600 ± 0.100 | 0.700 ± 0.100 |" in summary


@pytest.mark.slow
def test_the_quick_setting_runs_every_row_and_the_shortcut_experiment(tmp_path):
    ablation.main(["--quick", "--out", str(tmp_path)])
    report = (tmp_path / "ABLATION.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric |"))
    assert header == "| metric | " + " | ".join(ablation.ROWS) + " |"
    assert "## Paired difference from SFT" in report and "topic's colour/shape copied" in report
    assert "sibling image described" in report
    assert report.count("| metric | SFT | +msaGate | FlexMUSE |") == 1  # the shortcut experiment's rows
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
