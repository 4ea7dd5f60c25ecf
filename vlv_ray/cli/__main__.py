import sys

from vlv_ray.cli import main

sys.exit(main())
