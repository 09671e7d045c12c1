"""``python -m clbench`` → the command-line interface."""

from clbench.cli import main

raise SystemExit(main())
