"""Writes Recycling.Training/Text/accents.txt: for every character whose canonical decomposition (NFD) differs from
itself, the decomposition with the non-spacing marks (category Mn) removed, as uncased BERT tokenisation strips
accents. The toolkit runs with InvariantGlobalization (no ICU), where string.Normalize leaves non-ASCII text as it is,
so the table replaces it. Hangul syllables are decomposed by formula in the code and are not listed.
Format: one line per character, hexadecimal code points: "00E9 0065" (é -> e); nothing after the first: stripped to
nothing. Run: /usr/bin/python3 scripts/training/make_accent_table.py"""
import os, sys, unicodedata

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Recycling.Training", "Text", "accents.txt")
lines = [f"# made by scripts/training/make_accent_table.py from Unicode {unicodedata.unidata_version} (Python {sys.version.split()[0]})"]
for cp in range(sys.maxunicode + 1):
    if 0xAC00 <= cp <= 0xD7A3 or 0xD800 <= cp <= 0xDFFF:
        continue
    ch = chr(cp)
    nfd = unicodedata.normalize("NFD", ch)
    if nfd == ch:
        continue
    kept = [c for c in nfd if unicodedata.category(c) != "Mn"]
    lines.append(" ".join([f"{cp:04X}"] + [f"{ord(c):04X}" for c in kept]))
with open(OUT, "w", encoding="ascii", newline="\n") as f:
    f.write("\n".join(lines) + "\n")
print(len(lines) - 1, "characters")
