"""fit's thread count, chosen by timing steps while nobody chose one."""

import numpy as np
import pytest

import cyconv
from cyconv import _autothreads, _threads
from cyconv.nn import lenet


@pytest.fixture(autouse=True)
def default_threads():
    previous = _threads._num_threads
    cyconv.set_num_threads(None)
    yield
    cyconv.set_num_threads(previous)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _chooser(monkeypatch, most):
    clock = FakeClock()
    monkeypatch.setattr(_autothreads.time, "perf_counter", clock)
    monkeypatch.setattr(_threads, "default_count", lambda: most)
    monkeypatch.setattr(_threads, "chosen", lambda: False)
    return _autothreads.ThreadChooser(), clock


def test_candidates_halve_down_to_one():
    assert _autothreads._candidates(16) == [16, 8, 4, 2, 1]
    assert _autothreads._candidates(3) == [3, 1]
    assert _autothreads._candidates(1) == [1]


@pytest.mark.parametrize("fastest", [1, 2, 4])
def test_the_fastest_count_of_a_trial_runs_until_the_next_trial(monkeypatch, fastest):
    chooser, clock = _chooser(monkeypatch, 4)
    seconds = {4: 3.0, 2: 2.0, 1: 1.0}
    seconds = {c: (0.5 if c == fastest else s) for c, s in seconds.items()}
    counts = []

    def step():
        count = cyconv.get_num_threads()
        counts.append(count)
        clock.now += seconds[count] * 64
        return count

    with chooser:
        steps = 1 + 3 * _autothreads.TRIAL_STEPS + _autothreads.STEPS_BETWEEN_TRIALS + 1
        for _ in range(steps):
            chooser.run(step, 64)
        assert chooser.best == fastest
    trial = counts[1:1 + 3 * _autothreads.TRIAL_STEPS]
    assert sorted(set(trial)) == [1, 2, 4]
    after = counts[1 + 3 * _autothreads.TRIAL_STEPS:-1]
    assert set(after) == {fastest}
    assert counts[-1] == 4  # the next trial begins
    assert cyconv.get_num_threads() == _threads.default_count()  # restored


def test_a_slow_outlier_does_not_decide(monkeypatch):
    chooser, clock = _chooser(monkeypatch, 2)
    costs = iter([None, 9.0, 1.0, 1.0, 2.0, 2.0, 2.0])  # 2 threads: one spike

    def step():
        cost = next(costs)
        clock.now += cost or 0.0

    for _ in range(7):
        chooser.run(step, 1)
    assert chooser.best == 2


def test_a_chosen_count_is_left_alone():
    cyconv.set_num_threads(1)
    seen = []

    class Record(cyconv.nn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(cyconv.get_num_threads())

    rng = np.random.default_rng(0)
    model = lenet(rng=0)
    model.fit(rng.random((64, 1, 28, 28)), rng.integers(0, 10, 64), batch_size=8, verbose=0,
              callbacks=[Record()])
    assert set(seen) == {1}


def test_omp_num_threads_counts_as_a_choice(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _threads.chosen()
    assert not _autothreads.ThreadChooser().active


def test_training_at_chosen_counts_gives_the_weights_of_one_thread():
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 1, 28, 28)), rng.integers(0, 10, 96)
    tuned = lenet(rng=0)
    tuned.fit(x, y, batch_size=4, epochs=1, verbose=0, seed=1)
    cyconv.set_num_threads(1)
    single = lenet(rng=0)
    single.fit(x, y, batch_size=4, epochs=1, verbose=0, seed=1)
    for a, b in zip(tuned.parameters(), single.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
