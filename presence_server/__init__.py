"""Presence server (trio): who is online. Each gateway reports the users it holds (on change
and periodically); a gateway that stops reporting is forgotten after ``presence_ttl_s``, so a
crashed gateway's users go away on their own. ``users.getPresence`` reads from here::

    gateway_server --POST /sync--> [presence_server] <--GET /presence-- webapp
"""
