"""slimlab's device payload: the timing loop, the run context, and one runtime adapter per format.

It imports nothing from slimlab. The host zips this package, with every registered
format's adapter, into one ``.pyz`` that the python runner pushes and runs.
"""
