"""`anyam dead-letters`: list, show and re-drive the records the consumers refused (docs/operations.md#dead-letters)."""
