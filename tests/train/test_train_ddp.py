"""Two processes under torchrun (gloo, CPU) train exactly as one process on the same global batch.

One torchrun launch (the slow part: two fresh interpreters importing torch) runs
train_ddp_worker.py, which trains with a masked loss through the Trainer and then runs
``minillama pretrain``; one test checks both, so that pytest-xdist cannot launch it twice."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minillama.train import DistEnv
from minillama.stages.pretrain import main as pretrain_main

from helpers import PRETRAIN_ARGS as SMALL
from train_helpers import VOCAB, token_stream

HERE = Path(__file__).parent


def launch(root: Path) -> None:
    """The 1-process and 2-process runs, into masked/{one,two} and pretrain/{one,two}."""
    from minillama.train import save_token_dataset
    from train_ddp_worker import run

    stream = token_stream(6000)
    data = save_token_dataset(root / "data", stream[:5000], stream[5000:], VOCAB)
    pretrain_args = ["--data", str(data), *SMALL, "--steps", "3", "--grad-accum", "2"]
    run(root / "masked" / "one", DistEnv())  # one thread (conftest), as torchrun gives each rank
    assert pretrain_main([*pretrain_args, "--out", str(root / "pretrain" / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "train_ddp_worker.py"), str(root / "masked" / "two"),
           *pretrain_args, "--out", str(root / "pretrain" / "two")]
    done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def logged(out: Path, key: str = "loss", kind: str = "train") -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.slow
def test_two_ranks_train_exactly_as_one(tmp_path):
    launch(tmp_path)

    # The Trainer with a loss that masks targets: each rank counts a different number of tokens.
    one, two = tmp_path / "masked" / "one", tmp_path / "masked" / "two"
    assert len(logged(two)) == 4 and logged(two) == pytest.approx(logged(one), abs=1e-5)
    assert logged(two, "count") == logged(one, "count")  # token counts summed over ranks
    # Adam hides a wrongly scaled gradient in the loss; the gradient norm shows it.
    assert logged(two, "grad_norm") == pytest.approx(logged(one, "grad_norm"), rel=1e-4)
    reference = load_file(str(one / "final_rank0.safetensors"))
    ranks = [load_file(str(two / f"final_rank{r}.safetensors")) for r in range(2)]
    for name, weight in reference.items():
        assert torch.equal(ranks[0][name], ranks[1][name])  # DDP keeps the copies identical
        torch.testing.assert_close(ranks[0][name], weight, rtol=0, atol=1e-5)

    # The user's command: minillama pretrain under torchrun, same flags, same global batch.
    one, two = tmp_path / "pretrain" / "one", tmp_path / "pretrain" / "two"
    assert len(logged(two)) == 3 and logged(two) == pytest.approx(logged(one), abs=1e-5)
    val_one, val_two = logged(one, "val_loss", "val"), logged(two, "val_loss", "val")
    assert len(val_two) == 2 and val_two == pytest.approx(val_one, abs=1e-5)
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["latest", "step_00000002", "step_00000003"]
    assert (two / "model" / "model.safetensors").is_file()
