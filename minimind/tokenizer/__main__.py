"""Entry point for `python -m minimind.tokenizer ...`; see minimind.tokenizer.main."""

import sys

from minimind.tokenizer import main

sys.exit(main())
