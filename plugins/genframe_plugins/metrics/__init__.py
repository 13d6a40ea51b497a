"""Sample-quality metrics (FID, IS, KID, precision/recall) and the networks they measure with."""
