#!/usr/bin/env python3
"""The docs check (`bash scripts/test.sh docs`): every relative link in the Markdown docs points at a file
that exists (and, with #anchor, at a heading in it), every doctest test case they cite (`Suite.Group.case`
in backticks) exists in tests/, every `compile_fail.<case>` they cite has its file, and every path under
tests/, examples/, include/, benchmarks/ or scripts/ they cite in backticks exists. Prints each problem as
FILE:LINE: message and exits 1 if there is any."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CASE = re.compile(r"`((?:[A-Z][A-Za-z0-9]*)\.[A-Za-z0-9]+\.[a-z0-9_]+(?:\.[a-z0-9_]+)*)`")
COMPILE_FAIL = re.compile(r"compile_fail\.([a-z0-9_]+)")
PATH = re.compile(r"`((?:tests|examples|include|benchmarks|scripts|docs|cmake)/[A-Za-z0-9_./+-]*)`")


def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def test_cases():
    names = set()
    for f in (ROOT / "tests").rglob("*.cpp"):
        for m in re.finditer(r'TEST_CASE\(\s*"([^"]+)"', f.read_text(encoding="utf-8", errors="replace")):
            names.add(m.group(1))
    return names


def main():
    cases = test_cases()
    problems = []
    for doc in DOCS:
        if not doc.exists():
            continue
        rel = doc.relative_to(ROOT)
        in_code = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue  # an external link
                file_part, _, anchor = target.partition("#")
                dest = doc if not file_part else (doc.parent / file_part).resolve()
                if not dest.exists():
                    problems.append(f"{rel}:{number}: link to a missing file: {target}")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append(f"{rel}:{number}: link to a missing heading: {target}")
            for name in CASE.findall(line):
                if name not in cases and not name.startswith("compile_fail."):
                    problems.append(f"{rel}:{number}: cites a test case that does not exist: {name}")
            for case in COMPILE_FAIL.findall(line):
                if not (ROOT / "tests" / "compile_fail" / (case + ".cpp")).exists():
                    problems.append(f"{rel}:{number}: cites a compile_fail case that does not exist: {case}")
            for path in PATH.findall(line):
                if "/." in path:
                    continue  # a build directory
                if not (ROOT / path.rstrip("/")).exists():
                    problems.append(f"{rel}:{number}: cites a path that does not exist: {path}")
    for p in problems:
        print(p)
    print(f"check_docs: {len(DOCS)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
