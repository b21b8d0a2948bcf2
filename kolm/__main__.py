from kolm.cli import main

raise SystemExit(main())
