"""The prediction log: every accepted record, written by a process of its own, never lost, never twice.

- `request_ids`: the UUIDv7 request ids (and their age);
- `store`: table access (`LogStore`: batched inserts that skip duplicates, lookups, the feedback insert);
- `writer`: `PredictionLog`, the serving worker's side: durable submit into the spool, segments retired
  by size and age, backpressure, `/ready`'s view of the spool;
- `writer_process`: the writer process (`python -m model_service.prediction_log.writer_process`, one per
  server, started by model_service/server.py): closed segments into the database (PostgreSQL COPY,
  SQLite executemany), each deleted only after its rows are committed;
- `spool`: the per-worker write-ahead segments (JSON lines, written before the 200, synced before it or
  in the background, flock-held while written), read back by the writer process.

Tables (defined in `core.store`; the monitoring component reads them): `predictions`, one row per
accepted record (request id, record index, time, model name and version, the record as validated,
probability, label, the request's latency); `feedback`, the true label of a record (one per record).
A record is only reported dropped when the spool file cannot take it (the request is answered 503; the
`dropped` counter, and an error in the log).
"""
