"""``python -m logwatch`` runs the same command line as ``relaywatch``."""

from logwatch.cli import main

raise SystemExit(main())
