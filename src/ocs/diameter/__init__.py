"""Diameter front (RFC 6733 base, RFC 4006 credit control, 3GPP Gy): pure layers first.

``framer`` cuts a TCP byte stream into messages, ``codec`` parses and encodes headers and AVPs,
``credit_control`` is the CCR fast path and the CCA builder, ``peer_state`` is the RFC 6733 §5.6
peer table, the RFC 3539 watchdog and the CER/CEA, DWR/DWA, DPR/DPA messages. None of them opens
a socket, reads a clock or logs: the asyncio adapter feeds them bytes and ``now`` and acts on what
they return.
"""
