from lsl_core.cli import main

raise SystemExit(main())
