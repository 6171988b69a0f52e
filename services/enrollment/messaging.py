"""Enrollment's Kafka entrypoints: none. It reads no topic; it writes `enrollment` through the event
store's relay (`shared.eventstore.relay`), which the service runtime starts."""
