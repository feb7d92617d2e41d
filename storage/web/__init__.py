"""Pages of the storage app: datasets, uploading, and keys (namespace `storage`)."""
