"""`python -m reprobox`."""

from reprobox.cli import main

raise SystemExit(main())
