#!/usr/bin/env python3
"""Makes the parity goldens of taxon's CLIP tokenizer and text tower by running upstream's own code (OpenAI's
`clip` package: clip/simple_tokenizer.py and clip/model.py, loaded by file path so torchvision is not needed) on
Debian's python3-torch. Development only; the C++ tests read the committed outputs and never need Python.

    scripts/text/setup-venv && build-text-venv/bin/python tests/data/text/make_goldens.py

Writes, next to this script:
  merges_padded.txt.gz    the merges of the real bpe_simple_vocab_16e6.txt.gz that fire on the golden strings, each
                          on its original line, every other line a filler pair that never fires ("Ā Ā": two NUL
                          bytes, which ftfy removes): token ids are CLIP's real ids, in a file of a few KB;
  merges_compact.txt.gz   the same merges without the filler: a 514 + n entry vocabulary for the tiny tower;
  tiny_text_tower.safetensors  a small CLIP text tower (upstream CLIP class, random weights, OpenAI key names,
                          plus logit_scale; no taxon metadata, like an open_clip state dict);
  goldens.json            strings, their ids under both files (context 77, with truncation), and the tower's
                          text features for the compact ids.
"""
import gzip
import importlib.util
import json
import os
import struct

import ftfy
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.find_spec("clip")
CLIP_DIR = os.path.dirname(spec.origin)


def load(name):
    s = importlib.util.spec_from_file_location("clip_" + name, os.path.join(CLIP_DIR, name + ".py"))
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m


simple_tokenizer = load("simple_tokenizer")
model = load("model")
REAL_VOCAB = os.path.join(CLIP_DIR, "bpe_simple_vocab_16e6.txt.gz")
CONTEXT = 77

STRINGS = [
    "Pseudanthias squamipinnis",
    "Aphaenogaster rudis",
    "a photo of Animalia Chordata Actinopterygii Perciformes Serranidae Pseudanthias squamipinnis.",
    "Érable",
    "E\u0301rable à sucre",          # decomposed: NFC makes it "Érable"
    "naïve café",
    "Ñandú común",
    "Salmo trutta fario",
    "it's a dog's life, they're 'quoted' and I'll go",
    "It\u2019s \u201ccurly\u201d",   # ftfy uncurls the quotes
    "Room 101: 3.14159 and 2024-11-08",
    "\u2153 \u00bd x\u00b2 \u0663",   # other numbers (\p{N}), one at a time
    "   leading\t\ttabs  and\u00a0nbsp   runs   ",
    "",
    "Fish &amp; chips &lt;3 &eacute;t&eacute; &#233;",
    "\uff26\uff49\uff53\uff48\u3000\ufb01n",  # fullwidth + ligature
    "\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u0399\u0391\u03a3",  # Greek upper case: final sigma
    "\u0130stanbul",
    "日本のメダカ 한국어",
    "bird 🐦 and fish 🐟",
    "x<|endoftext|> ?<|startoftext|>",
    "dogs''s",
    " ".join(["Danio rerio"] * 40),   # longer than 77 tokens: truncated, last id = end of text
]


def tokenize(tok, text):
    ids = [tok.encoder["<|startoftext|>"]] + tok.encode(text) + [tok.encoder["<|endoftext|>"]]
    if len(ids) > CONTEXT:  # open_clip tokenize() / clip.tokenize(truncate=True)
        ids = ids[:CONTEXT]
        ids[-1] = tok.encoder["<|endoftext|>"]
    return ids + [0] * (CONTEXT - len(ids))


def fired_merges(tok, texts):
    """Merge ranks used by upstream's bpe() on these texts."""
    used = set()
    orig_bpe = tok.bpe

    for text in texts:
        clean = simple_tokenizer.whitespace_clean(simple_tokenizer.basic_clean(text)).lower()
        for token in simple_tokenizer.re.findall(tok.pat, clean):
            token = "".join(tok.byte_encoder[b] for b in token.encode("utf-8"))
            if token in ("<|startoftext|>", "<|endoftext|>"):
                continue
            word = tuple(token[:-1]) + (token[-1] + "</w>",)
            while len(word) > 1:
                pairs = simple_tokenizer.get_pairs(word)
                bigram = min(pairs, key=lambda p: tok.bpe_ranks.get(p, float("inf")))
                if bigram not in tok.bpe_ranks:
                    break
                used.add(tok.bpe_ranks[bigram])
                first, second = bigram
                new, i = [], 0
                while i < len(word):
                    if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                        new.append(first + second)
                        i += 2
                    else:
                        new.append(word[i])
                        i += 1
                word = tuple(new)
            assert " ".join(word) == orig_bpe(token)
    return sorted(used)


def write_gz(path, lines):
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write("\n".join(lines).encode("utf-8"))


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().astype(np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    for s in STRINGS:  # taxon implements ftfy without fix_encoding: the goldens stay where both agree
        assert ftfy.fix_text(s) == ftfy.fix_text(s, fix_encoding=False), s
    real = simple_tokenizer.SimpleTokenizer(REAL_VOCAB)
    lines = gzip.open(REAL_VOCAB).read().decode("utf-8").split("\n")
    header, merges = lines[0], lines[1 : 49152 - 256 - 2 + 1]
    used = fired_merges(real, STRINGS)
    filler = "\u0100 \u0100"
    padded = [header] + [merges[r] if r in used else filler for r in range(len(merges))]
    compact = [header] + [merges[r] for r in used]
    padded_path = os.path.join(HERE, "merges_padded.txt.gz")
    compact_path = os.path.join(HERE, "merges_compact.txt.gz")
    write_gz(padded_path, padded)
    write_gz(compact_path, compact)
    tok_padded = simple_tokenizer.SimpleTokenizer(padded_path)
    tok_compact = simple_tokenizer.SimpleTokenizer(compact_path)
    ids_real = [tokenize(real, s) for s in STRINGS]
    ids_padded = [tokenize(tok_padded, s) for s in STRINGS]
    assert ids_real == ids_padded, "the padded file must give CLIP's real ids"
    ids_compact = [tokenize(tok_compact, s) for s in STRINGS]
    for a, b in zip(ids_real, ids_compact):  # same symbols, renumbered
        assert [real.decoder[i] for i in a if i] == [tok_compact.decoder[i] for i in b if i]

    # A tiny CLIP (upstream class) whose text tower has the compact vocabulary; only the text side is kept.
    torch.manual_seed(17)
    vocab = len(tok_compact.encoder)
    clip_model = model.CLIP(embed_dim=8, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=8,
                            context_length=CONTEXT, vocab_size=vocab, transformer_width=16, transformer_heads=2,
                            transformer_layers=2).float().eval()
    with torch.no_grad():  # move every weight off its init so each one matters
        for name, p in clip_model.named_parameters():
            if not name.startswith("visual."):
                p.add_(0.1 * torch.randn_like(p))
    text_keys = {k: v for k, v in clip_model.state_dict().items()
                 if not k.startswith("visual.") and k not in ("input_resolution", "context_length", "vocab_size")}
    save_safetensors(os.path.join(HERE, "tiny_text_tower.safetensors"), text_keys)
    with torch.no_grad():
        features = clip_model.encode_text(torch.tensor(ids_compact, dtype=torch.long))
    goldens = {
        "generator": "tests/data/text/make_goldens.py",
        "upstream": "openai-clip clip/simple_tokenizer.py + clip/model.py; ftfy %s; torch %s" % (ftfy.__version__, torch.__version__),
        "context_length": CONTEXT,
        "tower": {"width": 16, "heads": 2, "layers": 2, "output_dim": 8, "vocab_size": vocab},
        "logit_scale": float(clip_model.logit_scale.item()),
        "cases": [
            {"text": s, "ids_real": a, "ids_compact": b, "features": [float(x) for x in f]}
            for s, a, b, f in zip(STRINGS, ids_real, ids_compact, features)
        ],
    }
    with open(os.path.join(HERE, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, indent=1)
    for name in ("merges_padded.txt.gz", "merges_compact.txt.gz", "tiny_text_tower.safetensors", "goldens.json"):
        print(name, os.path.getsize(os.path.join(HERE, name)), "bytes")


if __name__ == "__main__":
    main()
