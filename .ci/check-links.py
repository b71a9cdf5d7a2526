#!/usr/bin/env python3
"""Check the built book's links: every internal link and anchor resolves.

Usage: .ci/check-links.py [BOOK_DIR]   (default docs/book, what
`mdbook build docs` writes). Reads every .html file under BOOK_DIR; for each
href and src that is not external (http:, https:, mailto:, ...), the file it
names must exist under BOOK_DIR, and its #fragment must be an id (or a
name) in that file. Links into mdbook's own theme files are checked the same
way. A page that still holds an mdbook `{{#include ...}}` (one mdbook could
not read: it says ERROR and exits 0) counts as broken. Also README.md's relative links (BOOK_DIR's grandparent is taken as
the repository). Exits 1 listing every broken link, 0 when there is none.
"""
import html.parser
import os
import sys
import urllib.parse

EXTERNAL = ("http:", "https:", "mailto:", "ftp:", "data:", "javascript:")


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []  # (attr, value, line)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            if name in ("href", "src"):
                self.links.append((name, value, self.getpos()[0]))


def parse(path):
    page = Page()
    with open(path, encoding="utf-8") as f:
        page.text = f.read()
    page.feed(page.text)
    return page


def readme_links(repo):
    """README.md's relative links (into docs/) name files that exist."""
    import re

    broken = []
    path = os.path.join(repo, "README.md")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            for value in re.findall(r"\]\(([^)\s]+)\)", line):
                if value.lower().startswith(EXTERNAL) or value.startswith("#"):
                    continue
                target = os.path.join(repo, urllib.parse.urlsplit(value).path)
                if not os.path.exists(target):
                    broken.append(f"README.md:{n}: {value!r}: no such file")
    return broken


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "docs/book")
    if not os.path.isfile(os.path.join(root, "index.html")):
        print(f"{root}/index.html not found: build the book first (mdbook build docs)")
        return 1
    pages = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".html"):
                p = os.path.join(d, f)
                pages[p] = parse(p)
    broken = []
    checked = 0
    for path, page in sorted(pages.items()):
        rel = os.path.relpath(path, root)
        if rel == "404.html":
            # Its links are absolute, from `site-url` (where the book is
            # served), which a local build does not know.
            continue
        if "{{#" in page.text:
            # mdbook leaves an include it could not read as it was, and
            # exits 0.
            broken.append(f"{rel}: an mdbook {{{{#...}}}} directive was left unexpanded")
        for attr, value, line in page.links:
            if value.lower().startswith(EXTERNAL) or value.startswith("//"):
                continue
            url = urllib.parse.urlsplit(value)
            if url.scheme:
                continue
            checked += 1
            target = path
            if url.path:
                target = os.path.normpath(
                    os.path.join(os.path.dirname(path), urllib.parse.unquote(url.path))
                )
                if os.path.isdir(target):
                    target = os.path.join(target, "index.html")
            if not target.startswith(root + os.sep) and target != root:
                broken.append(f"{rel}:{line}: {attr}={value!r} leaves the book")
                continue
            if not os.path.exists(target):
                broken.append(f"{rel}:{line}: {attr}={value!r}: no such file")
                continue
            frag = urllib.parse.unquote(url.fragment)
            if frag:
                if target not in pages:
                    broken.append(f"{rel}:{line}: {attr}={value!r}: anchor in a non-HTML file")
                elif frag not in pages[target].ids:
                    broken.append(f"{rel}:{line}: {attr}={value!r}: no id {frag!r} in {os.path.relpath(target, root)}")
    broken += readme_links(os.path.dirname(os.path.dirname(root)))
    for b in broken:
        print(b)
    print(f"{len(pages)} pages, {checked} internal links, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
