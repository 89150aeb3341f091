"""The example project: a small shop whose orders are charged and mailed by django_tq tasks."""
