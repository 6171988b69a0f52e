"""Enrollment's read models: none beyond its aggregates. Residents and cohorts are read by folding their
own streams (`handlers`); personal data lives in the vault (`personal_data`), never in an event."""
