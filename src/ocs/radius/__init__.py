"""RADIUS adapter: the focused wire codec (codec) and, later, the UDP server around it."""
