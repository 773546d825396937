import sys

from uniq.cli import main

sys.exit(main())
