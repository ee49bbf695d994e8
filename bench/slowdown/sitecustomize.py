"""A slowed-down test device: every inference of the *candidate's* LiteRT interpreters takes ``SLIMLAB_SLOWDOWN``
(a fraction) longer.

Loaded through PYTHONPATH by the wrapper that bench/nightly.py gives a test device as its Python.
The payload's compare mode makes both sides' interpreters afresh every round; an interpreter is the
candidate's when the payload frame that made it was making the ``candidate`` side (its ``side``
local). Baseline and candidate may be one file, so neither the path nor the creation order can
tell them apart. The result is a calibrated regression, made outside the code under test; both
sides go through the same wrapper, so its own cost does not tell them apart.
"""

import os
import sys
import time

FRACTION = float(os.environ.get("SLIMLAB_SLOWDOWN", "0"))


def _made_for_candidate() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_locals.get("side") in ("baseline", "candidate"):
            return frame.f_locals["side"] == "candidate"
        frame = frame.f_back
    return False


if FRACTION:
    from ai_edge_litert import interpreter as litert

    _init, _invoke = litert.Interpreter.__init__, litert.Interpreter.invoke

    def __init__(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self._slimlab_slowed = _made_for_candidate()

    def invoke(self):
        began = time.perf_counter()
        _invoke(self)
        spent = time.perf_counter() - began
        until = time.perf_counter() + spent * (FRACTION if self._slimlab_slowed else 0.0)
        while time.perf_counter() < until:  # busy: a sleep this short would oversleep
            pass

    litert.Interpreter.__init__, litert.Interpreter.invoke = __init__, invoke
