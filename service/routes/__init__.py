"""The HTTP routes, one router per area: chat, feedback, users, operations."""
