"""From a source's post to the deliveries it causes: the stages, in the order `compose` lists them.

`ingest.Ingest` is the one path every source calls; it runs the stages inside one transaction.
"""
