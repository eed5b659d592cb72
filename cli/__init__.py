"""The `lcp` command line (Typer + rich): dev stack, API, workers, simulator, chat, benchmarks.

Each module here is one sub-app that declares and implements its own commands (cli/rollout.py is
`lcp rollout`, ...; cli/serve.py and cli/chat.py hold the top-level commands); this one puts them together,
in the order `lcp --help` lists them. A command that calls the API takes its client and the shared
--api/--home/--api-key options from cli/connection.py. Heavy modules (the lab, bench/, the workers, the API's
schemas) are imported inside the commands that need them, so that `lcp --help` stays fast."""

import typer

from cli import (
    assistants,
    bench,
    chaos,
    chaos_scenarios,
    chat,
    db,
    keys,
    lab,
    models,
    rollout,
    scaling,
    serve,
    temporal,
)

app = typer.Typer(
    help="lcp: the control plane behind an AI chat platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(serve.app)  # dev, api, worker, sim
app.add_typer(chat.app)  # chat
app.add_typer(db.app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(lab.app, name="lab")
app.add_typer(temporal.app, name="temporal")
app.add_typer(bench.app, name="bench")
app.add_typer(rollout.app, name="rollout")
app.add_typer(scaling.app, name="scaling")
chaos.app.add_typer(chaos_scenarios.app, name="scenario")  # lcp chaos scenario ...
app.add_typer(chaos.app, name="chaos")
app.add_typer(assistants.app, name="assistants")
app.add_typer(models.app, name="models")
