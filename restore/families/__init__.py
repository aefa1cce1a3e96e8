"""Body families. Each module registers its family and its named variants on import."""
