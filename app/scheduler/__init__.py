"""The scheduler: APScheduler fires the daily syncs, Redis makes each slot fire once."""
