"""``python -m unlearn_jax.lm_eval ARGS``: lm-eval's own command line with the ``unlearn_jax`` model registered.

lm-eval 0.4.x does not discover plugin models, so this imports the adapter (which registers it) and hands
every argument to lm-eval unchanged, e.g.::

    python -m unlearn_jax.lm_eval --model unlearn_jax --model_args pretrained=runs/npo \\
        --tasks world_mc --include_path tests/lm_eval_tasks --output_path out/ --log_samples
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate

    import unlearn_jax.evaluation.lm_eval_adapter  # noqa: F401  (registers the model)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
