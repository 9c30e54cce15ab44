"""``python -m asvd_jax`` = the ``asvd-jax`` command."""

import sys

from asvd_jax.cli import main

sys.exit(main())
