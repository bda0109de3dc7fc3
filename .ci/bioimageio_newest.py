"""bioimageio.core's model test of bioimage.io packages bioim2im exported, under the newest
bioimageio.spec, in an environment without bioim2im (as a model-zoo reviewer's machine).

Run by ``nox -s bioimageio_newest`` with the packages the test suite exported
(``BIOIM2IM_EXPORTED_PACKAGES``: one per shipped preset). Every weights format of every
package must pass, ``pytorch_state_dict`` included: a shipped preset's network is built-in
components, which the package's own architecture file rebuilds with torch and MONAI (weights
that import from bioim2im count as a failure here). Exit 1 and a summary of each failure
otherwise.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

NEWEST = (0, 5, 14)
"""The oldest bioimageio.spec this check accepts: the newest minor release, with its stricter
rules (e.g. no tolerance on discrete outputs)."""


def main(paths: list[str]) -> int:
    import bioimageio.core
    import bioimageio.spec
    from bioimageio.core import test_model
    from ruyaml import YAML

    if importlib.util.find_spec("bioim2im") is not None:
        print("bioim2im is importable here: this check needs an environment without it")
        return 1
    version = tuple(int(p) for p in bioimageio.spec.__version__.split(".")[:3])
    if version < NEWEST:
        print(f"bioimageio.spec {bioimageio.spec.__version__} is older than {NEWEST}")
        return 1
    print(
        f"bioimageio.core {bioimageio.core.__version__}, bioimageio.spec "
        f"{bioimageio.spec.__version__}, without bioim2im"
    )
    if not paths:
        print("no packages given")
        return 1
    failed = 0
    for path in map(Path, paths):
        with zipfile.ZipFile(path) as archive:
            weights = dict(YAML(typ="safe").load(archive.read("rdf.yaml"))["weights"])
        passed = 0
        for weights_format, entry in weights.items():
            architecture = (entry or {}).get("architecture") or {}
            if str(architecture.get("import_from", "")).startswith("bioim2im"):
                # Only a plugin's component makes a package's state dict need bioim2im; every
                # shipped preset is built-in components, which the package's own file holds.
                print(f"{'needs':>8}  {path.name}  {weights_format} (declared: bioim2im)")
                failed += 1
                continue
            summary = test_model(path, weight_format=weights_format)
            print(f"{summary.status:>8}  {path.name}  {weights_format}")
            if summary.status != "passed":
                failed += 1
                for detail in summary.details:
                    for error in detail.errors:
                        print(f"          {detail.name}: {error.msg[:500]}")
            else:
                passed += 1
        if not passed:
            failed += 1
            print(f"          {path.name}: no weights format runs without bioim2im")
    print(f"{failed} failed" if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
