"""The archive: pages and a JSON API over the store, served by `tgsentinel web`, or beside the
probes of `tgsentinel run`."""
