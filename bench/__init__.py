"""Every benchmark of lcp and the workflows only benchmarks run (the floor). `lcp bench ...` (cli/)
declares the commands and imports these modules lazily; a new benchmark goes here as one module, its
command in cli/. Shipped with the package but its dependencies come with the `bench` extra
(`pip install '.[bench]'`), never in a production install."""
