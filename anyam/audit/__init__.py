"""The auditor's tools: rebuild the ledger from the topics alone (`replay`), compare it with the live
one and check every invariant (`verify`), and report both to people and to their tools (`report`).

`invariants` holds the pure checks; `cli` the two `anyam` commands.
"""
