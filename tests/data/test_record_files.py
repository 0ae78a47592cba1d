"""Task, pair and sample files that are truncated, empty or have a wrong field: a ValueError that
names the file, the line and the field, never a TypeError from deep inside."""

from __future__ import annotations

import json

import pytest

from minillama.data.files import read_samples, read_tasks
from minillama.data.preferences import load_pairs

TASK = {"kind": "story_qa", "prompt": "Who?", "reference": "Leo.", "target": ["Leo"], "form": "one_word"}
PAIR = {"prompt": "Who?", "chosen": "Leo.", "rejected": "Mia.", "rating": "better", "gap": 0.5}
SAMPLES = {"prompt": "Who?", "samples": ["Leo.", "Mia."], "reward": [0.1, 0.2], "oracle": [1.0, 0.5]}
READERS = {"task": (read_tasks, TASK), "pair": (load_pairs, PAIR), "sample row": (read_samples, SAMPLES)}


def _write(tmp_path, lines: list[str]):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("what", READERS)
def test_a_good_file_reads_back(tmp_path, what):
    read, row = READERS[what]
    assert len(read(_write(tmp_path, [json.dumps(row), "", json.dumps(row)]))) == 2


@pytest.mark.parametrize("what", READERS)
@pytest.mark.parametrize("case, match", [
    ("empty", r"records.jsonl: empty; expected one"),
    ("truncated", r"records.jsonl, line 2: not valid JSON"),
    ("unknown", r"records.jsonl, line 2: unknown field 'colour'"),
    ("missing", r"records.jsonl, line 2: a .* without the field 'prompt'"),
    ("not_object", r"records.jsonl, line 2: a .* must be a JSON object"),
])
def test_bad_files_name_the_file_line_and_field(tmp_path, what, case, match):
    read, row = READERS[what]
    good = json.dumps(row)
    second = {"empty": None, "truncated": good[:-5], "unknown": json.dumps({**row, "colour": "red"}),
              "missing": json.dumps({k: v for k, v in row.items() if k != "prompt"}), "not_object": "[1, 2]"}[case]
    lines = [] if second is None else [good, second]
    with pytest.raises(ValueError, match=match):
        read(_write(tmp_path, lines))


def test_values_the_record_rejects_name_the_line(tmp_path):
    with pytest.raises(ValueError, match=r"line 1: Task.form must be one of"):
        read_tasks(_write(tmp_path, [json.dumps({**TASK, "form": "haiku"})]))
    with pytest.raises(ValueError, match=r"line 1: Pair.rating must be one of"):
        load_pairs(_write(tmp_path, [json.dumps({**PAIR, "rating": "best"})]))
    with pytest.raises(ValueError, match=r"line 1: field 'reward' must be a list of one number per sample"):
        read_samples(_write(tmp_path, [json.dumps({**SAMPLES, "reward": [0.1]})]))
