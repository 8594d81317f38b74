import sys

from cloudkon.cli import main

sys.exit(main())
