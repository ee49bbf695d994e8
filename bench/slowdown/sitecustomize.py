"""A slowed-down test device: every inference of the *second* LiteRT interpreter a process creates
takes ``SLIMLAB_SLOWDOWN`` (a fraction) longer.

Loaded through PYTHONPATH by the wrapper that bench/nightly.py gives a test device as its Python.
In the payload's compare mode the baseline loads first and the candidate second, so only the
candidate is slowed: a calibrated regression, made outside the code under test. Both interpreters
go through the same wrapper, so the wrapper's own cost does not tell them apart.
"""

import os
import time

FRACTION = float(os.environ.get("SLIMLAB_SLOWDOWN", "0"))

if FRACTION:
    from ai_edge_litert import interpreter as litert

    _created = []
    _init, _invoke = litert.Interpreter.__init__, litert.Interpreter.invoke

    def __init__(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        _created.append(self)

    def invoke(self):
        began = time.perf_counter()
        _invoke(self)
        spent = time.perf_counter() - began
        slowed = len(_created) > 1 and self is _created[1]
        until = time.perf_counter() + spent * (FRACTION if slowed else 0.0)
        while time.perf_counter() < until:  # busy: a sleep this short would oversleep
            pass

    litert.Interpreter.__init__, litert.Interpreter.invoke = __init__, invoke
