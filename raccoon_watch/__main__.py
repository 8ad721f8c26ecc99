from raccoon_watch.cli import main

raise SystemExit(main())
