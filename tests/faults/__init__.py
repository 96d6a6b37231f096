"""The fault-injection suite (``make chaos``): the whole system on its own RabbitMQ cluster,
PostgreSQL and SMTP server, driven through injected faults, then held to its invariants."""
