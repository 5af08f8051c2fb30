"""The conformance suite: drives any language's conformance handler through a real dispatcher and at the
protocol level (interop/README.md has the handler contract; README.md here lists the cases).

Run from the repository root: ``.venv/bin/python -m interop.conformance [LANG ...]``.
"""
