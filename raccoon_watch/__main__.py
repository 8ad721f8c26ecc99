from raccoon_watch.service.cli import main

raise SystemExit(main())
