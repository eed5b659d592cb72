"""Side effects, grouped by the system they touch; classes built once per worker with clients injected.
What workflows and the API may import of them (inputs, results, activity names) lives in
activities/contracts/; the clients the API shares with the workers live in inference/. A renderer of
what an activity sends (activities/argo_workflow.py) sits beside that activity."""
