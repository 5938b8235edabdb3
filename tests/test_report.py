"""The report API and report.md assembly."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hfllm.report import Section, write_report


def fake_stage(run_dir, stage, wall, budget):
    d = run_dir / stage
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"stage": stage, "wall_time_s": wall, "budget_s": budget}))
    return d


def test_sections_tables_plots_in_stage_order(tmp_path):
    run_dir = tmp_path / "r"
    d_eval = fake_stage(run_dir, "eval", 3.0, 2.0)
    d_data = fake_stage(run_dir, "data", 1.5, 10.0)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    section = Section("eval", "Evaluation").text("Scores.").table(["a", "b"], [[1, 0.123456]])
    section.plot(fig, "curve").save(d_eval, run_dir)
    Section("data", "Data").metrics({"docs": 3}).save(d_data, run_dir)
    entries = {e: run_dir / e for e in ("data", "tokenizer", "eval")}
    report = write_report(run_dir, entries, title="t").read_text()
    assert report.index("## Data") < report.index("## Evaluation")
    assert "| data | data | 1.5 | 10 | within |" in report and "| eval | eval | 3.0 | 2 | OVER |" in report
    assert "| total | | 4.5 |" in report
    assert "| 1 | 0.1235 |" in report and "| docs | 3 |" in report
    assert "![curve](plots/eval_curve.png)" in report
    assert (run_dir / "plots" / "eval_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_tiny_report_card(tiny_run):
    report = (tiny_run / "report.md").read_text()
    for heading in ("## Stages", "## Data", "## Tokenizer", "## Pretraining", "## Evaluation"):
        assert heading in report
    assert "bigram" in report and "lm-eval" in report
    assert (tiny_run / "plots" / "pretrain_loss.png").exists()
