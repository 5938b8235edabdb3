"""The report API: each stage fills a `Section`; `write_report` assembles `runs/<name>/report.md`.

A stage never writes report.md itself. The runner hands it a `Section` (in its `StageContext`)
to fill with text, tables and PNG plots, adds the stage's metrics table, and saves the section
beside the manifest as `report_section.json`; the report is rebuilt from every entry's directory
after each stage, so re-running one stage updates only its part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECTION_FILE = "report_section.json"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


class Section:
    """One stage's part of the report, as a list of markdown blocks and plot files."""

    def __init__(self, entry_id: str, title: str):
        self.entry_id = entry_id
        self.title = title
        self.blocks: list[str] = []
        self._figures: list[tuple[str, Any]] = []

    def text(self, markdown: str) -> Section:
        self.blocks.append(markdown.strip())
        return self

    def table(self, headers: list[str], rows: list[list[Any]]) -> Section:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
        self.blocks.append("\n".join(lines))
        return self

    def metrics(self, values: dict[str, Any]) -> Section:
        return self.table(["metric", "value"], [[k, v] for k, v in values.items()])

    def plot(self, figure: Any, name: str, caption: str = "") -> Section:
        """Attach a matplotlib figure; saved as `plots/<entry id>_<name>.png` with the section (two
        entries of one stage type never overwrite each other's plots)."""
        self._figures.append((name, figure))
        self.blocks.append(f"![{caption or name}](plots/{self.entry_id}_{name}.png)")
        return self

    def save(self, stage_dir: str | Path, run_dir: str | Path) -> None:
        plots = Path(run_dir) / "plots"
        if self._figures:
            import matplotlib.pyplot as plt  # only stages that plot pay for the import

            plots.mkdir(parents=True, exist_ok=True)
            for name, fig in self._figures:
                fig.savefig(plots / f"{self.entry_id}_{name}.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
        data = {"entry": self.entry_id, "title": self.title, "blocks": self.blocks}
        (Path(stage_dir) / SECTION_FILE).write_text(json.dumps(data, indent=1))


def loss_plot(log_history: list[dict[str, Any]], keys: tuple[str, ...] = ("loss", "eval_loss")):
    """Every training stage's loss curve: each key in `keys` found in the Trainer's `log_history`
    plotted against the step (a run shorter than `logging_steps` logs none: the plot is empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"loss": "train loss", "eval_loss": "held-out loss"}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        points = [(r["step"], r[key]) for r in log_history if key in r]
        if points:
            ax.plot(*zip(*points), "o-" if key.startswith("eval") else "-", label=labels.get(key, key))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    if ax.get_lines():
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


TASKS_DIR = "tasks"  # the run's lm-eval task directory, under the run directory


@dataclass
class StageContext:
    """What the runner hands a stage besides its configs: which pipeline entry it runs as, the
    run directory (shared files such as `tasks/` go there; a recipe run alone uses its own
    `output_dir`), the report section it fills (the runner adds the metrics table), and whether
    this process is the main one (only it writes shared files)."""

    entry_id: str
    run_dir: Path
    section: Section
    is_main_process: bool = True


def write_report(run_dir: str | Path, entries: dict[str, Path], title: str | None = None) -> Path:
    """Assemble `<run_dir>/report.md` from each entry's manifest and saved section, in the order
    given (`{entry id: its directory}`); entries not run yet are left out."""
    run_dir = Path(run_dir)
    lines = [f"# {title or run_dir.name} — hfllm report card", ""]
    summary = []
    bodies = []
    for entry_id, entry_dir in entries.items():
        manifest_path = Path(entry_dir) / "manifest.json"
        if not manifest_path.exists():
            continue
        manifest = json.loads(manifest_path.read_text())
        wall, budget = manifest.get("wall_time_s"), manifest.get("budget_s")
        verdict = "" if budget is None else ("within" if wall <= budget else "OVER")
        summary.append([entry_id, manifest.get("stage", entry_id), f"{wall:.1f}",
                        "—" if budget is None else f"{budget:.0f}", verdict])
        section_path = Path(entry_dir) / SECTION_FILE
        if section_path.exists():
            section = json.loads(section_path.read_text())
            bodies += [f"## {section['title']}", ""] + [b + "\n" for b in section["blocks"]]
    if summary:
        total = sum(float(r[2]) for r in summary)
        lines += ["## Stages", "", "| entry | stage | wall time (s) | budget (s) | |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in summary]
        lines += [f"| total | | {total:.1f} | | |", ""]
    lines += bodies
    out = run_dir / "report.md"
    run_dir.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip() + "\n")
    return out
