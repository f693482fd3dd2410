"""`slimkern serve` is a subcommand with the serving knobs (the server itself is tested in test_server.py)."""

from slimkern.cli import build_parser
from slimkern.serving import command


def test_serve_subcommand_parses_its_options():
    args = build_parser().parse_args(["serve", "satmae", "--port", "9000", "--widths", "1,0.5,0.1", "--max-batch",
                                      "4", "--max-queue", "8", "--profile", "p.json"])
    assert args.func is command.run
    assert (args.name, args.port, args.widths, args.max_batch, args.max_queue, args.profile) == (
        "satmae", 9000, (1.0, 0.5, 0.1), 4, 8, "p.json")
    assert args.host == "127.0.0.1" and args.weights is None
