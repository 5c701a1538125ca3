"""`unlearn-jax` entry point: parses, validates, dispatches. No logic of its own.

Exit codes: 0 ok, 2 bad input or usage (one line on stderr), 1 internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from unlearn_jax.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn-jax",
        description="Machine unlearning for foundation models in JAX, with audits that expose fake unlearning.",
    )
    from unlearn_jax import __version__

    parser.add_argument("--version", action="version", version=f"unlearn-jax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()

    export = sub.add_parser("export", parents=[common], help="re-save a model or run as a Hugging Face directory",
                            description="Re-save a model directory or a run's model/ as a Hugging Face model "
                                        "directory (e.g. to change the dtype or shard the weights).")
    export.add_argument("--model", required=True, help="model directory, run directory, or hub id (online)")
    export.add_argument("--out", required=True, help="output Hugging Face model directory (must not exist)")
    export.add_argument("--dtype", choices=DTYPES, default=None, help="dtype of the saved weights (default: as loaded)")
    export.add_argument("--max-shard-size", type=int, default=None, metavar="BYTES",
                        help="split the weights into shards of at most this many bytes (+ index)")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.set_defaults(run=_export)
    return parser


def _export(args) -> None:
    from unlearn_jax.models.hf import load_model

    out = os.path.abspath(args.out)
    if os.path.exists(out) and not args.force and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"--out {args.out}: already exists (pass --force to replace it)")
    if args.max_shard_size is not None and args.max_shard_size < 1:
        raise UserError("--max-shard-size must be a positive number of bytes")
    lm = load_model(args.model, param_dtype=args.dtype or "float32")
    lm.save_hf(out, dtype=args.dtype, max_shard_bytes=args.max_shard_size)
    if not args.quiet:
        print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        args.run(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"unlearn-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearn-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 — the last line of defence: one line, exit 1
        if args.debug:
            raise
        print(f"unlearn-jax {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
