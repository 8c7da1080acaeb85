"""Reading: find files, open codecs, parse formats into batches of documents with provenance."""
