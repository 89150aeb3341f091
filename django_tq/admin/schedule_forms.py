"""The forms of the periodic tasks screens: a periodic task, a crontab, the recent runs inline."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.utils.translation import gettext_lazy as _

from django_tq.admin.display import JSONTextField
from django_tq.models import CrontabSchedule, PeriodicTask, PeriodicTaskRun
from django_tq.registry import registry

#: how many runs the periodic task page lists
RECENT_RUNS = 20


def _task_choices(current: str) -> list[tuple[str, str]]:
    """Return the registered task names, plus ``current`` if this process does not know it."""
    choices = [("", "---------")] + [(name, name) for name in registry]
    if current and current not in registry:
        choices.append((current, str(_("%(name)s (not registered here)") % {"name": current})))
    return choices


class PeriodicTaskForm(forms.ModelForm):
    """The periodic task form: a task dropdown and JSON fields with clear errors."""

    task = forms.ChoiceField(label=_("task"), choices=())
    args = JSONTextField(label=_("positional arguments"), empty=[], example='[1, "a"]')
    kwargs = JSONTextField(label=_("keyword arguments"), empty={}, example='{"order_id": 1}')
    headers = JSONTextField(label=_("headers"), empty={}, example='{"source": "admin"}')

    class Meta:
        model = PeriodicTask
        fields = (
            "name", "task", "enabled", "description", "interval", "crontab", "solar", "clocked",
            "start_time", "expires", "expire_seconds", "one_off", "misfire_policy", "args",
            "kwargs", "queue", "exchange", "routing_key", "priority", "headers",
        )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "task" in self.fields:
            field = self.fields["task"]
            assert isinstance(field, forms.ChoiceField)
            field.choices = _task_choices(self.instance.task or "")
            field.help_text = _("The tasks this process has registered.")


class RecentRunsFormSet(BaseInlineFormSet):
    """Only the latest :data:`RECENT_RUNS` runs."""

    def get_queryset(self) -> QuerySet[PeriodicTaskRun]:
        queryset: QuerySet[PeriodicTaskRun] = super().get_queryset()
        latest = list(
            queryset.order_by("-scheduled_for").values_list("pk", flat=True)[:RECENT_RUNS]
        )
        return queryset.filter(pk__in=latest).order_by("-scheduled_for")


class CrontabForm(forms.ModelForm):
    """The crontab form: the time zone is a list of the zones zoneinfo knows."""

    timezone = forms.ChoiceField(label=_("time zone"), choices=())

    class Meta:
        model = CrontabSchedule
        fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["timezone"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(name, name) for name in sorted(available_timezones())]
        field.initial = self.instance.timezone
