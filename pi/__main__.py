from pi.agent import main

raise SystemExit(main())
