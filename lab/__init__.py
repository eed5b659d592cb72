"""The lab: simulated parts (LLM endpoints, later a Kubernetes cluster) for running lcp on one machine."""
