"""The discrete engine: fixed-step CuBa-LIF / LI layers with surrogate gradients."""
