"""The thread count of a training loop, chosen by timing its steps.

Every core is the best count on an idle machine, and the worst on a busy
one: with one of two cores taken by another process, a LeNet step (batch
64) took 6.0 ms on two threads against 3.0 ms on one, and a CIFAR-like
step 73 ms against 61 (idle: 2.2 against 3.1, and 35 against 60; AMD EPYC
Zen 4, 2 cores).  A team of OpenMP threads goes at the pace of its slowest
member, and a thread that shares its core gets half of it.  So while
nobody chose a count (``cyconv.set_num_threads``, ``OMP_NUM_THREADS``,
``--threads``), ``fit`` times a few steps at each candidate count from time
to time and trains at the fastest.  Results do not depend on the count
(every kernel is bitwise the same on any number of threads), only the
speed does.
"""

import time

from . import _threads

# Steps timed at each candidate count, and steps run at the fastest before
# the counts are timed again (a machine's load changes: a trial every 100
# steps costs about 1-3% of them at a slower count).
TRIAL_STEPS = 3
STEPS_BETWEEN_TRIALS = 100


def _candidates(most):
    """``most``, then halvings of it down to 1: 16, 8, 4, 2, 1."""
    counts = [most]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


class ThreadChooser:
    """Sets the thread count before each training step and times the step.

    Does nothing when the count was chosen (see the module's notes) or
    there is one core.  Use as ``with ThreadChooser() as chooser:`` around
    the loop, running each step as ``chooser.run(step, samples)``; the count
    nobody chose is restored on exit.
    """

    def __init__(self):
        most = _threads.default_count()
        self.active = not _threads.chosen() and most > 1
        self.candidates = _candidates(most)
        self.best = most
        self._plan = []      # counts of the steps to come, trials first
        self._times = {}     # count -> seconds per sample of its trial steps
        self._warm = False   # the first step runs untimed (caches fill)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.active:
            _threads._tuned.count = None

    def count(self):
        """The count the next step runs at."""
        if not self._plan:
            self._plan = [c for c in self.candidates for _ in range(TRIAL_STEPS)]
            self._plan += [None] * STEPS_BETWEEN_TRIALS  # None: the fastest
        count = self._plan[0]
        return self.best if count is None else count

    def run(self, step, samples):
        """Run ``step()`` (one training step on ``samples`` samples) at the
        count this chooser picks; return what it returns."""
        if not self.active or _threads.chosen():  # chosen meanwhile: a callback
            return step()
        if not self._warm:
            self._warm = True
            _threads._tuned.count = self.best
            return step()
        count = self.count()
        _threads._tuned.count = count
        start = time.perf_counter()
        result = step()
        seconds = (time.perf_counter() - start) / max(samples, 1)
        trial = self._plan.pop(0) is not None
        if trial:
            self._times.setdefault(count, []).append(seconds)
            if not any(c is not None for c in self._plan):  # the trial is over
                self.best = min(self._times, key=lambda c: sorted(self._times[c])[
                    len(self._times[c]) // 2])
                self._times = {}
        return result
