"""The shared core: what training, the model service and monitoring all stand on.

- `core.settings`: the one settings mechanism (typed, from environment variables), state paths.
- `core.dataset`: the data set's configuration model (one YAML file per data set).
- `core.features`: feature preparation shared by training and serving.
- `core.registry`: MLflow tracking and registry access (tracking URI, aliases, promotion, rollback).
- `core.store`: the one definition of the loop's tables (prediction log, feedback, monitoring history,
  trigger events, rollbacks), their migrations, engines and the queries more than one package reads.

The lifecycle packages import the core and never each other (`make lint` checks it with import-linter).
"""
