"""The command line at its edges (issue 13 items 4, 8, 11): one line per error with a documented exit code, never a
traceback for user error, an interrupt or a closed pipe; `--version`; numbers checked by argparse."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import slimkern
from slimkern import cli
from slimkern.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"slimkern {slimkern.__version__}"


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code, meaning in cli.EXIT_CODES.items():
        assert f"{code:>3}  {meaning}" in out
    readme = (ROOT / "README.md").read_text()
    for code, meaning in cli.EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in readme


def test_unknown_device_is_one_line(capsys):
    assert main(["demo", "--device", "tpu"]) == 2
    assert one_line(capsys.readouterr().err) == ("slimkern demo: error: unknown device 'tpu'; use 'cpu', 'cuda' or "
                                                 "'cuda:N'")


@pytest.mark.parametrize("content", [b"", b"\x00" * 10])
def test_unreadable_checkpoint_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    assert main(["demo", "--model", "vit_tiny_eurosat", "--weights", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("slimkern demo: error: cannot read") and "broken.pth" in line


def run_with(monkeypatch, capsys, exception: BaseException, argv=("list",)) -> tuple[int, str]:
    def fail(args):
        raise exception

    monkeypatch.setattr(cli, "cmd_list", fail)
    try:
        code = main(list(argv))
    except BaseException as err:  # a KeyboardInterrupt escaping main would stop the whole test session
        pytest.fail(f"main() let {type(err).__name__} escape")
    return code, capsys.readouterr().err


def test_interrupt_is_one_line_and_130(monkeypatch, capsys):
    code, err = run_with(monkeypatch, capsys, KeyboardInterrupt())
    assert code == 130 and one_line(err) == "slimkern list: interrupted"


def test_os_errors_and_internal_errors_have_their_own_codes(monkeypatch, capsys):
    code, err = run_with(monkeypatch, capsys, OSError(errno.ENOSPC, "No space left on device"))
    assert code == 4 and one_line(err) == "slimkern list: error: [Errno 28] No space left on device"
    code, err = run_with(monkeypatch, capsys, RuntimeError("boom"))
    assert code == 5 and "internal error: RuntimeError: boom" in one_line(err) and "SLIMKERN_DEBUG=1" in err
    monkeypatch.setenv("SLIMKERN_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["list"])


def test_closed_pipe_is_a_quiet_exit():
    # `slimkern flops --all --widths paper | head -1`: the reader goes away after one line
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "slimkern.cli", "flops", "--all", "--widths", "paper"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize(("argv", "message"), [
    (["serve", "satmae", "--port", "99999"], "--port: must be a port number 1-65535, got 99999"),
    (["serve", "satmae", "--port", "-1"], "--port: must be a port number 1-65535, got -1"),
    (["serve", "satmae", "--max-batch", "0"], "--max-batch: must be a whole number >= 1, got '0'"),
    (["serve", "satmae", "--max-tokens", "0"], "--max-tokens: must be a whole number >= 1, got '0'"),
    (["sweep", "--out", "x", "--batch", "0"], "--batch: must be a whole number >= 1, got '0'"),
    (["sweep", "--out", "x", "--seeds", "-2"], "--seeds: must be a whole number >= 1, got '-2'"),
    (["demo", "--batch", "0"], "--batch: must be a whole number from 1 to 10"),
    (["demo", "--batch", "11"], "--batch: must be a whole number from 1 to 10"),
    (["flops", "satmae", "--image-size", "0"], "--image-size: must be a whole number >= 1, got '0'"),
])
def test_numbers_are_checked_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
