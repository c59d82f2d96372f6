"""`oms chaos`: faults under load, then proof that nothing was lost and nothing happened twice."""
