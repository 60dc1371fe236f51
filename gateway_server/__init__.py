"""Gateway server (trio-websocket): holds client WebSockets speaking Slack's RTM stream.

It redeems the single-use ticket from ``rtm.connect``, learns the user's channels from the
webapp, subscribes on the owning channel servers (one persistent link per channel server,
shared by all local clients), then says ``hello``. Event batches from channel servers carry
pre-encoded payloads: the same string goes to every local socket of a member::

    channel_server --events--> [gateway_server: stream -> local clients] --RTM--> client

``drain`` takes the process out of service on request (`backchannel gateway drain`).
"""
