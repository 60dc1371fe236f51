"""Admin server (trio): stateless router. Webapps hand it committed events over a
persistent WebSocket link (or POST /notify); it looks each stream up on the ring and
forwards each owner its events in one frame over a persistent link, answering the webapp
only once every owner has them::

    webapp --notify--> [admin_server: ring lookup] --publish--> channel_server
"""
