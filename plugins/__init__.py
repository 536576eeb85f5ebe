"""megafc's built-in plugins. Each subpackage is an entry point in group ``megafc``, exactly
like a third-party plugin package; see pyproject.toml."""
