"""Exports: consistent, watermarked CSV/XLSX files of what the other domains hold, with a
manifest (row count, sums per currency, SHA-256) in an audit table."""
