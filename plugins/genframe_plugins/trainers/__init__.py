"""Training procedures (adversarial, autoencoding, IMLE, prior fitting) and their optimisers and schedules."""
