"""``zcopy top``: a live dashboard over the snapshots in zcopy.stats."""
