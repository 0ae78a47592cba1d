"""``minillama pretrain``: the run, a loadable model, resuming, and errors as one line."""

import json

import numpy as np
import pytest
import torch

from helpers import PRETRAIN_ARGS as SMALL
from minillama.checkpoint import load_model, load_weights
from minillama.cli import main as cli_main
from minillama.model import Llama
from minillama.stages.pretrain import build_parser, main
from minillama.train import latest_checkpoint, save_token_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def data_dir(tmp_path):
    stream = np.random.default_rng(0).integers(0, 64, 6000).astype(np.uint16)
    return save_token_dataset(tmp_path / "data", stream[:5000], stream[5000:], 64)


def pretrain(data_dir, out, *extra):
    return main(["--data", str(data_dir), "--out", str(out), *SMALL, *extra])


def log(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_writes_the_run_and_a_loadable_model(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain(data_dir, out, "--steps", "4") == 0
    model = load_model(out / "model")
    config = model.config
    assert (config.dim, config.n_layers, config.vocab_size) == (32, 1, 64)  # vocab from meta.json
    records = log(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 4]
    assert (out / "loss.png").is_file() and latest_checkpoint(out).name == "step_00000004"
    assert "val loss" in capsys.readouterr().out

    from_checkpoint = Llama(config, seed=9)
    load_weights(from_checkpoint, latest_checkpoint(out))  # a checkpoint holds a model folder too
    ids = torch.arange(16).reshape(2, 8)
    torch.testing.assert_close(model(ids), from_checkpoint(ids), rtol=0, atol=0)


def test_rerun_resumes_and_other_model_or_fresh(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(data_dir, out, "--steps", "2")
    pretrain(data_dir, out, "--steps", "4")
    assert "resuming from" in capsys.readouterr().err
    assert [r["step"] for r in log(out) if r["kind"] == "train"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="different model.*'dim': \\(32, 48\\)"):
        main(["--data", str(data_dir), "--out", str(out), *SMALL[2:], "--dim", "48", "--steps", "4"])
    pretrain(data_dir, out, "--steps", "2", "--fresh")
    assert [r["step"] for r in log(out) if r["kind"] == "train"] == [1, 2]
    assert latest_checkpoint(out).name == "step_00000002"


def test_every_flag_is_explained_and_the_cli_dispatches(capsys):
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert all(a.help and len(a.help) > 10 for a in actions), [a.dest for a in actions if not a.help]
    with pytest.raises(SystemExit) as exit_:
        cli_main(["pretrain", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--steps", "--batch-size", "--seq-len", "--lr", "--warmup", "--grad-accum", "--eval-interval",
                 "--checkpoint-interval", "--seed", "--threads", "--compile", "--device", "--fresh", "resumes"):
        assert flag in text


def test_errors_at_the_door_are_one_line_with_status_2(data_dir, tmp_path, capsys):
    assert cli_main(["pretrain", "--data", str(tmp_path / "MISSING"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minillama pretrain: error: ") and "MISSING: no meta.json" in err
    assert err.count("\n") == 1 and "Traceback" not in err
