import math

import pytest

from minillama.train import CosineSchedule


def test_warmup_rises_linearly_to_the_peak():
    s = CosineSchedule(peak_lr=1e-3, warmup_steps=4, total_steps=20)
    assert [s(i) for i in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert s(4) == pytest.approx(1e-3)  # decay starts from the peak


def test_cosine_decays_to_ten_percent_and_stays_there():
    s = CosineSchedule(peak_lr=1e-3, warmup_steps=4, total_steps=20)
    decay = [s(i) for i in range(4, 21)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert s(12) == pytest.approx(0.55e-3)  # halfway: the mean of peak and floor
    assert s(20) == pytest.approx(1e-4) and s(1000) == pytest.approx(1e-4)


def test_cosine_shape_matches_the_formula():
    s = CosineSchedule(peak_lr=2.0, warmup_steps=0, total_steps=10, min_lr_ratio=0.0)
    for step in range(11):
        assert s(step) == pytest.approx(1.0 + math.cos(math.pi * step / 10))


def test_no_decay_when_warmup_fills_the_run():
    s = CosineSchedule(peak_lr=1.0, warmup_steps=5, total_steps=5)
    assert s(4) == 1.0 and s(5) == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs, field", [(dict(peak_lr=0.0), "peak_lr"), (dict(total_steps=0), "total_steps"),
                                           (dict(warmup_steps=11), "warmup_steps"),
                                           (dict(min_lr_ratio=1.5), "min_lr_ratio")])
def test_invalid_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CosineSchedule(**{**dict(peak_lr=1.0, warmup_steps=1, total_steps=10), **kwargs})
