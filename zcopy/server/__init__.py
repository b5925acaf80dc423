"""The file server: supervisor and worker processes, one epoll loop each.

Rooms, as in gunicorn: ``supervisor`` starts, restarts and drains workers and
is the only place that handles signals for the group; ``worker`` runs one
epoll loop; ``connection`` is the per-socket state machine; ``responder``
turns a parsed request into a reply plan (head bytes + body segments) using
the sans-I/O ``zcopy.http`` functions and the ``files`` cache.
"""
