"""Development tools: benchmarks (`make bench`), pictures (`make screenshots`), generated docs and files,
the stack's offline validators. Product packages never import it (import-linter)."""
