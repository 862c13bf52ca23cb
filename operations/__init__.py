"""Operator commands over the lifecycle packages (`churnops`, operations/cli.py): demo, rollback, simulate,
model card, the guard drill, the native stack. Nothing in core/ or the lifecycle packages imports it."""
