"""tools/compare_runs.py: two runs with the same results compare equal whatever their timings and
weight names; a changed number, a changed table row or a changed weight is reported."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from minillama.checkpoint import save_model
from minillama.hf import hf_name

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_runs.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("compare_runs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_run(root: Path, random_llama) -> Path:
    (root / "stages").mkdir(parents=True)
    (root / "stages" / "sft.json").write_text(json.dumps({"combined": {"mean": 0.5}, "sampling": {"seconds": 3.0}}))
    (root / "report.md").write_text("| stage | combined |\n|---|---|\n| sft | 0.500 |\n\n"
                                    "## Time per stage\n| sft | 3.0 |\n")
    save_model(random_llama(), root / "sft" / "model")
    return root


def test_equal_runs_compare_equal_and_changes_are_found(tmp_path, random_llama, capsys) -> None:
    tool = load_tool()
    a = make_run(tmp_path / "a", random_llama)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "stages" / "sft.json").write_text(json.dumps({"combined": {"mean": 0.5}, "sampling": {"seconds": 9.0}}))
    (b / "report.md").write_text((a / "report.md").read_text().replace("| sft | 3.0 |", "| sft | 9.0 |"))
    assert tool.main([str(a), str(b)]) == 0  # timings differ: not a result
    # The same weights under minillama's own names (an older format) are the same weights.
    model = random_llama()
    save_file({name: t.contiguous() for name, t in model.state_dict().items()},
              str(b / "sft" / "model" / "model.safetensors"))
    assert tool.compare(a, b) == 0
    (b / "stages" / "sft.json").write_text(json.dumps({"combined": {"mean": 0.6}, "sampling": {"seconds": 1.0}}))
    (b / "report.md").write_text((a / "report.md").read_text().replace("0.500", "0.600"))
    state = {hf_name(n): t.clone() for n, t in model.state_dict().items()}
    state["model.norm.weight"] += 1
    save_file(state, str(b / "sft" / "model" / "model.safetensors"))
    assert tool.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "stages/sft.json/combined/mean: '0.5' vs '0.6'" in out and "weights differ" in out
    assert "| sft | 0.600 |" in out
    assert out.strip().endswith("3 differences")
