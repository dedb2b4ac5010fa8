from pose_client.cli import main

raise SystemExit(main())
