"""The pipeline's floor plan, checked: every module of src/ includes only the
headers of its own stage, of the stages below it, and of lib/ (see
docs/ARCHITECTURE.md); nothing but the composition root (src/bot.*, src/main.c)
knows struct bot. Exits 1 naming each include that points up or sideways.

    python3 tests/check_layers.py [SRC_DIR]
"""

import re
import sys
from pathlib import Path

# What each stage may include besides itself. lib/ is the floor; telegram/,
# model/ and store/ are side by side and know nothing of each other.
ALLOWED = {
    "lib": set(),
    "telegram": {"lib"},
    "model": {"lib"},
    "store": {"lib"},
    "chat": {"telegram", "model", "store", "lib"},
    "gate": {"chat", "telegram", "model", "store", "lib"},
    # The ingresses read the configuration (config.h, at the top of src/).
    "ingress": {"gate", "chat", "telegram", "model", "store", "lib", "config"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def stage_of_header(name: str) -> str:
    """'chat/chat.h' -> 'chat'; 'config.h' -> 'config'; 'bot.h' -> 'bot'."""
    return name.split("/", 1)[0] if "/" in name else Path(name).stem


def check(src: Path) -> list:
    problems = []
    for path in sorted(src.rglob("*.[ch]")):
        rel = path.relative_to(src)
        stage = rel.parts[0] if len(rel.parts) > 1 else None  # None: the top (main, bot, config)
        text = path.read_text("utf-8", "replace")
        if stage is not None and re.search(r"\bstruct bot\b", text):
            problems.append(f"{rel}: mentions struct bot, which only the composition root (src/bot.*) may know")
        if stage is None:
            continue
        allowed = ALLOWED.get(stage)
        if allowed is None:
            problems.append(f"{rel}: {stage}/ is not a stage of the pipeline (add it to ALLOWED, in its place)")
            continue
        for header in INCLUDE.findall(text):
            target = stage_of_header(header)
            if target != stage and target not in allowed:
                problems.append(f"{rel}: includes {header}: {stage}/ may include only "
                                f"{', '.join(sorted(allowed | {stage}))}")
    return problems


def main() -> int:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src"
    problems = check(src)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} include(s) against the pipeline's direction")
        return 1
    print(f"the layers hold: {sum(1 for _ in src.rglob('*.[ch]'))} files checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
