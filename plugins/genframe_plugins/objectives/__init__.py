"""What training minimises: reconstruction losses, divergences, Lipschitz constraints, latent divergences."""
