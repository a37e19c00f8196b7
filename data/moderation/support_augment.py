#!/usr/bin/env python3
"""Synthetic support-style moderation examples, for TRAINING only.

Writes CSV `text,offensive,hate,lang`:

* offensive=1, hate=0: a customer-support request combined with an insult,
  slur-free abuse or profanity aimed at the agent (or at staff), in English
  (`en`) and Chinese (`zh`); the insult sits at the start, in the middle or
  at the end, is sometimes a whole sentence, and is sometimes obfuscated
  (id1ot, f*ck, s h i t, 傻X, sb).
* offensive=0, hate=0: plain support requests, and requests carrying strong
  but non-abusive negativity ("This is completely unacceptable.") or
  violent/profane-looking words that abuse nobody ("please kill my
  newsletter subscription", "damn, this is annoying").

No row is hateful (identity-based): `hate` is always 0, so these rows teach
"insult is offensive, not hate"; the hate signal comes from Davidson et al.

Standard library only and deterministic: the output depends only on this
file and --seed (default 20240601), never on the clock or environment.

    python3 data/moderation/support_augment.py > /tmp/support_augment.csv
    python3 data/moderation/support_augment.py /tmp/support_augment.csv \
        --check-eval data/moderation/insult_in_request_eval.csv

The template pools below are written independently of
insult_in_request_eval.csv (an evaluation set that must never be trained
on); --check-eval counts generated rows equal (case-insensitively) to an
eval row and pool phrases that occur verbatim inside an eval row.
"""
import argparse
import csv
import random
import re
import sys

PER_CLASS_PER_LANG = 2500  # 5,000 offensive + 5,000 clean rows in all
SEED_DEFAULT = 20240601

# ----------------------------------------------------------------- English
EN_ITEMS = [
    "rain jacket", "hiking boots", "sleeping bag", "water bottle", "backpack",
    "wool socks", "camping stove", "trail shoes", "fleece", "headlamp",
    "duvet cover", "desk lamp", "thermos", "tent", "down vest", "yoga mat",
]

EN_REQUESTS = [
    "can you tell me when order {order} will ship",
    "I need to swap the {item} for a different size",
    "please send me a new return label for the {item}",
    "how do I update the phone number on my account",
    "my promo code keeps getting rejected at checkout",
    "the {item} I received is the wrong colour",
    "is it possible to move the delivery slot to the weekend",
    "I'd like a copy of the receipt for order {order}",
    "when will the refund for the {item} reach my card",
    "could you check whether the {item} is back in stock",
    "I was billed twice for order {order}",
    "please cancel order {order} before it leaves the warehouse",
    "how long does a standard exchange take",
    "the tracking for {order} hasn't updated in four days",
    "can I collect my order from the shop instead",
    "I never got the confirmation email for {order}",
    "my gift card balance shows zero but I haven't spent it",
    "please remove the old address from my profile",
    "what is the warranty on the {item}",
    "I want to send back the {item}, it doesn't fit",
    "can you resend the verification code",
    "the {item} arrived without its carry bag",
    "do you deliver to Canada",
    "I need to add one more item to order {order}",
    "please take me off the newsletter list",
    "which courier is handling {order}",
    "my account got locked after too many login attempts",
    "can I have store credit instead of a refund for the {item}",
    "the payment page refuses my debit card",
    "how do I use a gift card on order {order}",
    "is there a measurement guide for the {item}",
    "the parcel for {order} is marked delivered but it isn't here",
    "could you ship order {order} in two parts",
    "I'd like the invoice made out to my company",
    "why did my loyalty points drop to zero",
    "please confirm the {item} I posted back has arrived",
    "can I trade the {item} for a different model",
    "when does the price adjustment policy apply",
    "the app shows an empty basket after I sign in",
    "I need a VAT invoice for order {order}",
    "how do I report a faulty {item}",
    "the {item} was supposed to include a spare part",
    "please hold order {order} until Monday",
    "can the driver leave {order} with my neighbour",
    "what time does the live chat close on Sundays",
    "my order {order} shows the wrong postcode",
]

# Vocative insults aimed at the agent (used as "..., <insult>" etc.).
EN_INSULTS = [
    "you dimwitted bot", "you thick-headed clerk", "you useless lump",
    "you brain-dead parrot", "you worthless hack", "you dumb tin can",
    "you pea-brained idiot", "you lazy slob", "you idiotic machine",
    "you moronic excuse for an assistant", "you stupid little program",
    "you pathetic excuse for customer care", "you total nitwit",
    "you sorry sack of crap", "you incompetent buffoon", "you miserable jerk",
    "you empty-headed drone", "you bumbling fool", "you useless twat",
    "you knuckle-dragging moron", "you absolute tosser", "you witless clod",
    "you clueless numpty", "you bloody idiot", "you piece of crap bot",
    "you lying weasel", "you utter dunce", "you stupid git",
    "you brainless ape", "you worthless scumbag", "you goddamn idiot",
    "you bonehead", "you dumb motherfucker", "you fat-headed oaf",
    "you insufferable prat", "you shitty bot", "you fucking imbecile",
    "you dopey arsehole", "you stupid bitch", "you dense bastard",
]

# Whole-sentence insults (aimed at the agent or at staff).
EN_INSULT_SENTENCES = [
    "You might be the most brainless program ever written.",
    "What a useless pile of garbage you are.",
    "Honestly, you people are morons.",
    "Are you brain damaged or what?",
    "You're a waste of oxygen.",
    "God, you're such an idiot.",
    "You clearly have the IQ of a doorknob.",
    "Your staff are clueless idiots.",
    "Fuck this shop and fuck you.",
    "Shut your stupid mouth and listen.",
    "You're as useful as a chocolate teapot, moron.",
    "Whoever trained you was a complete idiot.",
    "Your manager must be a total dumbass.",
    "Every agent here is a brainless clown.",
    "You're a joke of a bot, a fucking joke.",
    "You're thicker than a brick.",
    "Your packing team are careless halfwits.",
    "What are you, stupid?",
    "I've met smarter houseplants than you.",
    "Piss off with your scripted nonsense.",
    "You absolute bellend.",
    "Go screw yourself.",
    "The driver you sent is a total moron.",
    "You're a shit assistant and you know it.",
    "Christ, what a dumb bot.",
    "Your so-called experts are idiots.",
    "You make me sick, you stupid thing.",
    "Damn you and your useless answers.",
    "Nobody in your company has a brain.",
    "You're dumber than a bag of rocks.",
]

# Verb phrases a request can be built from after an inline insult ("can you
# clowns check where order NW-123456 is").
EN_ASKS = [
    "check where order {order} is", "send me a new return label",
    "refund the {item}", "fix my account", "cancel order {order}",
    "read my last message", "tell me when the {item} ships",
    "change the delivery address", "reset my password",
    "explain this charge on my card", "find my parcel",
    "swap the {item} for a bigger size", "give me a straight answer",
    "put me through to a manager", "process my return",
    "get the invoice for {order} right", "stop charging my card twice",
    "answer a simple question about the {item}",
]

# Plural and singular insult nouns for people, used inline and about staff.
EN_PEOPLE_INSULTS = [
    "idiots", "morons", "clowns", "halfwits", "numpties", "muppets",
    "dimwits", "fools", "jokers", "dunces", "nitwits", "bozos",
    "dipshits", "jackasses", "imbeciles", "knobheads", "cretins", "buffoons",
]
EN_PERSON_INSULTS = [
    "idiot", "moron", "clown", "halfwit", "numpty", "muppet", "dimwit",
    "fool", "dunce", "nitwit", "bozo", "dipshit", "jackass", "imbecile",
    "knobhead", "buffoon", "useless prat", "total tool", "lazy git",
    "brainless twit", "complete waste of space", "arrogant prick",
]

# Staff a customer insults in the third person.
EN_STAFF = [
    "the driver", "your courier", "the agent I spoke to yesterday",
    "whoever packed my box", "your warehouse guy", "the woman on the phone",
    "the chat guy", "your manager", "whoever wrote this app",
    "the delivery man", "your returns clerk", "the last rep",
]

# Rhetorical or sarcastic insults with no swear word in them.
EN_RHETORICAL = [
    "Does anyone over there know how to read?",
    "Were you hired off the street this morning?",
    "How can one bot be this thick?",
    "Is there a single working brain cell in your company?",
    "Do you understand a single word I type?",
    "Do they teach you to be this useless?",
    "Congratulations, genius, you got it wrong again.",
    "Even a goldfish would remember what I just said.",
    "Are you dense on purpose?",
    "Who taught you to think, a brick?",
    "I'd get more sense out of a parking meter.",
    "Wow, you really are as clueless as you sound.",
    "Is your head just for decoration?",
    "Did your staff fail primary school?",
    "You people couldn't organise a queue.",
    "Must be hard being that slow.",
]

# Harsh or profane words about a product, a delivery or the customer's own
# mistake: no person is abused. The labelled tweets count such profanity as
# offensive; in a support chat it is a complaint.
EN_PRODUCT_PROFANITY = [
    "honestly the {item} is crap", "the {item} is shit, it broke in a week",
    "the {item} is shitty quality", "the damn {item} leaked again",
    "the {item} is a piece of junk", "this {item} is absolute garbage",
    "the stupid {item} won't stay shut", "I hate the colour of this {item}",
    "the {item} is trash quality", "fucking hell, the {item} fell apart",
    "this {item} is a bloody joke", "what a crappy zip on the {item}",
    "the {item} smells like crap", "my {item} is shit now, the seam split",
    "the delivery was a shitshow", "what a nightmare of a week with this parcel",
    "the whole order is a joke", "the sizing chart is garbage",
    "idiot that I am, I typed my own email wrong", "stupid me, I picked the wrong {item}",
    "this damn website logged me out again", "the {item} is a pain in the arse to fold",
    "the tracking page is useless", "the box came smashed to hell",
    "goddamn, the {item} is heavy", "the {item} sucks in the rain",
]

EN_OPENERS = ["hi", "hello", "hey", "ok", "look", "listen", "right", "so", "excuse me", "oi"]

# Strong but not abusive: complaints about the product, the delivery or the
# process, and profane/violent-looking words aimed at nobody.
EN_NEGATIVE_CLEAN = [
    "This is completely unacceptable.",
    "I'm extremely disappointed.",
    "I am livid about this.",
    "Honestly this has been a terrible experience.",
    "The quality is dreadful.",
    "What an absolute mess.",
    "This is the last time I order from you.",
    "I've had it with these delays.",
    "This is beyond frustrating.",
    "I'm seriously annoyed.",
    "Your shipping times are awful.",
    "This is a total shambles.",
    "The packaging was a wreck.",
    "Frankly the product is rubbish.",
    "I'm really upset about this.",
    "This whole thing is a fiasco.",
    "I'm so angry right now.",
    "It fell apart in two days, pathetic quality.",
    "The website is painfully slow.",
    "What a waste of money.",
    "I'm losing my temper here.",
    "This is driving me crazy.",
    "The box looked like it had been through a war.",
    "Seriously, this is shoddy work.",
    "I'm fuming.",
    "The colours are hideous in person.",
    "Damn, this is annoying.",
    "Hell, I've waited long enough.",
    "This crappy zip keeps sticking.",
    "The thing is a dud.",
    "Your returns process is a mess.",
    "I'm at the end of my rope.",
    "Not impressed at all.",
    "This is a bloody disaster.",
    "The battery is completely dead again.",
    "The screen was smashed in transit.",
    "I'm dying to know when it will arrive.",
    "These endless delays are killing me.",
    "Total garbage, the stitching came undone.",
    "I'm disgusted by the state it arrived in.",
]

# Clean requests whose wording looks violent or profane.
EN_LOOKALIKE_CLEAN = [
    "please kill my newsletter subscription",
    "terminate my membership at the end of the month",
    "wipe out all my saved addresses",
    "execute the exchange for the {item} please",
    "can you blast the old card off my account",
    "this {item} is killer, do you have a spare in stock",
    "punch in the new delivery address for order {order}",
    "I filmed the fault on the {item}, where should I send the clip",
    "hit me up by email once the {item} ships",
    "the sale price on the {item} is insane, is it still on",
    "drop me a message when order {order} is out for delivery",
    "the {item} is a beast, can I buy a second one",
    "please shoot the invoice for {order} to my email",
    "can you murder the duplicate order {order}, I only want one",
    "I'm such a klutz, I snapped the strap on the {item}",
    "silly me, I typed the wrong postcode on {order}",
    "damn good {item}, can I order another in navy",
    "my dumb phone autocorrected the address, can you fix it",
    "the {item} died after a month, is it covered",
    "bin the gift wrap on order {order}, it's for me",
]

# ----------------------------------------------------------------- Chinese
ZH_ITEMS = [
    "冲锋衣", "登山鞋", "睡袋", "水杯", "双肩包", "羊毛袜", "露营炉", "越野跑鞋",
    "抓绒衣", "头灯", "被套", "台灯", "保温壶", "帐篷", "羽绒马甲", "瑜伽垫",
]

ZH_REQUESTS = [
    "订单{order}什么时候发货",
    "我想把{item}换成大一号的",
    "麻烦帮我重新寄一张退货单",
    "怎么修改账户绑定的手机号",
    "优惠码在结算页面一直提示无效",
    "收到的{item}颜色不对",
    "能不能把配送时间改到周末",
    "请给我开一张订单{order}的发票",
    "{item}的退款什么时候到账",
    "帮我查一下{item}有没有补货",
    "订单{order}被重复扣款了",
    "请在发货前取消订单{order}",
    "换货一般要多久",
    "订单{order}的物流四天没更新了",
    "我可以到门店自提吗",
    "下单后一直没收到确认邮件",
    "礼品卡余额显示为零",
    "请删除我资料里的旧地址",
    "{item}的保修期是多久",
    "{item}尺码不合适，我想退",
    "验证码收不到，能再发一次吗",
    "{item}少了一根带子",
    "你们能寄到香港吗",
    "我想往订单{order}里加一件商品",
    "请帮我退订促销短信",
    "订单{order}是哪家快递送的",
    "登录失败次数太多，账号被锁了",
    "{item}能换成店铺余额吗",
    "结算时银行卡一直支付失败",
    "礼品卡怎么用在订单{order}上",
    "{item}有尺码表吗",
    "订单{order}显示已签收，但我没收到",
    "订单{order}能分两次发货吗",
    "发票抬头要改成公司名称",
    "我的积分怎么清零了",
    "寄回去的{item}你们收到了吗",
    "{item}能换别的型号吗",
    "保价政策怎么申请",
    "登录后购物车是空的",
    "我需要带税号的增值税发票",
    "{item}出了故障怎么报修",
    "{item}应该配一个备用零件的",
    "订单{order}先别发，等到周一",
    "能让快递把订单{order}放在邻居家吗",
    "在线客服周日几点下班",
    "订单{order}的邮编填错了",
]

ZH_INSULTS = [
    "你这个没脑子的客服", "你个蠢驴", "你这个榆木脑袋", "一群傻帽", "你这脑瘫",
    "你这个憨批", "你个大傻叉", "你个瘪三", "你这个窝囊废", "你个猪头",
    "笨得要死的机器人", "你这个混账东西", "你这个死脑筋的木头", "你个弱鸡",
    "你这个吃白饭的", "你这蠢材", "你个傻帽", "神经病客服", "你这个贱骨头",
    "你个狗腿子", "你个low逼", "妈的智障", "你这个脑子长草的", "你个二货",
    "你这个不要脸的东西", "你个龟孙", "你这个傻不拉几的机器人", "你这个呆瓜",
    "你这个缺心眼的", "你个蠢材客服", "你这个草包", "你个臭傻逼", "你个狗日的",
    "你这个猪队友",
]

ZH_INSULT_SENTENCES = [
    "你脑袋里装的是浆糊吧？",
    "真是个废物机器人。",
    "你们客服全是吃干饭的。",
    "跟你说话真是对牛弹琴，蠢死了。",
    "你妈没教你怎么好好说话吗？",
    "你们公司全是一群蠢驴。",
    "我看你就是个智商欠费的。",
    "你们仓库那帮人都是饭桶吧。",
    "快递员是个瞎眼的蠢货。",
    "你脑子是摆设吗？",
    "你是猪吗？",
    "你们主管就是个傻叉。",
    "蠢成这样也是少见。",
    "你个傻逼听不懂人话？",
    "去死吧你这破客服。",
    "你这智商也配当客服？",
    "真他妈的蠢。",
    "你们这帮废物能干点啥？",
    "跟你这种蠢货说不清。",
    "滚一边去，换个有脑子的来。",
    "你们老板是脑瘫吧。",
    "你是不是傻到家了？",
    "你这种垃圾机器人早该下岗了。",
    "你们售后全是猪脑袋。",
    "你丫的装什么傻？",
    "我真是服了你这个白痴。",
    "你们这群骗钱的混蛋。",
    "傻了吧唧的，回答的什么玩意。",
    "你妈的，能不能长点脑子。",
    "真想骂死你这个笨蛋。",
]

# Insults about staff in the third person, inline insults and rhetorical
# insults without a swear word.
ZH_STAFF_INSULTS = [
    "那个快递员就是个饭桶", "你们仓库的人是不是都没长眼", "刚才那个客服蠢得要命",
    "你们老板脑子进水了吧", "打包的那个人是个二百五", "你们程序员都是废物",
    "送货的那哥们是个傻缺", "你们售后那帮人全是混子",
]
ZH_RHETORICAL = [
    "你们是招了一群猴子来上班吗？", "你是听不懂中文还是怎么着？", "这么简单都不会，你是幼儿园毕业的吧？",
    "你们公司还有正常人吗？", "客服是AI还是人工智障？", "跟你说话比跟墙说话还累。",
    "你的脑子是拿来凑数的吧？", "就这水平也好意思出来干客服？",
]
ZH_ASKS = [
    "查一下订单{order}", "把退款打给我", "帮我改一下收货地址", "把{item}换成大一号的",
    "给我寄张退货单", "把重复扣的钱退回来", "告诉我{item}什么时候发货", "让人工来接",
    "好好看看我的留言", "把发票开对",
]
ZH_INLINE = [
    "你们这帮饭桶能不能{req}", "你个蠢货到底能不能{req}", "你们这群废物赶紧{req}",
    "我说你这傻子能不能{req}",
]
# Harsh words about goods and delivery, or the customer's own mistake:
# nobody is abused.
ZH_PRODUCT_PROFANITY = [
    "这破{item}真垃圾", "什么鬼质量，{item}才用两天就坏了", "{item}烂透了",
    "气死我了，快递又丢了", "这{item}简直是坑爹", "垃圾质量，{item}开胶了",
    "这破网站又卡死了", "我真是个傻子，下错尺码了", "这{item}丑爆了",
    "物流慢得要死", "这破玩意儿根本不防水", "{item}味道臭死了",
]

ZH_OPENERS = ["喂", "你好", "我说", "听着", "客服", "在吗", "哎", "那个"]

ZH_NEGATIVE_CLEAN = [
    "真是太让人失望了。", "我非常不满意。", "体验极差。", "我已经等得不耐烦了。",
    "质量也太次了。", "这个做工真烂。", "简直糟糕透顶。", "气得我一晚上没睡好。",
    "我对这次购物很失望。", "这速度慢得跟蜗牛一样。", "再也不想在这里买了。",
    "真是一肚子火。", "包装烂得不成样子。", "我真的要崩溃了。", "这种服务太让人寒心了。",
    "物流简直是灾难。", "这东西根本不好用。", "实在是受不了了。", "你们的退货流程太麻烦了。",
    "做工粗糙得吓人。", "这颜色丑死了。", "穿了一次就开线，太坑了。", "真是活见鬼。",
    "我整个人都不好了。", "这价格贵得过分。", "电池跟死了一样，完全充不进电。",
    "屏幕摔得稀碎。", "我急得要命。", "说真的，这次太差劲了。", "烦透了。",
    "要被你们的系统搞疯了。", "这破拉链老是卡住。", "快递员态度很差。",
    "等了半个月，心态都崩了。",
]

ZH_LOOKALIKE_CLEAN = [
    "把那个重复的订单{order}砍掉吧",
    "这款{item}好看得吓死人，还有货吗",
    "这价格杀疯了，帮我再下一单{item}",
    "求你们赶紧把我的会员停掉",
    "帮我把旧地址删干净",
    "这款{item}简直绝杀，有大码吗",
    "把自动扣费给我掐掉",
    "我笨手笨脚把{item}的带子扯断了，能修吗",
    "我傻了，邮编填错了，订单{order}能改吗",
    "{item}用了一个月就挂了，保修吗",
    "这{item}真是神器，能再买一个吗",
    "手机输入法抽风，把地址打错了，帮我改一下",
    "{item}死活打不开，怎么办",
    "帮我把订单{order}的礼品包装去掉",
    "这{item}好看到爆，有别的颜色吗",
    "订单{order}发货了麻烦吼我一声",
    "把我的账号彻底干净地注销掉",
    "{item}被我摔坏了，可以付费维修吗",
]

# --------------------------------------------------------------- helpers
EN_BAD_WORDS = [
    "motherfucker", "fucking", "fuck", "shitty", "shit", "idiot", "idiotic",
    "moron", "moronic", "stupid", "dumbass", "dumb", "twat", "arsehole",
    "bastard", "bitch", "scumbag", "crap", "imbecile", "tosser", "bellend",
    "dunce",
]
LEET = str.maketrans({"i": "1", "o": "0", "e": "3", "a": "@", "s": "$"})


def obfuscate_en(text, rng):
    """Disguise one bad word, as people do to slip past filters."""
    words = text.split(" ")
    spots = [i for i, w in enumerate(words)
             if any(w.lower().strip(".,?!").startswith(b) for b in EN_BAD_WORDS)]
    if not spots:
        return text
    i = rng.choice(spots)
    w = words[i]
    core = w.rstrip(".,?!")
    tail = w[len(core):]
    how = rng.randrange(5)
    if how == 0:  # leetspeak
        new = core.translate(LEET)
    elif how == 1:  # vowels starred
        new = core[0] + "".join("*" if c in "aeiou" else c for c in core[1:])
    elif how == 2:  # spaced letters
        new = " ".join(core)
    elif how == 3:  # dotted letters
        new = ".".join(core)
    else:  # stretched
        new = core[:2] + core[1] * 2 + core[2:]
    words[i] = new + tail
    return " ".join(words)


ZH_SWAPS = [
    ("傻逼", "傻B"), ("傻逼", "sb"), ("傻逼", "煞笔"), ("傻叉", "傻X"),
    ("智障", "zz"), ("脑瘫", "nt"), ("他妈的", "tmd"), ("妈的", "md"),
    ("蠢驴", "蠢*驴"), ("蠢货", "蠢 货"), ("白痴", "白吃"), ("废物", "废*物"),
    ("二货", "2货"), ("憨批", "憨P"), ("狗日的", "狗ri的"), ("笨蛋", "笨 蛋"),
    ("猪头", "zhu头"), ("low逼", "low b"), ("脑子", "脑纸"),
]


def obfuscate_zh(text, rng):
    options = [(a, b) for a, b in ZH_SWAPS if a in text]
    if not options:
        return text
    a, b = rng.choice(options)
    return text.replace(a, b, 1)


def fill(tpl, rng, items):
    return tpl.format(order="NW-%06d" % rng.randrange(100000, 1000000), item=rng.choice(items))


def capital(s):
    """`s` with its first letter upper-cased, the rest as written."""
    return s[0].upper() + s[1:]


def en_case(s, rng):
    r = rng.random()
    if r < 0.35:
        return capital(s)
    if r < 0.85:
        return s.lower()
    if r < 0.93:
        return s.upper()
    return s


def en_end(s, rng):
    s = s.rstrip()
    if s.endswith(("?", ".", "!")):
        return s
    return s + rng.choice(["?", ".", "!", "", "??", "!!", "."])


def en_positive(rng):
    req = fill(rng.choice(EN_REQUESTS), rng, EN_ITEMS)
    ins = rng.choice(EN_INSULTS)
    form = rng.randrange(11)
    if form == 0:  # insult first
        s = f"{ins}, {req}"
    elif form == 1:  # insult last
        s = f"{req}, {ins}"
    elif form == 2:  # insult in the middle, after an opener
        s = f"{rng.choice(EN_OPENERS)} {ins}, {req}"
    elif form == 3:  # request, then an insulting sentence
        s = f"{en_end(req, rng)} {rng.choice(EN_INSULT_SENTENCES)}"
    elif form == 4:  # insulting sentence, then the request
        s = f"{rng.choice(EN_INSULT_SENTENCES)} {req}"
    elif form == 5:  # insult between two requests
        req2 = fill(rng.choice(EN_REQUESTS), rng, EN_ITEMS)
        s = f"{en_end(req, rng)} {capital(ins)}. {req2}"
    elif form == 6:  # insult as a question tag
        s = f"{req}, can't you manage that, {ins.split(' ', 1)[1]}"
    elif form == 7:  # inside the sentence, no comma to split at
        ask = fill(rng.choice(EN_ASKS), rng, EN_ITEMS)
        lead = rng.choice(["can you", "why can't you", "will you", "could you", "when will you"])
        s = f"{lead} {rng.choice(EN_PEOPLE_INSULTS)} {ask}"
    elif form == 8:  # about staff, in the third person
        staff = rng.choice(EN_STAFF)
        who = rng.choice(EN_PERSON_INSULTS)
        art = "an" if who[0] in "aeiou" else "a"
        if rng.random() < 0.5:
            s = f"{staff} is {art} {who}, {req}"
        else:
            s = f"{en_end(req, rng)} {capital(staff)} is {art} {who}."
    elif form == 9:  # a rhetorical insult, no swear word
        if rng.random() < 0.5:
            s = f"{en_end(req, rng)} {rng.choice(EN_RHETORICAL)}"
        else:
            s = f"{rng.choice(EN_RHETORICAL)} {req}"
    else:  # a bare insult noun as the vocative
        who = rng.choice(EN_PERSON_INSULTS)
        s = f"{rng.choice(EN_OPENERS)} {who}, {req}" if rng.random() < 0.5 else f"{req}, {who}"
    if rng.random() < 0.3:
        s = obfuscate_en(s, rng)
    return en_end(en_case(s, rng), rng)


def en_negative(rng):
    form = rng.randrange(7)
    if form == 0:
        s = fill(rng.choice(EN_REQUESTS), rng, EN_ITEMS)
    elif form == 1:
        s = f"{rng.choice(EN_NEGATIVE_CLEAN)} {fill(rng.choice(EN_REQUESTS), rng, EN_ITEMS)}"
    elif form == 2:
        s = f"{en_end(fill(rng.choice(EN_REQUESTS), rng, EN_ITEMS), rng)} {rng.choice(EN_NEGATIVE_CLEAN)}"
    elif form == 3:
        s = fill(rng.choice(EN_LOOKALIKE_CLEAN), rng, EN_ITEMS)
    elif form == 4:
        s = f"{rng.choice(EN_NEGATIVE_CLEAN)} {fill(rng.choice(EN_LOOKALIKE_CLEAN), rng, EN_ITEMS)}"
    else:  # profanity about the goods or the delivery, with a request
        prof = fill(rng.choice(EN_PRODUCT_PROFANITY), rng, EN_ITEMS)
        req = fill(rng.choice(EN_REQUESTS), rng, EN_ITEMS)
        s = f"{prof}, {req}" if form == 5 else f"{en_end(req, rng)} {en_end(capital(prof), rng)}"
    return en_end(en_case(s, rng), rng)


def zh_end(s, rng):
    if s.endswith(("？", "。", "！")):
        return s
    return s + rng.choice(["？", "。", "！", "", "？？", "！！"])


def zh_positive(rng):
    req = fill(rng.choice(ZH_REQUESTS), rng, ZH_ITEMS)
    ins = rng.choice(ZH_INSULTS)
    form = rng.randrange(9)
    if form == 0:
        s = f"{ins}，{req}"
    elif form == 1:
        s = f"{req}，{ins}"
    elif form == 2:
        s = f"{rng.choice(ZH_OPENERS)}，{ins}，{req}"
    elif form == 3:
        s = f"{zh_end(req, rng)}{rng.choice(ZH_INSULT_SENTENCES)}"
    elif form == 4:
        s = f"{rng.choice(ZH_INSULT_SENTENCES)}{req}"
    elif form == 5:
        req2 = fill(rng.choice(ZH_REQUESTS), rng, ZH_ITEMS)
        s = f"{req}，{ins}，还有{req2}"
    elif form == 6:  # about staff, in the third person
        st = rng.choice(ZH_STAFF_INSULTS)
        s = f"{st}，{req}" if rng.random() < 0.5 else f"{zh_end(req, rng)}{st}。"
    elif form == 7:  # a rhetorical insult, no swear word
        r = rng.choice(ZH_RHETORICAL)
        s = f"{zh_end(req, rng)}{r}" if rng.random() < 0.5 else f"{r}{req}"
    else:  # inside the sentence
        ask = fill(rng.choice(ZH_ASKS), rng, ZH_ITEMS)
        s = rng.choice(ZH_INLINE).format(req=ask)
    if rng.random() < 0.3:
        s = obfuscate_zh(s, rng)
    return zh_end(s, rng)


def zh_negative(rng):
    form = rng.randrange(7)
    if form == 0:
        s = fill(rng.choice(ZH_REQUESTS), rng, ZH_ITEMS)
    elif form == 1:
        s = f"{rng.choice(ZH_NEGATIVE_CLEAN)}{fill(rng.choice(ZH_REQUESTS), rng, ZH_ITEMS)}"
    elif form == 2:
        s = f"{zh_end(fill(rng.choice(ZH_REQUESTS), rng, ZH_ITEMS), rng)}{rng.choice(ZH_NEGATIVE_CLEAN)}"
    elif form == 3:
        s = fill(rng.choice(ZH_LOOKALIKE_CLEAN), rng, ZH_ITEMS)
    elif form == 4:
        s = f"{rng.choice(ZH_NEGATIVE_CLEAN)}{fill(rng.choice(ZH_LOOKALIKE_CLEAN), rng, ZH_ITEMS)}"
    else:  # harsh words about the goods or the delivery, with a request
        prof = fill(rng.choice(ZH_PRODUCT_PROFANITY), rng, ZH_ITEMS)
        req = fill(rng.choice(ZH_REQUESTS), rng, ZH_ITEMS)
        s = f"{prof}，{req}" if form == 5 else f"{zh_end(req, rng)}{prof}"
    return zh_end(s, rng)


def generate(seed, n=PER_CLASS_PER_LANG):
    rows = []
    seen = set()
    for lang, make, offensive in (
        ("en", en_positive, 1), ("en", en_negative, 0),
        ("zh", zh_positive, 1), ("zh", zh_negative, 0),
    ):
        rng = random.Random(f"{seed}-{lang}-{offensive}")
        got = 0
        while got < n:
            t = make(rng)
            k = t.casefold()
            if k in seen:
                continue
            seen.add(k)
            rows.append((t, offensive, 0, lang))
            got += 1
    return rows


def pool_phrases():
    """Every fixed phrase of the pools, placeholders cut out."""
    out = []
    for pool in (EN_REQUESTS, EN_INSULTS, EN_INSULT_SENTENCES, EN_NEGATIVE_CLEAN, EN_LOOKALIKE_CLEAN,
                 EN_ASKS, EN_PEOPLE_INSULTS, EN_PERSON_INSULTS, EN_STAFF, EN_RHETORICAL,
                 EN_PRODUCT_PROFANITY,
                 ZH_REQUESTS, ZH_INSULTS, ZH_INSULT_SENTENCES, ZH_NEGATIVE_CLEAN, ZH_LOOKALIKE_CLEAN,
                 ZH_STAFF_INSULTS, ZH_RHETORICAL, ZH_INLINE, ZH_ASKS, ZH_PRODUCT_PROFANITY):
        for p in pool:
            for part in re.split(r"\{\w+\}", p):
                part = part.strip(" ,.?!，。？！").casefold()
                if part:
                    out.append(part)
    return out


def check_eval(rows, path):
    with open(path, encoding="utf-8", newline="") as f:
        ev = [r["text"] for r in csv.DictReader(f)]
    evk = {t.strip().casefold() for t in ev}
    same = sum(1 for r in rows if r[0].strip().casefold() in evk)
    # A pool phrase counts as shared if it is long enough to be a sentence
    # fragment (>= 4 words in English, >= 6 characters in Chinese) and occurs
    # verbatim in an eval text.
    shared = []
    for p in pool_phrases():
        long_enough = len(p.split()) >= 4 if p.isascii() else len(p) >= 6
        if long_enough and any(p in t.casefold() for t in ev):
            shared.append(p)
    print(f"eval rows: {len(ev)}; generated rows equal to an eval row (case-insensitive): {same}; "
          f"pool phrases found verbatim in an eval row: {len(shared)}", file=sys.stderr)
    for p in shared:
        print(f"  shared phrase: {p!r}", file=sys.stderr)
    return same + len(shared)


def main():
    ap = argparse.ArgumentParser(description="Write support-style moderation training rows as CSV.")
    ap.add_argument("out", nargs="?", help="output path (default: stdout)")
    ap.add_argument("--seed", type=int, default=SEED_DEFAULT)
    ap.add_argument("--per-class-per-lang", type=int, default=PER_CLASS_PER_LANG)
    ap.add_argument("--check-eval", metavar="CSV",
                    help="count overlaps with this eval set; exit 1 if there are any")
    a = ap.parse_args()
    rows = generate(a.seed, a.per_class_per_lang)
    f = open(a.out, "w", encoding="utf-8", newline="") if a.out else sys.stdout
    try:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "offensive", "hate", "lang"])
        w.writerows(rows)
    finally:
        if a.out:
            f.close()
    if a.check_eval and check_eval(rows, a.check_eval):
        sys.exit(1)


if __name__ == "__main__":
    main()
