"""Ring manager (trio): keeps the ring whole, as Slack's CHARM does. Several may run; one
leads, by a Redis lease. The leader watches the channel servers' registry leases and, when a
ring member's lease runs out, points its slot at a live standby channel server (exactly the
dead member's streams move) or removes it, bumping the epoch. It also re-publishes the ring
when Redis lost it::

    channel_server --lease--> Redis <--watch/CAS-- [ring_manager] --epoch+1--> every watcher
"""
