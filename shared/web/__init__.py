"""The HTTP edge every service shares: access, inputs, commands, problems, limits, published documents."""
