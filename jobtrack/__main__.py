"""``python -m jobtrack``: the same command line as the ``jobtrack`` script."""

from jobtrack.cli import main

raise SystemExit(main())
