"""A third-party slimlab plugin package, as a stranger writes one from the README: one module per kind.

Each module imports from ``slimlab.api`` only, and each is printed whole in the README's
"Writing plugins" section. tests/unit/test_third_party.py installs the package as a real
distribution with ``slimlab`` entry points; nothing in slimlab names any of these plugins.
"""
