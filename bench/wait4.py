"""Run a command; write its wall time and peak RSS as JSON (used by bench/inputs.py's run_measured).

    python bench/wait4.py RESULT.json -- COMMAND ...

The command is started from this small process, not from the benchmark itself:
Linux carries the high-water mark of the process a child was forked from into
the child's ru_maxrss (fork + exec), and the benchmark holds hundreds of MB of
torch. Started from here, the floor is this process's few MB. ru_maxrss from
wait4 is the largest resident set of the command and of the children it waited
for (data.py's tokenizer workers), each taken alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> None:
    result, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit("usage: python bench/wait4.py RESULT.json -- COMMAND ...")
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w", encoding="utf-8") as f:
        json.dump({"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024, "returncode": code}, f)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
