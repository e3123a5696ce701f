#!/usr/bin/env python3
"""cold_start_order.py LACKEY_LOG BINARY: the symbol ordering file of a cold start.

LACKEY_LOG is valgrind's `--tool=lackey --trace-superblocks=yes
--vex-guest-chase=no` log of one run of BINARY (a static tgllm with its
symbols); bench/run --order makes it from a cold `handle`. Printed: the
functions that run executed, one name a line, in the order it first
executed them, for the linker's --symbol-ordering-file (CMakeLists.txt).

Valgrind's virtual CPU has no AVX-512, so glibc picked the AVX2 variants of
its string functions there; the variants a real CPU picks (EVEX, AVX-512,
AVX2) are listed beside each one executed. SSE variants are left out: no
CPU a serverless platform runs on picks them.
"""

import bisect
import re
import subprocess
import sys

ISA_VARIANT = re.compile(r"^(__\w+?)_(sse2|ssse3|sse4_1|sse4_2|avx2|avx512|avx|evex|erms)")
OLD_ISA = re.compile(r"sse|_avx_|_avx$")


def functions(binary):
    """[(start, size, name)] of BINARY's functions, by address."""
    out = subprocess.run(["nm", "-S", binary], capture_output=True, text=True, check=True).stdout
    funcs = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwWi":
            funcs.append((int(p[0], 16), int(p[1], 16), p[3]))
    funcs.sort()
    return funcs


def first_executed(log, funcs):
    starts = [f[0] for f in funcs]
    seen, order = set(), []
    with open(log) as f:
        for line in f:
            if not line.startswith("SB "):
                continue
            a = int(line[3:], 16)
            i = bisect.bisect_right(starts, a) - 1
            if i < 0:
                continue
            start, size, name = funcs[i]
            if size and a >= start + size:
                continue
            if name not in seen:
                seen.add(name)
                order.append(name)
    return order


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    funcs = functions(sys.argv[2])
    names = {f[2] for f in funcs}
    variants = {}
    for n in sorted(names):
        m = ISA_VARIANT.match(n)
        if m and not OLD_ISA.search(n):
            variants.setdefault(m.group(1), []).append(n)
    out, seen = [], set()
    for n in first_executed(sys.argv[1], funcs):
        m = ISA_VARIANT.match(n)
        for name in [n] + (variants.get(m.group(1), []) if m else []):
            if name not in seen:
                seen.add(name)
                out.append(name)
    if len(out) < 100:
        sys.exit(f"cold_start_order.py: only {len(out)} functions in {sys.argv[1]}: not a run of {sys.argv[2]}?")
    print("\n".join(out))


if __name__ == "__main__":
    main()
