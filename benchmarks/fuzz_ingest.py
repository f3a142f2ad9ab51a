"""Fuzz the ingest parser: ``lanthorn.dicom.parse_instance`` may only raise BadFileFormat.

Anything else reaching the REST API is a 500, and over DICOM a failed association; and
what it accepts must be readable afterwards (main tags at ingest, the stored header for
``/tags``). Run by hand for as long as you like (not in CI); the seeds are pydicom's
test files and a small generated CT, all valid, which the fuzzer then corrupts.

With atheris (``pip install atheris``: coverage-guided, libFuzzer options pass through):

    python benchmarks/fuzz_ingest.py --corpus fuzz-corpus -max_total_time=3600 -timeout=10

Without it, or with ``--engine hypothesis``, random mutations of the seeds:

    python benchmarks/fuzz_ingest.py --engine hypothesis --examples 200000

``--warnings error`` makes pydicom's warnings exceptions, as under the test suite; the
parser must refuse such files with BadFileFormat too. A failure prints the input (or,
with atheris, writes it to ``crash-*``): reproduce it with ``parse_instance(data)``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

SEED_FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
              "rtplan.dcm", "rtstruct.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "image_dfl.dcm",
              "waveform_ecg.dcm")


def seeds() -> list[bytes]:
    """Valid files of several transfer syntaxes, sequences and encapsulated pixel data."""
    from pydicom.data import get_testdata_file

    from lanthorn.testing import make_instance

    found = [Path(p).read_bytes() for name in SEED_FILES
             if (p := get_testdata_file(name, download=False))]
    return [*found, make_instance()]


def target() -> Callable[[bytes], None]:
    """The function under test; imports here so that atheris can instrument them first."""
    from lanthorn.dicom import (
        dataset_json,
        main_tag_values,
        pack_header,
        parse_instance,
        read_header,
    )
    from lanthorn.errors import BadFileFormat
    from lanthorn.model import MainTags

    main_tags = MainTags()

    def one_input(data: bytes) -> None:
        try:
            parsed = parse_instance(data)
        except BadFileFormat:
            return
        main_tag_values(parsed.dataset, main_tags)
        dataset_json(read_header(pack_header(parsed.header)))

    return one_input


def run_atheris(corpus: Path, libfuzzer_args: list[str]) -> None:
    """libFuzzer keeps the inputs that reach new code in ``corpus``, seeded when empty."""
    import atheris

    with atheris.instrument_imports(include=["pydicom", "lanthorn"]):
        one_input = target()
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for number, data in enumerate(seeds()):
            (corpus / f"seed-{number}.dcm").write_bytes(data)
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], one_input)
    atheris.Fuzz()


def run_hypothesis(examples: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import HypothesisWarning

    # --warnings is about the parser: not hypothesis's own note on a large input's repr.
    warnings.filterwarnings("ignore", category=HypothesisWarning)

    files = seeds()  # once: make_instance() draws new UIDs, and strategies must repeat

    @st.composite
    def mutated(draw: Callable) -> bytes:  # type: ignore[type-arg]
        data = bytearray(draw(st.sampled_from(files)))
        for _ in range(draw(st.integers(0, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position:position + 4] = draw(st.binary(min_size=1, max_size=4))
        return bytes(data[:draw(st.integers(1, len(data)))])

    one_input = target()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def fuzz(data: bytes) -> None:
        one_input(data)

    fuzz()
    print(f"{examples} inputs: nothing but BadFileFormat, and every accepted file readable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("atheris", "hypothesis"),
                        default="atheris" if importlib.util.find_spec("atheris") else "hypothesis")
    parser.add_argument("--corpus", type=Path, default=Path("fuzz-corpus"), help="atheris only")
    parser.add_argument("--examples", type=int, default=100_000, help="hypothesis only")
    parser.add_argument("--warnings", choices=("ignore", "error"), default="ignore")
    options, libfuzzer_args = parser.parse_known_args()
    warnings.simplefilter(options.warnings)  # type: ignore[call-overload]
    if options.engine == "atheris":
        run_atheris(options.corpus, libfuzzer_args)
    else:
        run_hypothesis(options.examples)


if __name__ == "__main__":
    main()
