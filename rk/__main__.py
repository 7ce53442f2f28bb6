import sys

from rk.cli import main

sys.exit(main())
