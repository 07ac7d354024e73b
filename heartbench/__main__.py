from heartbench.cli import main

raise SystemExit(main())
