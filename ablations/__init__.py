"""Built-in studies and the machinery that runs them: schema, runner, tracking, CLI."""
