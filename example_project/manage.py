#!/usr/bin/env python
"""The example shop's manage.py: ``python example_project/manage.py runserver`` / ``tqworker``."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Use the django_tq of this checkout when it is not installed (pip install -e . installs it).
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
