"""``manage.py demo_user``: create the superuser admin/admin for a local demo (DEBUG only)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the superuser admin (password admin) if it does not exist. Refuses unless DEBUG."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "demo_user creates admin/admin: only for a local demo with DEBUG on."
            )
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("The user admin exists already; left as it is.")
            return
        User.objects.create_superuser("admin", "admin@example.com", "admin")
        self.stdout.write("Created the superuser admin with the password admin (local demo only).")
