"""The event core: exact event-to-event simulation of CuBa-LIF networks."""
