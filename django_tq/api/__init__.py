"""django_tq's REST API (Django REST framework): the only package that imports ``rest_framework``.

Mount it with ``path("api/tq/", include("django_tq.api.urls"))``; see ``docs/api.md``. One
concept per module: ``permissions`` (who sees what), ``filters`` (the query string),
``pagination`` (keyset pages), ``serializers`` (JSON in and out), ``views`` (the endpoints),
``queues`` (queue depths), ``errors`` (JSON errors), ``schema`` (OpenAPI), ``urls`` (routes).
"""
