"""Fewer indexes on TaskResult for a plain task's row: the owner's, group's, parent's and
date_done's only where set, no separate owner index, no LIKE index on task_id (PostgreSQL).

MySQL and MariaDB have no partial indexes: ``PartialIndex`` makes those four full ones there."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import django_tq.models.indexes


def _like_index(apps, schema_editor):
    """Return the table and the ``varchar_pattern_ops`` index PostgreSQL got for ``task_id``."""
    table = apps.get_model("django_tq", "TaskResult")._meta.db_table
    name = schema_editor._create_index_name(table, ["task_id"], suffix="_like")
    return schema_editor.quote_name(table), schema_editor.quote_name(name)


def drop_task_id_like_index(apps, schema_editor):
    # Lookups by task id are exact (=): the LIKE index only cost every insert a write.
    if schema_editor.connection.vendor == "postgresql":
        _table, name = _like_index(apps, schema_editor)
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def create_task_id_like_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table, name = _like_index(apps, schema_editor)
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} (task_id varchar_pattern_ops)"
        )


#: the indexes made partial here, by name: their fields
PARTIAL = {
    "tq_result_done": ["date_done"],
    "tq_result_owner_created": ["owner", "-date_created"],
    "tq_result_group": ["group_id"],
    "tq_result_parent": ["parent_id"],
}


def _full_indexes(apps, schema_editor):
    """Return the partial indexes' full versions where the database has no partial indexes
    (MySQL, MariaDB: Django skips an index with a condition there, which would leave cleanup,
    children and own-results queries with no index at all)."""
    if schema_editor.connection.features.supports_partial_indexes:
        return None, []
    model = apps.get_model("django_tq", "TaskResult")
    return model, [models.Index(fields=fields, name=name) for name, fields in PARTIAL.items()]


def add_full_indexes(apps, schema_editor):
    model, indexes = _full_indexes(apps, schema_editor)
    for index in indexes:
        schema_editor.add_index(model, index)


def remove_full_indexes(apps, schema_editor):
    model, indexes = _full_indexes(apps, schema_editor)
    for index in indexes:
        schema_editor.remove_index(model, index)


class Migration(migrations.Migration):

    dependencies = [
        ('django_tq', '0014_periodic_task_exchange'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(drop_task_id_like_index, create_task_id_like_index, atomic=False),
        migrations.RemoveIndex(
            model_name='taskresult',
            name='tq_result_done',
        ),
        migrations.RemoveIndex(
            model_name='taskresult',
            name='tq_result_owner_created',
        ),
        migrations.RemoveIndex(
            model_name='taskresult',
            name='tq_result_group',
        ),
        migrations.RemoveIndex(
            model_name='taskresult',
            name='tq_result_parent',
        ),
        migrations.AlterField(
            model_name='taskresult',
            name='owner',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='owner'),
        ),
        migrations.AddIndex(
            model_name='taskresult',
            index=django_tq.models.indexes.PartialIndex(fields=['date_done'], name='tq_result_done', where=models.Q(('date_done__isnull', False))),
        ),
        migrations.AddIndex(
            model_name='taskresult',
            index=django_tq.models.indexes.PartialIndex(fields=['owner', '-date_created'], name='tq_result_owner_created', where=models.Q(('owner__isnull', False))),
        ),
        migrations.AddIndex(
            model_name='taskresult',
            index=django_tq.models.indexes.PartialIndex(fields=['group_id'], name='tq_result_group', where=models.Q(('group_id__isnull', False))),
        ),
        migrations.AddIndex(
            model_name='taskresult',
            index=django_tq.models.indexes.PartialIndex(fields=['parent_id'], name='tq_result_parent', where=models.Q(('parent_id__isnull', False))),
        ),
    ]
