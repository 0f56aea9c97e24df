"""Dubbing many ads at once: manifests (`manifest`), inputs given by URL (`download`), and
what each delivery is made from and whether it is still up to date (`staleness`)."""
