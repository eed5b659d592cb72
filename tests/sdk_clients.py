"""The virtualenv of the OpenAI-compatible clients lcp is tested with besides the openai SDK
(langchain-openai, litellm as an SDK): their dependencies are theirs, so they live apart from lcp's own
and are made on first use, as bench/gateway.py makes LiteLLM's."""

import subprocess
import sys
from pathlib import Path

CLIENTS_VENV = Path.home() / ".cache" / "lcp" / "sdk-clients-venv"
CLIENTS_REQUIREMENTS = ("langchain-openai>=1.8,<2", "litellm>=1.110,<2")
INSTALLED_MARKER = ".lcp-installed"


def clients_python() -> Path:
    """The interpreter that has the clients installed: the virtualenv, made (minutes) when missing."""
    python = CLIENTS_VENV / "bin" / "python"
    wanted = "\n".join(CLIENTS_REQUIREMENTS) + "\n"
    marker = CLIENTS_VENV / INSTALLED_MARKER
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    CLIENTS_VENV.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CLIENTS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *CLIENTS_REQUIREMENTS], check=True, timeout=1800)
    marker.write_text(wanted)
    return python
