"""The ``smalldl`` command (``[project.scripts]``): what a user runs after a study.

    smalldl predict results/final/emphysema my_images/ --out predictions.csv [--tta] [--cam maps/]

``predict`` scores PNG, JPEG and DICOM files (a folder: searched recursively, in sorted order) with a final
model (``smalldl.final``): one row per image, a probability per output (``p_<label>``), the model's
temperature applied. An image that cannot be read is one line naming it on stderr; the others are still
scored and the exit status is 0 if any image was scored (2 when none was). ``--cam DIR`` also writes the
Grad-CAM map of each output for each image (``smalldl.cam``). Also ``python -m smalldl.cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from smalldl.errors import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smalldl", description="Use a study's final model.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="score images with a final model (results/final/<task>/)")
    p.add_argument("model_dir", help="a final model's folder: results/final/<task>")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, DICOM) or folders of them")
    p.add_argument("--out", default="predictions.csv", help="the CSV to write (default: predictions.csv)")
    p.add_argument("--tta", action="store_true", help="average the test-time augmentation views, as the study did")
    p.add_argument("--cam", metavar="DIR", help="also write each image's class-activation maps (Grad-CAM) here")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def predict(args: argparse.Namespace) -> int:
    from smalldl import final
    from smalldl.utils import atomic_path

    model = final.load(args.model_dir, device=args.device)
    paths = final.image_paths(args.images)
    if not paths:
        raise InputError(f"no image found in {' '.join(args.images)}")
    table, errors = final.predict_paths(model, paths, tta=args.tta, progress=not args.quiet)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)  # floats as repr: read back, the same numbers to the bit
    print(
        f"{len(table)} image(s) scored by {args.model_dir} into {args.out}"
        + (f"; {len(errors)} could not be read (named above)" if errors else ""),
        file=sys.stderr,
    )
    if args.cam and len(table):
        import numpy as np

        from smalldl import cam

        images = [final.read_image(p, model.spec) for p in table["image"]]
        written = cam.write_maps(model, np.stack(images), list(table["image"]), args.cam)
        print(f"{len(written)} class-activation map(s) in {args.cam}", file=sys.stderr)
    return 0 if len(table) else 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return predict(args)
    except InputError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
