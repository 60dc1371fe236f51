"""Actions: the checks and the doing of each Slack operation, between the thin API handlers
(``webapp/api``) and the SQL (``webapp/store``). An action decides who may do what and in
which transaction; it never builds HTTP replies and never notifies: the events its
transactions append leave through the outbox after commit (``webapp/outbox.py``)."""
