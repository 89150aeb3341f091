"""HOT claims on the ``django://`` queue table: no ``lease_owner`` index, ``fillfactor = 70``.

A claim sets ``lease_owner``, ``lease_expires_at`` and ``delivery_count``. With an index on
``lease_owner`` every claim wrote a new tuple into both indexes; without it, and with free room
on the page, PostgreSQL updates the row in place of its page (heap-only tuple): no index write.
Releasing a dead process's leases (``lease_owner LIKE 'host:pid:%'``, rare) scans the table."""

from django.db import migrations


def _table(apps, schema_editor):
    return schema_editor.quote_name(apps.get_model("django_tq", "QueueMessage")._meta.db_table)


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {_table(apps, schema_editor)} SET (fillfactor = 70)")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {_table(apps, schema_editor)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("django_tq", "0015_result_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="queuemessage",
            name="tq_queue_lease_owner",
        ),
        migrations.RunPython(set_fillfactor, reset_fillfactor),
    ]
