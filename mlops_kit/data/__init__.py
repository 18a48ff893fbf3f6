"""The data engineering pipeline: ingest, validate, wrangle, label, split (one module per step notebook in nbs/)."""
