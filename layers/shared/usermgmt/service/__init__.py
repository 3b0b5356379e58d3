"""Use cases: authorization, state transitions and the order of side effects."""
