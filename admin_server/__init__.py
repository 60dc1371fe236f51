"""Admin server (trio): stateless router. The webapp hands it committed events over HTTP; it
looks each stream up on the ring and forwards the event over a persistent WebSocket link to
the owning channel server, answering the webapp only once the channel server has the event::

    webapp --POST /notify--> [admin_server: ring lookup] --event--> channel_server
"""
