#!/usr/bin/python3
"""Text tasks for the MiniLM foundation zoo, built deterministically from WordNet 3.0 (Debian wordnet-base).

Target: the supersense (lexicographer file, 26 noun classes) of a noun synset from its definition; OOD: the same
label from the synset's usage example (a sentence that uses the word) instead of its definition.
Auxiliary tasks: other labelings of the same resource (see TASKS below).

Splits, without leakage:
- every noun synset goes, by SHA-256 of its offset, to the held-out group (25 %) or the training pool (75 %);
  val (definitions) and ood_test (first usage example) come only from held-out synsets; probe_train and every
  auxiliary task that reads nouns come only from the training pool;
- verb, adjective and adverb synsets are never evaluated on, so the auxiliary tasks use them freely;
- a text equal (after lowercasing and collapsing spaces) to one in any training file is dropped from val and
  ood_test, and no file holds a text twice.
Rows are ordered by SHA-256 of (file, synset, text), so the first N rows of a file are a random subset of it.

Writes OUT/data/<name>.tsv.gz (columns text, label, synset; gzip with mtime 0, level 9) and OUT/tasks.json.
Run: /usr/bin/python3 scripts/foundation/wordnet_tasks.py [--wordnet /usr/share/wordnet] [--out models/foundation/minilm]
"""
import argparse
import collections
import gzip
import hashlib
import json
import os
import re
import sys

# WordNet's lexnames file (numbers 00-44), as documented in lexnames(5WN); Debian's wordnet-base does not ship it.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
NOUN_CLASSES = LEXNAMES[3:29]
VERB_CLASSES = LEXNAMES[29:44]

SIZES = {"probe_train": 10000, "val": 2000, "ood_test": 2000}
AUX_SIZE = 4000
HELD_OUT_PERCENT = 25

Synset = collections.namedtuple("Synset", "key pos lexfile ss_type words hypernyms definition examples")


def parse(path, pos):
    synsets = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue  # the licence header
            head, _, gloss = line.rstrip("\n").partition(" | ")
            fields = head.split()
            offset, lexfile, ss_type = fields[0], int(fields[1]), fields[2]
            w_cnt = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
            at = 4 + 2 * w_cnt
            p_cnt = int(fields[at])
            hypernyms = []
            for i in range(p_cnt):
                symbol, target, target_pos = fields[at + 1 + 4 * i: at + 4 + 4 * i]
                if symbol in ("@", "@i") and target_pos == pos:
                    hypernyms.append(f"{pos}.{target}")
            definition, examples = split_gloss(gloss)
            key = f"{pos}.{offset}"
            synsets[key] = Synset(key, pos, lexfile, ss_type, words, hypernyms, definition, examples)
    return synsets


def split_gloss(gloss):
    """'definition; "example one"; "example two"' -> ('definition', ['example one', 'example two'])."""
    gloss = gloss.strip()
    examples = [clean(e) for e in re.findall(r'"([^"]*)"', gloss)]
    first = gloss.find('"')
    definition = gloss if first < 0 else gloss[:first]
    definition = clean(definition.rstrip().rstrip(";:,").rstrip())
    return definition, [e for e in examples if len(e.split()) >= 3]


def clean(text):
    return " ".join(text.replace("\t", " ").split())


def norm(text):
    return " ".join(text.lower().split())


def sha(*parts):
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def held_out(synset_key):
    return int(sha("split", synset_key)[:8], 16) % 100 < HELD_OUT_PERCENT


def depths(nouns):
    """Shortest number of hypernym (and instance-hypernym) links from each noun synset to a root."""
    memo = {}

    def depth(key, trail):
        if key in memo:
            return memo[key]
        parents = [p for p in nouns[key].hypernyms if p in nouns and p not in trail]
        d = 0 if not parents else 1 + min(depth(p, trail | {key}) for p in parents)
        memo[key] = d
        return d

    sys.setrecursionlimit(10000)
    return {k: depth(k, frozenset()) for k in sorted(nouns)}


def quantile_edges(values, bins):
    ordered = sorted(values)
    return [ordered[len(ordered) * i // bins] for i in range(1, bins)]


def bin_of(value, edges):
    return sum(value >= e for e in edges)


def balanced(name, rows, classes, size):
    """Up to size rows with classes as equal as the data allows (round-robin over classes in hash order)."""
    by_class = collections.defaultdict(list)
    for row in ordered(name, rows):
        by_class[row[1]].append(row)
    picked, i = [], 0
    while len(picked) < size and any(i < len(by_class[c]) for c in range(classes)):
        for c in range(classes):
            if i < len(by_class[c]) and len(picked) < size:
                picked.append(by_class[c][i])
        i += 1
    return ordered(name, picked)


def ordered(name, rows):
    return sorted(rows, key=lambda r: sha(name, r[2], r[0]))


def unique(rows):
    seen, out = set(), []
    for row in rows:
        if norm(row[0]) not in seen:
            seen.add(norm(row[0]))
            out.append(row)
    return out


def build(wordnet):
    nouns = parse(os.path.join(wordnet, "data.noun"), "n")
    verbs = parse(os.path.join(wordnet, "data.verb"), "v")
    adjectives = parse(os.path.join(wordnet, "data.adj"), "a")
    adverbs = parse(os.path.join(wordnet, "data.adv"), "r")
    depth = depths(nouns)

    pool = [s for k, s in sorted(nouns.items()) if not held_out(k) and s.definition]
    held = [s for k, s in sorted(nouns.items()) if held_out(k)]
    length_edges = quantile_edges([len(s.definition.split()) for s in pool], 4)
    depth_edges = quantile_edges([depth[s.key] for s in pool], 4)

    def noun_label(s):
        return s.lexfile - 3

    tasks = collections.OrderedDict()
    # name -> (description, class names, rows as (text, label, synset))
    train = unique(ordered("probe_train", [(s.definition, noun_label(s), s.key) for s in pool]))[:SIZES["probe_train"]]
    tasks["probe_train"] = ("target training split: noun definition -> supersense (training-pool synsets)", NOUN_CLASSES, train)

    aux = collections.OrderedDict()
    aux["aux_verb_supersense"] = (
        "verb definition -> verb supersense (15 lexicographer files)", VERB_CLASSES,
        unique(ordered("aux_verb_supersense", [(s.definition, s.lexfile - 29, s.key) for k, s in sorted(verbs.items()) if s.definition]))[:AUX_SIZE])
    aux["aux_verb_example_supersense"] = (
        "verb usage example -> verb supersense (15 lexicographer files)", VERB_CLASSES,
        unique(ordered("aux_verb_example_supersense", [(s.examples[0], s.lexfile - 29, s.key) for k, s in sorted(verbs.items()) if s.examples]))[:AUX_SIZE])
    pos_rows = ([(s.definition, 0, s.key) for s in pool]
                + [(s.definition, 1, s.key) for k, s in sorted(verbs.items()) if s.definition]
                + [(s.definition, 2, s.key) for k, s in sorted(adjectives.items()) if s.definition]
                + [(s.definition, 3, s.key) for k, s in sorted(adverbs.items()) if s.definition])
    aux["aux_pos"] = ("definition -> part of speech (nouns from the training pool only)", ["noun", "verb", "adjective", "adverb"],
                      unique(balanced("aux_pos", unique(pos_rows), 4, AUX_SIZE)))

    def adjective_kind(s):
        return 2 if s.lexfile == 1 else 1 if s.ss_type == "s" else 0 if s.lexfile == 0 else None

    adj_rows = [(s.definition, adjective_kind(s), s.key) for k, s in sorted(adjectives.items()) if s.definition and adjective_kind(s) is not None]
    aux["aux_adjective_kind"] = ("adjective definition -> head adjective, satellite adjective or relational (pertainym, adj.pert)",
                                 ["head", "satellite", "relational"], unique(balanced("aux_adjective_kind", unique(adj_rows), 3, AUX_SIZE)))
    adv_adj_rows = ([(s.definition, 0, s.key) for k, s in sorted(adjectives.items()) if s.definition]
                    + [(s.definition, 1, s.key) for k, s in sorted(adverbs.items()) if s.definition])
    aux["aux_adverb_or_adjective"] = ("definition -> adjective or adverb", ["adjective", "adverb"],
                                      unique(balanced("aux_adverb_or_adjective", unique(adv_adj_rows), 2, AUX_SIZE)))
    aux["aux_gloss_length"] = (f"noun definition -> its length in words, quartile bins (edges {length_edges}; training-pool synsets)",
                               [f"words<{length_edges[0]}"] + [f"{a}<=words<{b}" for a, b in zip(length_edges, length_edges[1:])] + [f"words>={length_edges[-1]}"],
                               unique(balanced("aux_gloss_length", [(s.definition, bin_of(len(s.definition.split()), length_edges), s.key) for s in pool], 4, AUX_SIZE)))
    aux["aux_hypernym_depth"] = (f"noun definition -> shortest hypernym path to a root, quartile bins (edges {depth_edges}; training-pool synsets)",
                                 [f"depth<{depth_edges[0]}"] + [f"{a}<=depth<{b}" for a, b in zip(depth_edges, depth_edges[1:])] + [f"depth>={depth_edges[-1]}"],
                                 unique(balanced("aux_hypernym_depth", [(s.definition, bin_of(depth[s.key], depth_edges), s.key) for s in pool], 4, AUX_SIZE)))
    tasks.update(aux)

    seen = {norm(r[0]) for _, _, rows in tasks.values() for r in rows}
    val = [r for r in unique(ordered("val", [(s.definition, noun_label(s), s.key) for s in held if s.definition])) if norm(r[0]) not in seen]
    val = val[:SIZES["val"]]
    seen |= {norm(r[0]) for r in val}
    ood = [r for r in unique(ordered("ood_test", [(s.examples[0], noun_label(s), s.key) for s in held if s.examples])) if norm(r[0]) not in seen]
    ood = ood[:SIZES["ood_test"]]
    tasks["val"] = ("target validation split: noun definition -> supersense (held-out synsets)", NOUN_CLASSES, val)
    tasks["ood_test"] = ("target OOD test split: the first usage example of a held-out noun synset -> its supersense", NOUN_CLASSES, ood)
    return tasks, {"length_edges": length_edges, "depth_edges": depth_edges}


def write(out, tasks, extra):
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    manifest = collections.OrderedDict()
    manifest["source"] = "WordNet 3.0 (Debian wordnet-base): data.noun, data.verb, data.adj, data.adv; licence in LICENSE-WordNet.txt"
    manifest["generator"] = "scripts/foundation/wordnet_tasks.py"
    manifest["format"] = "data/<name>.tsv.gz: gzip of UTF-8 TSV with header text, label, synset (no quoting; label = class index; synset = pos.offset in WordNet 3.0)"
    manifest["split_rule"] = f"noun synsets with SHA-256('split' US pos.offset) % 100 < {HELD_OUT_PERCENT} are held out (val, ood_test); all others form the training pool"
    manifest["bins"] = extra
    files = collections.OrderedDict()
    for name, (description, classes, rows) in tasks.items():
        body = "text\tlabel\tsynset\n" + "".join(f"{t}\t{l}\t{k}\n" for t, l, k in rows)
        raw = body.encode("utf-8")
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        path = os.path.join(out, "data", f"{name}.tsv.gz")
        with open(path + ".tmp", "wb") as f:
            f.write(packed)
        os.replace(path + ".tmp", path)
        counts = collections.Counter(l for _, l, _ in rows)
        files[name] = collections.OrderedDict([
            ("file", f"data/{name}.tsv.gz"),
            ("description", description),
            ("rows", len(rows)),
            ("classes", classes),
            ("class_counts", [counts.get(c, 0) for c in range(len(classes))]),
            ("sha256_tsv", hashlib.sha256(raw).hexdigest()),
        ])
    manifest["tasks"] = files
    with open(os.path.join(out, "tasks.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(os.path.join(out, "tasks.json.tmp"), os.path.join(out, "tasks.json"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "models", "foundation", "minilm"))
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.wordnet, "data.noun")):
        sys.exit(f"error: {args.wordnet!r} holds no WordNet 3.0 data.noun (install Debian's wordnet-base)")
    tasks, extra = build(args.wordnet)
    write(args.out, tasks, extra)
    for name, (_, classes, rows) in tasks.items():
        print(f"{name}: {len(rows)} rows, {len(classes)} classes")


if __name__ == "__main__":
    main()
