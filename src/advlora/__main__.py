import sys

from advlora.cli import main

sys.exit(main())
