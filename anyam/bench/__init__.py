"""`anyam bench`: how fast Anyam is and how its cost grows, measured on a real broker and PostgreSQL.

One module per measurement (`replay`, `latency`, `commands`, `appends`, `growth`),
the environment they share (`environment`), a runner that runs them in order
(`runner.run_bench`) and the report (`report`: a rich table and JSON).
"""
