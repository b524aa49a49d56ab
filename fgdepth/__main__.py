from fgdepth.cli import main

raise SystemExit(main())
