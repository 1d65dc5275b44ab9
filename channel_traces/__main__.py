"""``python -m channel_traces traces {show,generate} ...``."""

from channel_traces.cli import main

raise SystemExit(main())
