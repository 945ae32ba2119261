"""megatron-core policy backend. Imports megatron-core; nothing outside `backends` imports this eagerly."""
