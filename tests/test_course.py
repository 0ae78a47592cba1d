"""The course pipeline: the report's tables, the budgets outside the pipeline, one short run end to
end that resumes, and the reward-model stages side by side."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from minillama.course import budgets, pipeline
from minillama.course.report import _accuracy_rows
from minillama.data import RATING_LEVELS


def test_reward_model_table_shows_a_perfect_judges_ceiling() -> None:
    levels = {lvl: {"accuracy": 0.6, "n": 10, "ceiling": 1.0 if i < 3 else 0.5} for i, lvl in enumerate(RATING_LEVELS)}
    acc = {"accuracy": 0.6, "n": 40, "by_level": levels, "ceiling": 0.875}
    rows = _accuracy_rows({"kind": "helpfulness", "margin": acc, "no_margin": acc})
    assert rows[-1] == "| helpfulness | a perfect judge | 87.5% | 100.0% | 100.0% | 100.0% | 50.0% |"


def test_budgets_come_without_the_pipeline() -> None:
    # A chapter reads the budgets: importing them must not pull in the orchestrator and the stages.
    code = ("import sys, minillama.course.budgets as b; "
            "print(sorted(m for m in sys.modules if m.startswith(('minillama.course.pipeline', 'minillama.stages'))),"
            " sorted(b.BUDGETS))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] ['small', 'tiny']"


def test_set_overrides_one_budget_entry_and_names_the_allowed_keys() -> None:
    args = pipeline.build_parser().parse_args(["--steps", "5", "--set", "rm_prompts=24", "--set", "rs_temperature=0.5"])
    budget = pipeline.budget_for(args)
    assert budget["steps"] == 5 and budget["warmup"] == 1 and budget["rm_prompts"] == 24
    assert budget["rs_temperature"] == 0.5
    with pytest.raises(ValueError, match="KEY one of"):
        pipeline.budget_for(pipeline.build_parser().parse_args(["--set", "nope=1"]))


@pytest.mark.slow
@pytest.mark.integration
def test_course_runs_end_to_end_and_resumes(tmp_path) -> None:
    out = tmp_path / "course"
    # The language-model part; the post-training stages have their own tests.
    argv = ["--out", str(out), "--steps", "4", "--chars", "200000", "--no-progress", "--until", "eval"]
    assert pipeline.main(argv) == 0
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert metrics["uniform_loss"] == pytest.approx(math.log(metrics_vocab(out)))
    assert 0.0 <= metrics["cloze"]["test"]["ranked"] <= 1.0 and metrics["cloze"]["test"]["n"] > 0
    assert "| validation loss" in report and "loss.png" in report and (out / "loss.png").is_file()
    copying = metrics["copying"]
    assert copying["n"] == 64 and copying["repeat_over_first"] == pytest.approx(
        copying["repeat_nats"] / copying["first_list_nats"])
    assert f"{copying['repeat_nats']:.2f} nats per token" in report
    # A second run finds every stage's output and redoes nothing.
    stamp = (out / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns
    assert pipeline.main(argv) == 0
    assert (out / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((out / "eval" / "metrics.json").read_text()) == metrics


def metrics_vocab(out) -> int:
    return json.loads((out / "tokens" / "meta.json").read_text())["vocab_size"]


@pytest.mark.slow
@pytest.mark.integration
def test_reward_stages_run_side_by_side_and_report_a_perfect_judge(tmp_path) -> None:
    out = tmp_path / "course"
    small = ["--set", "sft_examples=100", "--set", "rm_prompts=24", "--set", "rm_samples=2", "--set", "eval_chat=40",
             "--set", "eval_safety=20"]
    argv = ["--out", str(out), "--steps", "4", "--chars", "200000", "--no-progress", *small]
    assert pipeline.main([*argv, "--until", "sft"]) == 0
    budget = {**budgets.BUDGETS["tiny"], "sft_examples": 100, "rm_prompts": 24, "rm_samples": 2}
    seconds = pipeline.reward_stages_side_by_side(out, out / "data", budget, seed=0)
    assert set(seconds) == {"rm_helpfulness", "rm_safety"} and all(s > 0 for s in seconds.values())
    for kind in ("helpfulness", "safety"):
        metrics = json.loads((out / f"rm_{kind}" / "metrics.json").read_text())
        assert metrics["kind"] == kind and 0.5 < metrics["margin"]["ceiling"] <= 1.0
        assert metrics["margin"]["ceiling"] == metrics["no_margin"]["ceiling"]  # the same held-out pairs
    # The course finds both stages done and writes their rows, a perfect judge's included.
    assert pipeline.main([*argv, "--until", "rm_safety"]) == 0
    report = (out / "report.md").read_text()
    assert "| helpfulness | a perfect judge |" in report and "| safety | a perfect judge |" in report
