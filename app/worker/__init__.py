"""The worker pool: an asyncio supervisor and its long-lived child processes."""
