"""Pure SQL text per engine; each engine's statements live in one module and are tested as strings."""
