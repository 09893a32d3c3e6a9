"""crossdistill: knowledge transfer between models and between data domains."""
