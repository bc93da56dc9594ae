import sys

from migrate.cli.main import main

sys.exit(main())
