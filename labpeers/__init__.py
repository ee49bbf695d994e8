"""Emulated lab peers for the tests and the benchmarks: never shipped in the slimlab package.

A peer stands in for a device at the far end of a real transport, so the lab's code runs
unchanged against it: :mod:`labpeers.adb_device` is an Android device's ADB daemon in pure
Python (its wire protocol in :mod:`labpeers.adb_wire`), reached by the stock ``adb``.

``tests/`` and ``bench/`` both use these, and ``bench/`` may not import ``tests/``, hence a
folder of their own at the top of the checkout. It imports nothing of slimlab, and slimlab
nothing of it (``tests/unit/test_structure.py``); ``pyproject.toml`` lists the packages it
installs, and this is not one of them, so run from the checkout's root (pytest does;
``bench/lab.py`` puts the checkout on its path).
"""
