"""Architecture plugins: the models the `train` stage builds."""
