import sys

from zcopy.cli import main

sys.exit(main())
