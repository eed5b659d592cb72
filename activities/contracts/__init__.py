"""Activity contracts: the input and result dataclasses, names and activity signatures that workflows
and the API import, apart from the implementations and their heavy clients (kubernetes, numpy,
scikit-learn, Prometheus, the database engine). A new activity declares its contract here first; its
implementation in activities/ subclasses the contract class and keeps the same activity names. Imports
the standard library, temporalio, yaml and policies/ only."""
