"""The prediction log: every accepted record, written off the request path, never lost, never twice.

- `request_ids`: the UUIDv7 request ids (and their age);
- `store`: table access (`LogStore`: batched inserts that skip duplicates, lookups, the feedback insert);
- `writer`: `PredictionLog`, the bounded queue and the background thread writing it in batches;
- `spool`: the per-worker write-ahead segments (JSON lines, written before the 200, synced before it or in the background, flock-held), kept while
  the database is down or after a kill, and their replay.

Tables (defined in `core.store`; the monitoring component reads them): `predictions`, one row per
accepted record (request id, record index, time, model name and version, the record as validated,
probability, label, the request's latency); `feedback`, the true label of a record (one per record).
A record is only reported dropped when it can be written neither to the database nor to the spool file
(the `dropped` counter, and an error in the log).
"""
