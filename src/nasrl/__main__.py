import sys

from nasrl.cli import main

sys.exit(main())
