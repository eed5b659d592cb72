"""The HTTP API: the FastAPI app, one router per resource (api/routes/), auth, request and response
schemas. A route starts, updates, signals or queries a workflow and reads the SQL read model; it
imports workflows' and activities' contracts (activities/contracts/), shared clients from inference/
and temporal/, never an activity implementation. The command line is the top-level cli/ package."""
