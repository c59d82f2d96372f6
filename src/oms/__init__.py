"""OMS: an event-driven order management system for brokerages."""
