"""The charging pipeline: where the account cache, the credit core and usage recording meet.

Protocol adapters (RADIUS, Diameter) call into this package; the store and the sidecar loader
implement what it declares. Nothing here knows SQL or a wire format.
"""
