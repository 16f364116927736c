"""``python -m imascl_ray`` is the same as the ``imascl-ray`` console script."""

from imascl_ray.cli import main

raise SystemExit(main())
