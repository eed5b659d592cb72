"""Where the lab shows the LLM simulator's replicas: pods behind one Service (lab/server.py makes them), so
their EndpointSlices list them as a cluster lists vLLM pods. Names only: `lcp dev` reads them without
loading the lab."""

FLEET_NAMESPACE = "inference"
FLEET_SERVICE = "sim-llama-8b"
