"""`python -m polydub.cli ...` is `dub ...`."""

import sys

from polydub.cli import main

sys.exit(main())
