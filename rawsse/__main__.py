import sys

from rawsse.cli import main

sys.exit(main())
