"""Built-in genframe components, registered through the genframe entry-point group like any plugin."""
