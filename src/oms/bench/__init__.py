"""`oms bench`: the system's speed, measured end to end beside the physical limits of the same machine."""
