"""The fuzzing harness (tests/fuzz): it must see each kind of failure for what it is, its
mutations must be reproducible and reach the headers they aim at, and a slice of mutated inputs
must pass through the real decoders with no finding."""

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_media import DecodeError
from tests.fuzz import structure
from tests.fuzz.__main__ import main
from tests.fuzz.harness import FINDINGS, Caps, Result, Worker, campaign
from tests.fuzz.mutate import Mutant, mutate
from tests.fuzz.seeds import SEEDS, seed_named
from tests.fuzz.target import ContractError

GiB = 1 << 30
MISBEHAVE = "tests.test_fuzz:misbehave"
CI_SEED = 20_240_613
CI_COUNT = 300


def misbehave(modality: str, data: bytes) -> None:
    """A worker target for the harness's own tests: does what ``data`` says."""
    if data == b"crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif data == b"hang":
        time.sleep(60)
    elif data == b"memory":
        filled = b"\1" * GiB  # written, so every page is resident
        del filled
    elif data == b"raise":
        raise KeyError("boom")
    elif data == b"contract":
        raise ContractError("shape (2, 2) is not (3, H, W)")
    elif data == b"refuse":
        raise DecodeError("not an image")


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[Worker]:
    with Worker(MISBEHAVE) as worker:
        yield worker


class TestWorker:
    @pytest.mark.parametrize(
        ("data", "outcome", "error_type", "says"),
        [
            (b"fine", "ok", None, None),
            (b"refuse", "media_error", "dynamo_media._errors.DecodeError", "not an image"),
            (b"raise", "raw_exception", "KeyError", "'boom'"),
            (b"contract", "contract", "tests.fuzz.target.ContractError", "is not (3, H, W)"),
            (b"crash", "crash", "SIGSEGV", "the worker died by SIGSEGV"),
            (b"hang", "hang", "time cap", "no answer within 5.0 s"),
            (b"memory", "memory", "peak RSS growth", "over the cap (256 MiB)"),
        ],
    )
    def test_outcome(self, misbehaving, data, outcome, error_type, says):
        result = misbehaving.run("image", data)
        assert result.outcome == outcome
        error = result.error or {}
        assert error.get("type") == error_type
        assert says is None or says in error["message"]
        if outcome in ("raw_exception", "crash", "hang"):  # where it happened, for the fixer
            assert "misbehave" in error.get("traceback", "") + error.get("stderr", "")
        after = misbehaving.run("image", b"fine")  # a new worker if that one died
        assert after.outcome == "ok"
        assert after.peak_growth_mib is not None and after.peak_growth_mib < 64

    def test_rss_cap_kills(self):
        with Worker(MISBEHAVE, Caps(peak_growth_mib=4096, rss_growth_mib=512)) as worker:
            result = worker.run("image", b"memory")
            assert (result.outcome, result.peak_growth_mib) == ("memory", None)
            assert result.error is not None and result.error["type"] == "RSS cap"
            assert worker.run("image", b"fine").outcome == "ok"


class TestMutate:
    @pytest.mark.parametrize("seed", SEEDS, ids=lambda seed: seed.name)
    def test_reproducible(self, seed):
        mutants = [mutate(seed_named(seed.name), n) for n in (7, 7, 8)]
        assert (mutants[0].data, mutants[0].ops) == (mutants[1].data, mutants[1].ops)
        assert mutants[0].data != seed.data
        assert mutants[0].data != mutants[2].data

    @pytest.mark.parametrize("seed", SEEDS, ids=lambda seed: seed.name)
    def test_structure_covers_the_seed(self, seed):
        groups = structure.groups(seed.data, seed.format)
        if seed.format in structure.CHUNKED:
            top = groups[0]
            assert top[-1].end == len(seed.data)
            assert all(a.end == b.start for a, b in itertools.pairwise(top))
        else:
            assert groups == []
        assert bool(structure.fields(seed.data, seed.format)) == (seed.format in structure.FIELDED)
        assert structure.fix_checksums(seed.data, seed.format) == seed.data

    @pytest.mark.parametrize(
        ("name", "labels"),
        [
            ("testsrc2.png", {"IHDR+0", "IHDR+4"}),  # width, height
            ("testsrc2.jpg", {"ffc0+1", "ffc0+3"}),
            ("animated.gif", {"screen+6", "screen+8", "image+5", "image+7"}),
            ("testsrc2.bmp", {"BMP+18", "BMP+22"}),
            ("testsrc2.tiff", {"tag 256 value", "tag 257 value"}),
            ("testsrc2.webp", {"VP8 +6", "VP8 +8", "RIFF.size"}),
            ("s16.wav", {"fmt +2", "fmt +4", "data.size"}),  # channels, rate, data size
            ("mjpeg.avi", {"avih+32", "avih+36", "strf+4", "strf+8"}),
            ("h264.mp4", {"tkhd+76", "avc1+24", "stsz+8", "moov.size"}),
            ("vp9.webm", {"b0+0", "ba+0", "18538067.size"}),
            ("tone.ogg", {"OpusHead+9", "OggS+6"}),
            ("tone.flac", {"STREAMINFO+10", "STREAMINFO+14"}),
        ],
    )
    def test_header_fields(self, name, labels):
        seed = seed_named(name)
        assert labels <= {field.label for field in structure.fields(seed.data, seed.format)}

    def test_field_mutation_reaches_the_decoder(self):
        """A PNG whose IHDR says 0xFFFF wide, with its CRC made right, is refused by the limits."""
        seed = seed_named("testsrc2.png")
        width = next(f for f in structure.fields(seed.data, "png") if f.label == "IHDR+0")
        data = bytearray(seed.data)
        data[width.offset : width.offset + 4] = (0xFFFF).to_bytes(4, "big")
        with Worker() as worker:
            result = worker.run("image", structure.fix_checksums(bytes(data), "png"))
        assert result.outcome == "media_error"
        assert result.error is not None and "wider than limits.max_image_width" in str(result.error)


class TestDecoders:
    def test_seeds_decode(self):
        """Every seed passes the contract as it is: a contract finding is the decoder's fault."""
        with Worker() as worker:
            outcomes = {seed.name: worker.run(seed.modality, seed.data).outcome for seed in SEEDS}
        assert outcomes == dict.fromkeys(outcomes, "ok")

    def test_mutants(self):
        """The CI slice: mutants of every format through the real decoders, and no finding.

        Reproduce one with ``python -m tests.fuzz --replay FILE`` after saving it, or
        ``mutate(seed_named(SEED), MUTATION_SEED)``.
        """
        findings: list[str] = []

        def report(mutant: Mutant, result: Result) -> None:
            if result.outcome in FINDINGS:
                name, n = mutant.seed.name, mutant.mutation_seed
                findings.append(f"{result.outcome} {name} {n} {mutant.ops}: {result.error}")

        campaign(CI_COUNT, report, first_seed=CI_SEED)
        assert findings == []


class TestCommandLine:
    def test_campaign(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        args = ["--count", "8", "--workers", "1", "--formats", "png,wav", "--out", str(tmp_path)]
        status = main(args)
        out = capsys.readouterr().out
        findings = [json.loads(s) for s in (tmp_path / "findings.jsonl").read_text().splitlines()]
        assert status == int(bool(findings))
        assert {f["format"] for f in findings} <= {"png", "wav"}
        assert "8 inputs in" in out and "inputs/s with 1 workers" in out
        assert [line.split()[0] for line in out.splitlines()[1:4]] == ["png", "wav", "all"]

    def test_replay(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        saved = tmp_path / "ok-testsrc2-0.png"
        saved.write_bytes(seed_named("testsrc2.png").data)
        assert main(["--replay", str(saved)]) == 0
        assert capsys.readouterr().out.startswith(f"{saved}: ok in ")
