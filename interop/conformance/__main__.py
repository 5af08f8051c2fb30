"""``python -m interop.conformance``: see :mod:`interop.conformance.runner`."""

from .runner import main

raise SystemExit(main())
