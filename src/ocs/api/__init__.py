"""The account API (``ocs api``): HTTP/JSON for billing systems, portals and CRMs, with its
OpenAPI 3.1 document at ``/openapi.json`` (committed as ``docs/openapi.json``).

Rules of this package:
- It translates HTTP to the service layer (``ocs.admin``) and back; it holds no SQL and no
  business rule. It talks to PostgreSQL, never to a daemon's memory.
- Every endpoint but ``/health`` needs a bearer token and acts as the token's operator, so the
  operators' allowances (seed 004) bind it exactly as they bind the CLI.
- Money is a decimal string both ways, never a JSON number. Errors are RFC 9457
  ``application/problem+json`` naming the rule (``type``) and the figures (``detail``, the same
  text the CLI prints).
"""
