"""Channel server (trio): owns a slice of the ring's streams (channels and users' personal
streams). For each owned stream it keeps the gateways subscribed to it, delivers events in
``seq`` order (holding early ones briefly and repairing gaps from the webapp's event log),
encodes every event once and sends one batched frame per subscribed gateway::

    admin_server --event--> [channel_server: order, encode once] --events--> gateway_server
"""
