"""The parts of a model: generators, critics, encoders, latent mappers, priors, code tables."""
