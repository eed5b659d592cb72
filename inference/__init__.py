"""Clients shared by the API and the workers for talking to inference endpoints: the gateway
(routes, deployments, picking, canary weights, cooldowns, fallbacks; gateway.py) and the token relay
that carries streamed tokens from the inference activity to the waiting API request (token_relay.py).
A change to how lcp calls a model goes here; the Temporal activity that wraps the gateway stays in
activities/inference.py. May import settings/, policies/ and store/, never activities/, workflows/ or api/."""
