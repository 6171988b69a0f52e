"""The applications, standing on the services: the `anyam` command, the embedded stack, the demo, the
auditor's replay and verify, the bench, the fault drills and the collaborator's tool.

The design card names `services/` and `shared/`; this third folder exists so that `shared/` is only
the platform every service stands on, and nothing below imports what stands above it.
"""
