"""Files to specs: templating, YAML loading with file:line, SQL fragment checks, JSON Schema export."""
