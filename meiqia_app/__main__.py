import sys

from meiqia_app.cli import main

sys.exit(main())
