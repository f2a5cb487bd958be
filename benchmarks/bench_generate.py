"""Generation and training throughput on this machine: ``python benchmarks/bench_generate.py [--prompts N]``.

Calls ``xdetox bench`` (reference pattern vs xdetox's generator on the same prompts, each
in its own process for peak RSS, plus one LoRA epoch) and prints its table and JSON.
"""

import sys

from xdetox.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
