"""Training data: finding image pairs, reading patches, and synthetic images for testing."""
