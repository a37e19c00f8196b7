#!/usr/bin/env python3
"""Generate chatforge's synthetic customer-support data set.

Run from the repository root (Python 3.8+, standard library only):

    python3 data/support/generate.py

It (re)writes, next to this file:

    train.jsonl    dialogs to fine-tune on (OpenAI chat format, one a line,
                   plus the FAQ passages each assistant reply rests on)
    heldout.jsonl  dialogs for evaluation only, never trained on
    faq.md         the shop's FAQ, stating every policy the dialogs use
    README.md      only the block between the `stats:begin/end` markers

Everything is made up: "Northwind Outfitters" is a fictional online shop and
every order number, e-mail address and phone number is fake. The output is
deterministic (fixed seeds, no clock, no environment), so running the script
twice gives byte-identical files.

Before writing anything it checks the dialogs' "passages" against faq.md
(check_passages) and stops with an error if a title names no passage or a
reply leaves out every key fact of a passage it names.
"""

import json
import os
import random
import re
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

TRAIN_SEED = 20240601
HELDOUT_SEED = 77031
N_TRAIN = 720          # 8 topics x 3 styles x 30
N_HELDOUT = 80
MAX_CHARS = 850        # sum of message contents per dialog (fits 256 tokens)

TOPICS = ["orders", "shipping", "returns", "refunds", "billing", "account",
          "products", "handoff"]
STYLES = ["friendly", "formal", "concise"]

# --------------------------------------------------------------------------
# The shop's facts. Every number the dialogs and faq.md state comes from here.
# --------------------------------------------------------------------------

F = {
    "shop": "Northwind Outfitters",
    "site": "northwind.example.com",
    "email": "help@northwind.example.com",
    "phone": "1-800-555-0199",
    "hours": "Mon-Fri 8 am-8 pm ET and Sat 9 am-5 pm ET",
    "email_reply": "1 business day",
    "cutoff": "2 pm ET",
    "std_days": "5-7 business days",
    "std_price": "$5.95",
    "free_us": "$75",
    "exp_days": "2-3 business days",
    "exp_price": "$14.95",
    "ovn_price": "$29.95",
    "intl_days": "7-14 business days",
    "intl_price": "$19.95",
    "free_intl": "$150",
    "intl_list": "the US, Canada, the UK, EU countries, Australia, New Zealand and Japan",
    "track_update": "24 hours",
    "trace_days": "10 business days",
    "cancel_window": "1 hour",
    "report_days": "14 days",
    "confirm_minutes": "15 minutes",
    "return_days": "30 days",
    "return_win": "30-day",
    "refund_proc": "3 business days",
    "bank_days": "5-10 business days",
    "hold_days": "3-5 business days",
    "credit_days": "1 business day",
    "warranty": "2-year",
    "adjust_days": "14 days",
    "reset_minutes": "30 minutes",
    "lock_tries": "5",
    "lock_minutes": "15 minutes",
    "delete_days": "30 days",
    "unsub_days": "2 business days",
    "points_rule": "1 point per $1 spent",
    "points_reward": "200 points = a $10 reward",
    "points_expiry": "12 months",
    "gift_msg_chars": "200",
}

# Countries we ship to (the US aside) and some we do not.
SHIP_TO = ["Canada", "the UK", "Ireland", "Germany", "France", "the Netherlands",
           "Belgium", "Spain", "Italy", "Austria", "Sweden", "Denmark", "Portugal",
           "Australia", "New Zealand", "Japan"]
NO_SHIP = ["Brazil", "Mexico", "India", "South Africa", "Argentina", "Singapore",
           "Chile", "Kenya", "Indonesia", "the Philippines"]

# The catalog: (name, aliases users type, price, summary, weight, water, care).
PRODUCTS = [
    ("Ridgeline 2 Tent", ["Ridgeline 2 tent", "Ridgeline tent", "ridgeline 2"], "$249",
     "a 2-person backpacking tent with two doors and a full rainfly", "2.1 kg",
     "Yes, its rainfly and floor are fully waterproof with taped seams.",
     "Hand-clean it with mild soap, never machine wash, and dry it fully before storing."),
    ("Summit 30L Daypack", ["Summit 30L daypack", "Summit daypack", "summit 30l pack"], "$89",
     "a 30-liter daypack with a padded hip belt and a laptop sleeve", "0.9 kg",
     "It is water-resistant, not waterproof; a rain cover is built into the base.",
     "Hand wash it with mild soap and let it air dry."),
    ("Trailhead Hiking Boots", ["Trailhead boots", "Trailhead hiking boots", "trailhead boots"], "$159",
     "leather mid-cut hiking boots with a waterproof membrane and Vibram soles", "1.2 kg per pair",
     "Yes, they have a waterproof membrane.",
     "Brush off dirt, let them dry away from heat, and use leather conditioner now and then."),
    ("Cascade Rain Jacket", ["Cascade rain jacket", "Cascade jacket", "cascade rain jacket"], "$129",
     "a breathable 2.5-layer rain shell with a packable hood", "380 g",
     "Yes, it is fully waterproof with taped seams.",
     "Machine wash it cold and tumble dry low to refresh the water repellency."),
    ("Alpine Down Sleeping Bag", ["Alpine sleeping bag", "Alpine down bag", "alpine sleeping bag"], "$219",
     "a 650-fill down sleeping bag rated to -5 C (23 F)", "1.1 kg",
     "Its shell is water-resistant, not waterproof.",
     "Wash it rarely, in a front-load washer with down soap, and tumble dry low with dryer balls."),
    ("Glacier Insulated Bottle", ["Glacier bottle", "Glacier insulated bottle", "glacier bottle"], "$32",
     "a 750 ml stainless steel bottle that keeps drinks cold 24 hours or hot 12 hours", "410 g",
     "Yes, the lid seals leak-proof.",
     "Hand wash it; the bottle is not dishwasher safe."),
    ("Campfire Cast Iron Skillet", ["Campfire skillet", "cast iron skillet", "campfire skillet"], "$45",
     "a 10-inch pre-seasoned cast iron skillet", "2.3 kg",
     "It is cast iron, so keep it dry to prevent rust.",
     "Hand wash it with hot water, dry it right away and rub in a little oil."),
    ("Harbor Wool Throw", ["Harbor throw", "Harbor wool throw", "wool throw"], "$79",
     "a 130 x 170 cm merino wool throw blanket", "1.0 kg",
     "Wool resists light moisture but the throw is not waterproof.",
     "Dry clean it, or hand wash it cold and dry it flat."),
    ("Lakeside Mug Set", ["Lakeside mugs", "Lakeside mug set", "lakeside mugs"], "$36",
     "a set of four 350 ml stoneware mugs", "1.4 kg for the set",
     "They are glazed stoneware, so they hold liquids without any problem.",
     "They are dishwasher and microwave safe."),
    ("Timberline Cutting Board", ["Timberline board", "Timberline cutting board", "cutting board"], "$54",
     "a 45 x 30 cm acacia wood cutting board", "2.0 kg",
     "No, wood should not soak; wipe it dry after washing.",
     "Hand wash it, never soak it, and oil it once a month."),
    ("Birch Camp Chair", ["Birch chair", "Birch camp chair", "camp chair"], "$69",
     "a folding camp chair that holds up to 120 kg", "1.6 kg",
     "Its fabric is water-resistant and dries quickly.",
     "Wipe it with a damp cloth and let it dry before folding."),
    ("Ember Camp Stove", ["Ember stove", "Ember camp stove", "camp stove"], "$99",
     "a 2-burner propane camp stove with a wind shield", "4.5 kg",
     "It is built for outdoor use, but store it dry.",
     "Let it cool, then wipe it clean; the grates can be hand washed."),
    ("Drift Merino Base Layer", ["Drift base layer", "Drift merino top", "merino base layer"], "$65",
     "a long-sleeve merino wool base layer top", "210 g",
     "Merino handles sweat well, but it is not waterproof.",
     "Machine wash it cold on a gentle cycle and lay it flat to dry."),
    ("Beacon Headlamp", ["Beacon headlamp", "Beacon lamp", "headlamp"], "$39",
     "a 400-lumen headlamp that recharges over USB-C", "85 g",
     "It is rated IPX4, so it handles rain and splashes but not submersion.",
     "Wipe it with a damp cloth; keep the charging port dry."),
]
WEARABLES = ["Trailhead Hiking Boots", "Cascade Rain Jacket", "Drift Merino Base Layer"]
PRODUCT = {p[0]: p for p in PRODUCTS}

SYSTEMS = [
    "You are the customer support assistant of Northwind Outfitters, an online shop for outdoor gear and home goods.",
    "You are Northwind Outfitters' support assistant. Help with orders, shipping, returns, refunds, billing, accounts and products.",
    "You help customers of Northwind Outfitters, an online outdoor and home goods store. Follow the shop's policies.",
    "Northwind Outfitters customer support. Answer accurately and hand off to a human agent when asked.",
]

MONTHS = ["January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November", "December"]

# --------------------------------------------------------------------------
# Style pieces shared by every intent.
# --------------------------------------------------------------------------

OPENERS = {
    "friendly": ["Hi, thanks for reaching out! ", "Hello! Happy to help. ", "Hi there, great question! ",
                 "Hey! Thanks for asking. "],
    "formal": ["Thank you for contacting Northwind Outfitters. ", "Thank you for your question. ",
               "Good day, and thank you for reaching out. ", "Thank you for your message. ", ""],
    "concise": [""],
}
# Friendly first replies always greet; these go before replies that already
# open warmly ("Sure!", "Sorry about that!").
GREETINGS_FRIENDLY = ["Hi there! ", "Hi! ", "Hey there! ", "Hello! ", "Hey! "]
INTERJECTION = (r"^(Sure|Of course|Certainly|Thank|Thanks|Happy|Good|Great|Easy|Sorry|No problem|"
                r"No worries|Got it|Absolutely|Love|Yes|I'm so sorry|I'm really|Here you go|Let's|Glad)")
CLOSERS = {
    "friendly": [" Anything else I can help with?", " Let me know if there's anything else!",
                 " Happy trails!", "", ""],
    "formal": [" Please let me know if there is anything else I can assist you with.",
               " Is there anything further I may help you with?", "", ""],
    "concise": ["", "", " Anything else?"],
}
ASK_ORDER = {
    "friendly": ["Happy to check on that! Could you share your order number? It starts with NW- and is in your confirmation email.",
                 "Sure thing! What's your order number? You'll find it in your confirmation email (it looks like NW-123456)."],
    "formal": ["I would be glad to look into this. Could you please provide your order number? It begins with NW- and appears in your confirmation email.",
               "Certainly. May I have your order number, please? It begins with NW- and is shown in your order confirmation email."],
    "concise": ["Sure. What's your order number (NW- plus 6 digits)?", "Order number, please? It starts with NW-."],
}
FIND_ORDER = {
    "friendly": ["No worries! It's in your order confirmation email and starts with NW-. If you have an account, it's also under Account > Orders."],
    "formal": ["That is no problem. The order number appears in your confirmation email and begins with NW-. Account holders can also find it under Account > Orders."],
    "concise": ["It's in your confirmation email (starts with NW-) and under Account > Orders."],
}
THANKS_USER = ["thanks!", "Thank you!", "great, thanks", "Perfect, that helps.", "ok cool thx",
               "Thanks a lot.", "got it, thank you", "Thank you very much.", "awesome, thanks!", "ok thanks"]
THANKS_REPLY = {
    "friendly": ["You're welcome! Have a great day and enjoy your gear.", "Anytime! Happy trails.",
                 "Glad I could help! Have a lovely day."],
    "formal": ["You are most welcome. Thank you for shopping with Northwind Outfitters.",
               "It was my pleasure. Have a pleasant day."],
    "concise": ["You're welcome.", "Glad to help."],
}
GIVE_ORDER = ["It's {order}.", "{order}", "Order number is {order}", "sure, it's {order}",
              "{order} thanks", "Here it is: {order}", "it's {order_l}", "{digits}",
              "The number is {order}.", "ok it's {order}", "{order_l}"]
DONT_HAVE = ["I don't have it handy.", "where do I find the order number?",
             "hmm, not sure what my order number is", "I can't find it", "Where would that be?"]
FOLLOW_PREFIX = ["Also, ", "One more thing: ", "And ", "Ok, and ", "Another question: ", "", "", "Oh and "]
USER_GREETING = ["Hi, ", "Hello, ", "Hey. ", "Hi there! ", "Good morning. ", "hey, ", "Hello! "]

# --------------------------------------------------------------------------
# Intents. `user`: questions without an order number; `user_o`: with one;
# `fu`: short follow-up phrasings that lean on context ("it", "that");
# `order`: True when the answer needs an order number (the assistant asks
# for it when the user gave none); `ans`: style -> reply templates.
# Replies may use {order}, {product}, {country}, {amount}, {days} and
# every key of F.
# --------------------------------------------------------------------------

I = {}


def intent(name, topic, user, ans, user_o=(), fu=(), order=False, follow=(), slots=None):
    I[name] = dict(name=name, topic=topic, user=list(user), user_o=list(user_o), fu=list(fu),
                   ans=ans, order=order, follow=list(follow), slots=slots)


# ---- orders ---------------------------------------------------------------

intent("order_status", "orders",
       ["Where is my order?", "Can you check the status of my order?", "what's the status of my order",
        "Has my order shipped yet?", "I placed an order last week and haven't heard anything.",
        "When will my order arrive?", "Any update on my order?", "I want to know where my package is.",
        "Can you tell me if my order is on its way?", "I ordered on {date} and want to know when it arrives."],
       {"friendly": ["Thanks! You can see the live status of order {order} under Account > Orders, or with the tracking link in your shipping email. Orders placed before {cutoff} on a business day ship that day, and standard delivery takes {std_days}."],
        "formal": ["Thank you. The current status of order {order} is shown under Account > Orders and in the tracking link in your shipping confirmation email. Orders placed before {cutoff} on a business day ship the same day; standard delivery takes {std_days}."],
        "concise": ["Order {order}: live status is under Account > Orders and in your shipping email's tracking link. Ordered before {cutoff} on a business day: ships that day. Standard delivery: {std_days} after shipping."]},
       user_o=["Where is order {order}?", "status of {order}?", "Can you check order {order} for me?",
               "Has {order} shipped?", "When will order {order} arrive?", "any news on {order_l}"],
       fu=["Where's my order, by the way?", "can you check on my order too?"],
       order=True, follow=["tracking", "late_package", "shipping_options", "cancel_order"])

intent("cancel_order", "orders",
       ["I want to cancel my order.", "Can I cancel an order I just placed?", "please cancel my order",
        "How do I cancel my order?", "I ordered the wrong thing, can I cancel?", "Is it too late to cancel my order?",
        "i need to cancel an order asap"],
       {"friendly": ["Got it! If order {order} was placed less than {cancel_window} ago, you can cancel it under Account > Orders > Cancel order. After that it's already being packed, but you can return it free within {return_days} of delivery."],
        "formal": ["Thank you. If order {order} was placed less than {cancel_window} ago, you may cancel it under Account > Orders > Cancel order. After that the order is being packed and cannot be canceled, but it may be returned free of charge within {return_days} of delivery."],
        "concise": ["Order {order} can be canceled within {cancel_window} of ordering: Account > Orders > Cancel order. After that, return it within {return_days} of delivery instead."]},
       user_o=["Please cancel order {order}.", "Can I still cancel {order}?", "cancel {order_l} please",
               "I need to cancel order {order}, I ordered the wrong size."],
       fu=["Can I still cancel it?", "what if I want to cancel instead?"],
       order=True, follow=["cancel_refund", "return_policy", "change_order"])

intent("change_order", "orders",
       ["Can I change the shipping address on my order?", "I need to add an item to my order.",
        "Can I change the size on an order I placed?", "I typed the wrong address, can you fix my order?",
        "How do I edit my order?", "can i change my order after placing it"],
       {"friendly": ["Sure! Order {order} can be edited (address or items) within {cancel_window} of ordering under Account > Orders > Edit order. Once it's being packed we can't change it, but you can return or exchange items within {return_days} of delivery."],
        "formal": ["Certainly. Order {order} may be edited, including the address and items, within {cancel_window} of placing it under Account > Orders > Edit order. Once packing has begun it cannot be changed; items may then be returned or exchanged within {return_days} of delivery."],
        "concise": ["Order {order}: edits (address, items) are possible within {cancel_window} of ordering under Account > Orders > Edit order. After that, return or exchange within {return_days} of delivery."]},
       user_o=["Can I change the address on order {order}?", "I need to edit order {order}.",
               "please update the shipping address for {order}"],
       fu=["Can I change the address on it?", "and can I still edit the order?"],
       order=True, follow=["cancel_order", "exchange", "update_address"])

intent("missing_item", "orders",
       ["My package arrived but one item is missing.", "I only got part of my order.",
        "An item from my order never showed up.", "the box came without the {product}",
        "Why did I only receive half my order?"],
       {"friendly": ["Sorry about that! Some items ship separately with their own tracking, so check your shipping emails for order {order}. If something is still missing, report it within {report_days} of delivery and we'll reship it free."],
        "formal": ["I apologize for the inconvenience. Some items ship separately with their own tracking, so please check your shipping emails for order {order}. If an item is still missing, report it within {report_days} of delivery and we will reship it at no charge."],
        "concise": ["Order {order}: items can ship separately; check your shipping emails. Still missing? Report it within {report_days} of delivery and we reship free."]},
       user_o=["Order {order} arrived with an item missing.", "I'm missing the {product} from order {order}.",
               "{order} came incomplete"],
       order=True, follow=["damaged_item", "tracking", "human_direct"])

intent("damaged_item", "orders",
       ["My {product} arrived damaged.", "The item I received is broken.", "I got the wrong item.",
        "The {product} came with a crack in it, what now?", "you sent me the wrong color",
        "My order arrived damaged, what can I do?"],
       {"friendly": ["I'm so sorry! Please send us a photo within {report_days} of delivery by replying here or emailing {email} with order {order}. We'll send a free replacement or refund you, and usually you won't need to send it back."],
        "formal": ["I sincerely apologize. Please send a photo within {report_days} of delivery by replying here or emailing {email}, quoting order {order}. We will send a free replacement or issue a refund; in most cases the item need not be returned."],
        "concise": ["Sorry about that. Send a photo for order {order} to {email} within {report_days} of delivery. You'll get a free replacement or a refund, usually with no return needed."]},
       user_o=["Order {order} arrived damaged.", "the {product} in {order} is broken",
               "I received the wrong item in order {order}."],
       order=True, follow=["refund_timing", "warranty", "human_direct"])

intent("no_confirmation", "orders",
       ["I didn't get an order confirmation email.", "Did my order go through? No email yet.",
        "I never received a confirmation for my order.", "how do i know if my order was placed",
        "no confirmation email, is something wrong?"],
       {"friendly": ["Good question! Confirmation emails arrive within {confirm_minutes}, so check your spam folder first. Your order also shows under Account > Orders, and guests can use Order lookup with their email and order number."],
        "formal": ["Confirmation emails are sent within {confirm_minutes} of ordering, so please check your spam folder. The order is also listed under Account > Orders, and guest customers may use Order lookup with their email and order number."],
        "concise": ["Confirmations arrive within {confirm_minutes}; check spam. Also see Account > Orders, or Order lookup for guest orders."]},
       follow=["order_status", "change_email"])

intent("gift_order", "orders",
       ["Can I send an order as a gift?", "Do you do gift receipts?", "I want to ship a present to my sister.",
        "Can I hide the prices on a gift order?", "can you include a gift message"],
       {"friendly": ["Absolutely! Tick \"This is a gift\" at checkout to add a free gift message (up to {gift_msg_chars} characters) and a gift receipt without prices. The recipient can return it within {return_days} of delivery for store credit."],
        "formal": ["Certainly. Select \"This is a gift\" at checkout to add a complimentary gift message of up to {gift_msg_chars} characters and a gift receipt without prices. The recipient may return it within {return_days} of delivery for store credit."],
        "concise": ["Yes: tick \"This is a gift\" at checkout for a free gift message ({gift_msg_chars} characters max) and a gift receipt without prices."]},
       follow=["gift_return", "shipping_options"])

# ---- shipping -------------------------------------------------------------

intent("shipping_options", "shipping",
       ["How long does shipping take?", "What shipping options do you have?", "how fast do you ship",
        "What are your delivery times?", "How much is shipping?", "What does shipping cost and how long is it?",
        "shipping times?", "If I order the {product}, how soon will I get it?"],
       {"friendly": ["Here you go! Standard is {std_days} ({std_price}, free over {free_us}), Express is {exp_days} ({exp_price}), and Overnight arrives the next business day ({ovn_price}). Times count from the day your order ships."],
        "formal": ["We offer three options within the US: Standard in {std_days} for {std_price} (free on orders over {free_us}), Express in {exp_days} for {exp_price}, and Overnight by the next business day for {ovn_price}. Delivery times count from the day the order ships."],
        "concise": ["Standard: {std_days}, {std_price} (free over {free_us}). Express: {exp_days}, {exp_price}. Overnight: next business day, {ovn_price}. Times count from shipping."]},
       fu=["How long does shipping take?", "what are the shipping options?"],
       follow=["free_shipping", "express", "cutoff", "international"])

intent("express", "shipping",
       ["How much is express shipping?", "Do you have faster shipping?", "Can I get it overnight?",
        "what's the fastest shipping you offer", "Is overnight shipping available?"],
       {"friendly": ["Sure! Express takes {exp_days} for {exp_price}, and Overnight arrives the next business day for {ovn_price} if you order before {cutoff}. Both need a street address, so no PO boxes."],
        "formal": ["Express delivery takes {exp_days} and costs {exp_price}. Overnight delivery arrives the next business day for {ovn_price} when ordered before {cutoff}. Both require a street address and cannot be sent to PO boxes."],
        "concise": ["Express: {exp_days}, {exp_price}. Overnight: next business day, {ovn_price}, order by {cutoff}. Both need a street address (no PO boxes)."]},
       fu=["What about express?", "and overnight?", "how much is the faster option?"],
       follow=["cutoff", "po_box"])

intent("free_shipping", "shipping",
       ["Do you offer free shipping?", "Is shipping free?", "what's the minimum for free shipping",
        "How much do I need to spend for free delivery?", "free shipping?"],
       {"friendly": ["Yes! Standard shipping is free on US orders over {free_us}, and international shipping is free on orders over {free_intl}. Below that, Standard is {std_price}."],
        "formal": ["Yes. Standard shipping is complimentary on US orders over {free_us}, and international shipping is complimentary on orders over {free_intl}. Otherwise Standard shipping costs {std_price}."],
        "concise": ["Free Standard shipping on US orders over {free_us}; international orders over {free_intl} ship free. Otherwise Standard is {std_price}."]},
       fu=["Is it free over a certain amount?", "and is there free shipping?"],
       follow=["shipping_options", "international"])

intent("international", "shipping",
       ["Do you ship to {country}?", "Can I order from {country}?", "how long does shipping to {country} take?",
        "I live in {country}. Can you deliver there?", "Do you deliver internationally, e.g. to {country}?",
        "what does shipping to {country} cost"],
       None,
       fu=["Do you ship to {country} too?", "what about {country}?"],
       follow=["customs", "free_shipping", "currency"], slots="country")

intent("customs", "shipping",
       ["Will I have to pay customs duties?", "Are import taxes included?", "who pays customs fees",
        "Do international orders have extra fees?"],
       {"friendly": ["Good question! Duties and import taxes aren't included in our prices, so the carrier collects them at delivery. Shipping itself is {intl_price}, or free over {free_intl}."],
        "formal": ["Duties and import taxes are not included in our prices; they are collected by the carrier upon delivery. International shipping costs {intl_price}, or is free on orders over {free_intl}."],
        "concise": ["Duties and import taxes aren't included; the carrier collects them at delivery. Shipping: {intl_price}, free over {free_intl}."]},
       fu=["Do I pay customs on top?", "and what about duties?"],
       follow=["currency", "international"])

intent("cutoff", "shipping",
       ["If I order today, when will it ship?", "What's your order cutoff time?", "Do you ship on weekends?",
        "How quickly do you send out orders?", "when does my order leave the warehouse"],
       {"friendly": ["Orders placed before {cutoff} on a business day ship that same day! Later orders ship the next business day, and weekend orders go out on Monday."],
        "formal": ["Orders placed before {cutoff} on a business day are shipped the same day. Orders placed later ship on the next business day, and weekend orders ship on Monday."],
        "concise": ["Before {cutoff} on a business day: ships same day. Later: next business day. Weekends: Monday."]},
       fu=["When would it ship if I order now?", "what's the cutoff?"],
       follow=["shipping_options", "express"])

intent("tracking", "shipping",
       ["How do I track my package?", "Where can I find my tracking number?", "I didn't get a tracking link.",
        "my tracking hasn't updated", "Is there a way to track my delivery?"],
       {"friendly": ["Easy! We email a tracking link as soon as your order ships, and it's also under Account > Orders. New tracking can take up to {track_update} to show movement, so don't worry if it's quiet at first."],
        "formal": ["A tracking link is emailed as soon as your order ships and is also available under Account > Orders. Please note that new tracking numbers may take up to {track_update} to show movement."],
        "concise": ["Tracking link: in your shipping email and under Account > Orders. It can take up to {track_update} to update."]},
       fu=["How do I track it?", "where's the tracking link?"],
       follow=["late_package", "order_status"])

intent("late_package", "shipping",
       ["My package is late.", "My order still hasn't arrived.", "Tracking says delivered but I don't have it.",
        "It's been two weeks and no package.", "my delivery is way overdue", "I ordered on {date} and nothing has arrived yet."],
       {"friendly": ["Sorry for the wait! If order {order} shipped more than {trace_days} ago and still hasn't arrived, we'll open a carrier trace and reship or refund it. If it's more recent, the tracking link should show the latest."],
        "formal": ["I apologize for the delay. If order {order} shipped more than {trace_days} ago and has not arrived, we will open a carrier trace and either reship it or refund it. Otherwise, the tracking link shows the latest status."],
        "concise": ["Order {order}: if it shipped over {trace_days} ago and hasn't arrived, we open a carrier trace and reship or refund. Otherwise check tracking."]},
       user_o=["Order {order} is late.", "{order} still hasn't arrived", "Tracking for {order} says delivered but it's not here.",
               "my package {order_l} is overdue"],
       fu=["What if it doesn't arrive?", "and if it's late?"],
       order=True, follow=["human_direct", "tracking"])

intent("po_box", "shipping",
       ["Do you ship to PO boxes?", "Can I use a PO box address?", "po box delivery ok?",
        "Can you deliver to a P.O. box?"],
       {"friendly": ["Yes, Standard shipping can go to PO boxes! Express and Overnight need a street address, though."],
        "formal": ["Yes. Standard shipping is available to PO boxes; Express and Overnight deliveries require a street address."],
        "concise": ["Standard: yes. Express and Overnight: street addresses only."]},
       fu=["Can it go to a PO box?"],
       follow=["shipping_options", "update_address"])

# ---- returns --------------------------------------------------------------

intent("return_policy", "returns",
       ["What's your return policy?", "Can I return something?", "how do returns work",
        "Do you accept returns?", "How long do I have to return an item?", "What is the return window?",
        "can i send back the {product} if i don't like it"],
       {"friendly": ["Of course! You have {return_days} from delivery to return unused items in their original condition, and US returns come with a free prepaid label."],
        "formal": ["Unused items in their original condition may be returned within {return_days} of delivery. Returns within the US include a free prepaid label."],
        "concise": ["{return_days} from delivery, unused and in original condition. US return labels are free."]},
       fu=["Can I return it if it doesn't fit?", "what's the return policy?"],
       follow=["start_return", "refund_timing", "return_cost", "non_returnable", "exchange"])

intent("start_return", "returns",
       ["How do I start a return?", "How do I send something back?", "I want to return the {product}.",
        "where do i get a return label", "I'd like to return an item from my order."],
       {"friendly": ["Easy! Go to Account > Orders and click Return items (guests use the Returns page with their order number and email). Print the prepaid label and drop the box at any UPS location."],
        "formal": ["Please go to Account > Orders and select Return items; guest customers may use the Returns page with their order number and email. Print the prepaid label and drop the parcel at any UPS location."],
        "concise": ["Account > Orders > Return items (guests: Returns page with order number and email). Print the prepaid label, drop it at UPS."]},
       fu=["How do I send it back?", "how do I start the return?"],
       follow=["refund_timing", "return_cost", "exchange"])

intent("return_window", "returns",
       ["I got my {product} {days} days ago. Can I still return it?",
        "It was delivered {days} days ago, is a return still possible?",
        "can i return something i received {days} days ago",
        "Is it too late to return an order from {days} days ago?"],
       None,
       fu=["It arrived {days} days ago, is that ok?"],
       follow=["start_return", "warranty", "exchange"], slots="days")

intent("non_returnable", "returns",
       ["Can I return a final sale item?", "Are gift cards refundable?", "Can I return a personalized item?",
        "Is there anything I can't return?", "what items are non-returnable"],
       {"friendly": ["Good to check! Final-sale items, gift cards and personalized items can't be returned. Everything else can go back within {return_days} of delivery if unused."],
        "formal": ["Final-sale items, gift cards and personalized items cannot be returned. All other unused items may be returned within {return_days} of delivery."],
        "concise": ["Not returnable: final-sale items, gift cards, personalized items. Everything else: {return_days}, unused."]},
       fu=["Are there items I can't return?"],
       follow=["return_policy", "warranty"])

intent("exchange", "returns",
       ["Can I exchange for a different size?", "The {product} doesn't fit, can I swap it?",
        "I want a different color, how do exchanges work?", "do you do exchanges",
        "can i exchange my {product} for a bigger size"],
       {"friendly": ["Yes! Size and color exchanges are free within {return_days} of delivery. Start with Return items in Account > Orders and pick Exchange; we ship the new one as soon as your return is scanned by the carrier."],
        "formal": ["Yes. Size and color exchanges are free of charge within {return_days} of delivery. Select Return items under Account > Orders and choose Exchange; the replacement ships once the carrier scans your return."],
        "concise": ["Free size/color exchanges within {return_days}. Account > Orders > Return items > Exchange. New item ships when your return is scanned."]},
       fu=["Can I exchange it instead?", "what about an exchange?"],
       follow=["sizing", "return_cost"])

intent("return_cost", "returns",
       ["Do I have to pay for return shipping?", "Is the return label free?", "who pays for returns",
        "How much does it cost to send something back?", "Are returns free from {country}?"],
       {"friendly": ["Returns within the US are free with our prepaid UPS label! For international orders, return shipping is paid by the customer."],
        "formal": ["Returns within the US are free of charge with our prepaid UPS label. For international orders, the customer pays the return shipping."],
        "concise": ["US returns: free prepaid label. International returns: customer pays shipping."]},
       fu=["Is the return shipping free?", "and do I pay for the return label?"],
       follow=["refund_timing", "shipping_refund"], slots="country_any")

intent("used_item", "returns",
       ["I used the {product} once, can I return it?", "Can I return boots I wore outside?",
        "Can I return something that's been used?", "i tried the {product} on a trip and don't like it, return?"],
       {"friendly": ["I'm sorry it didn't work out! Returns need to be unused and in original condition, so used items can't come back. If something is faulty, though, our {warranty} warranty covers defects."],
        "formal": ["Returned items must be unused and in their original condition, so used items cannot be accepted. If the item is faulty, it is covered by our {warranty} warranty against defects."],
        "concise": ["Used items can't be returned; returns must be unused. Defects are covered by the {warranty} warranty."]},
       follow=["warranty", "human_direct"])

intent("gift_return", "returns",
       ["Can I return a gift I received?", "How do I return a gift?", "someone gave me the {product}, can i exchange it",
        "I got a gift from you and it's the wrong size."],
       {"friendly": ["Yes! Gifts can be returned within {return_days} of delivery using the order number on the gift receipt. You'll get store credit, and the giver won't be notified."],
        "formal": ["Yes. Gifts may be returned within {return_days} of delivery using the order number on the gift receipt. The refund is issued to you as store credit, and the purchaser is not notified."],
        "concise": ["Yes, within {return_days} of delivery, with the order number on the gift receipt. Refund as store credit."]},
       follow=["exchange", "refund_method"])

# ---- refunds --------------------------------------------------------------

intent("refund_timing", "refunds",
       ["When will I get my refund?", "How long do refunds take?", "I sent back an item, when do I get my money?",
        "how long until the refund shows up", "What's the refund timeline?", "Refund time?"],
       {"friendly": ["Good question! We process refunds within {refund_proc} of your return reaching our warehouse and email you when it's done. Your bank then takes {bank_days} to show it."],
        "formal": ["Refunds are processed within {refund_proc} after the return reaches our warehouse, and a confirmation email is sent. The bank then takes {bank_days} to post the amount."],
        "concise": ["Processed within {refund_proc} of the return reaching us; your bank then takes {bank_days}."]},
       fu=["How long until I get the money back?", "and when will I get refunded?"],
       follow=["refund_method", "refund_status", "shipping_refund"])

intent("refund_status", "refunds",
       ["Where is my refund?", "I still haven't received my refund.", "my refund hasn't arrived",
        "I returned something two weeks ago and no refund yet.", "Can you check on my refund?"],
       {"friendly": ["Thanks! We email you once the refund for order {order} is processed, within {refund_proc} of the return arriving. Banks take {bank_days} after that; if it's longer, reply here and a teammate will dig in."],
        "formal": ["Thank you. A confirmation email is sent when the refund for order {order} is processed, within {refund_proc} of the return arriving. Banks take {bank_days} thereafter; if it takes longer, a teammate will investigate."],
        "concise": ["Order {order}: refund is processed within {refund_proc} of the return arriving (you get an email), then {bank_days} at your bank. Longer than that? We'll investigate."]},
       user_o=["Where is the refund for {order}?", "no refund yet for order {order}", "Can you check my refund on {order}?"],
       fu=["Can you check my refund?", "and where's my refund?"],
       order=True, follow=["refund_method", "human_direct"])

intent("refund_method", "refunds",
       ["Will the refund go back to my card?", "Can I get store credit instead of a refund?",
        "How will I be refunded?", "i paid with a gift card, how do i get refunded",
        "Do you refund to PayPal?"],
       {"friendly": ["Refunds go back to your original payment method, and gift card purchases come back as a gift card. Prefer store credit? Pick it when you start the return and it's issued within {credit_days} of the return arriving."],
        "formal": ["Refunds are issued to the original payment method; purchases made with a gift card are refunded to a gift card. If you prefer store credit, select it when starting the return; it is issued within {credit_days} of the return arriving."],
        "concise": ["To the original payment method (gift cards back to a gift card). Store credit is optional and issued within {credit_days} of the return arriving."]},
       fu=["Will it go back to my card?", "can I get store credit instead?"],
       follow=["refund_timing", "gift_card"])

intent("shipping_refund", "refunds",
       ["Do I get my shipping costs refunded?", "Will you refund the shipping fee?", "is shipping refunded when i return",
        "Do I get the delivery charge back?"],
       {"friendly": ["The original shipping fee isn't refunded, unless the item was defective or we made a mistake. US return labels are free, though!"],
        "formal": ["The original shipping fee is not refundable unless the item was defective or the error was ours. Return labels within the US are free of charge."],
        "concise": ["Original shipping isn't refunded unless the item was defective or it was our error."]},
       fu=["Do I get the shipping back too?", "what about the shipping fee?"],
       follow=["refund_timing", "return_cost"])

intent("cancel_refund", "refunds",
       ["I canceled my order, when do I get my money back?", "My canceled order still shows a charge.",
        "Refund for a canceled order?", "why is there still a pending charge after i cancelled"],
       {"friendly": ["No worries! We only charge your card when an order ships, so a canceled order just leaves an authorization hold. Your bank drops it within {hold_days}."],
        "formal": ["Cards are charged only when an order ships, so a canceled order leaves only an authorization hold. Your bank releases it within {hold_days}."],
        "concise": ["Canceled orders aren't charged; the authorization hold drops off within {hold_days}."]},
       fu=["When do I get the money back then?", "and the charge on my card?"],
       follow=["charge_timing", "double_charge"])

intent("partial_refund", "refunds",
       ["I returned one item that cost {amount}. Will I get all of it back?",
        "I only sent back part of my order ({amount}), how much is refunded?",
        "Do I get the full {amount} for the item I returned?"],
       {"friendly": ["Yes! You'll get the full {amount} for the returned item, plus its sales tax. Only the original shipping fee isn't refunded, unless the item was defective or we made a mistake."],
        "formal": ["Yes. The full {amount} for the returned item is refunded, together with its sales tax. The original shipping fee is not refunded unless the item was defective or we made a mistake."],
        "concise": ["Yes: {amount} plus its sales tax. Original shipping isn't refunded unless the item was defective or our mistake."]},
       follow=["refund_timing", "shipping_refund"], slots="amount")

# ---- billing --------------------------------------------------------------

intent("payment_methods", "billing",
       ["What payment methods do you accept?", "Can I pay with PayPal?", "Do you take American Express?",
        "Can I pay with Apple Pay?", "do you accept cash on delivery", "Which cards can I use?"],
       {"friendly": ["We accept Visa, Mastercard, American Express, Discover, PayPal, Apple Pay and Northwind gift cards! We can't take cash on delivery or checks."],
        "formal": ["We accept Visa, Mastercard, American Express, Discover, PayPal, Apple Pay and Northwind gift cards. Cash on delivery and checks are not accepted."],
        "concise": ["Visa, Mastercard, Amex, Discover, PayPal, Apple Pay, Northwind gift cards. No cash on delivery or checks."]},
       fu=["Can I pay with PayPal?", "which payment methods work?"],
       follow=["charge_timing", "currency", "gift_card"])

intent("double_charge", "billing",
       ["I was charged twice for {amount}.", "Why do I see two charges on my card?", "There's a duplicate charge of {amount}.",
        "you charged me twice!", "My card shows {amount} two times."],
       {"friendly": ["Sorry for the worry! Usually one of them is the authorization hold from checkout, and your bank drops it within {hold_days}. If both are still there after that, send us your order number and we'll fix it."],
        "formal": ["I apologize for the concern. Usually one entry is the authorization hold from checkout, which your bank releases within {hold_days}. If both remain after that, please send us your order number and we will correct it."],
        "concise": ["One is likely the checkout authorization hold; it drops off within {hold_days}. Both still there after that? Send your order number."]},
       follow=["charge_timing", "human_direct"], slots="amount")

intent("charge_timing", "billing",
       ["When will my card be charged?", "Do you charge when I order or when it ships?", "when do you take the payment",
        "Why is there a pending charge?"],
       {"friendly": ["We charge your card when the order ships! At checkout you'll only see an authorization hold for the amount."],
        "formal": ["Your card is charged when the order ships. At checkout, only an authorization hold is placed for the amount."],
        "concise": ["Charged at shipping. Checkout places an authorization hold only."]},
       fu=["When is my card charged?", "and when do you take the money?"],
       follow=["double_charge", "cancel_refund"])

intent("invoice", "billing",
       ["Can I get an invoice?", "I need a receipt for my order.", "Where can I download my invoice?",
        "I need a VAT invoice for work.", "can you send me a receipt"],
       {"friendly": ["Sure! You can download a PDF invoice under Account > Orders > Download invoice. If you checked out as a guest, email {email} with your order number and we'll send it."],
        "formal": ["Certainly. A PDF invoice can be downloaded under Account > Orders > Download invoice. Guest customers may email {email} with their order number to receive one."],
        "concise": ["Account > Orders > Download invoice (PDF). Guests: email {email} with the order number."]},
       fu=["Can I get an invoice for that?", "and a receipt?"],
       follow=["sales_tax", "payment_methods"])

intent("promo_code", "billing",
       ["My promo code isn't working.", "Can I use two discount codes?", "I forgot to use my coupon, can you apply it?",
        "the discount code says invalid", "Can I add a promo code after ordering?"],
       {"friendly": ["Let's sort it out! Only one code works per order, codes can't be combined, and they must be entered at checkout; we can't add one afterwards. Also check the code's expiry date and minimum spend."],
        "formal": ["Please note that one code may be used per order, codes cannot be combined, and they must be entered at checkout; they cannot be applied afterwards. Kindly also check the expiry date and minimum spend."],
        "concise": ["One code per order, no combining, checkout only (not after ordering). Check expiry and minimum spend."]},
       fu=["Can I still use a promo code?"],
       follow=["price_adjustment", "payment_methods"])

intent("price_adjustment", "billing",
       ["The {product} went on sale right after I bought it.", "Do you refund the difference if the price drops?",
        "i paid {amount} and now it's cheaper, can I get the difference", "Do you offer price adjustments?"],
       {"friendly": ["Good news! If our price drops within {adjust_days} of your purchase, we'll refund the difference once. Just send us your order number. We don't match other stores' prices, though."],
        "formal": ["If our price drops within {adjust_days} of your purchase, we will refund the difference once; please send us your order number. We do not match competitors' prices."],
        "concise": ["Price drops within {adjust_days} of purchase: we refund the difference once. Send your order number. No competitor price matching."]},
       fu=["And if the price drops later?"],
       follow=["price_match", "refund_timing"], slots="amount")

intent("declined_card", "billing",
       ["My card was declined.", "Payment keeps failing at checkout.", "why won't my card go through",
        "I can't pay, it says payment declined."],
       {"friendly": ["Sorry about that! Check that your billing address matches your card exactly, or try another card or PayPal. We can't see or override declines, so your bank can tell you more."],
        "formal": ["I apologize for the inconvenience. Please ensure the billing address matches your card exactly, or try another card or PayPal. We cannot see or override declines; your bank can provide further details."],
        "concise": ["Make sure the billing address matches your card, or use another card or PayPal. Your bank can explain declines; we can't override them."]},
       follow=["payment_methods", "human_direct"])

intent("gift_card", "billing",
       ["How do I check my gift card balance?", "Do gift cards expire?", "can i use a gift card online",
        "How do I use a gift card?"],
       {"friendly": ["Gift cards never expire! Check the balance on our Gift Cards page, and enter the card number at checkout to use it."],
        "formal": ["Northwind gift cards never expire. The balance can be checked on our Gift Cards page, and the card number is entered at checkout to redeem it."],
        "concise": ["They never expire. Balance: Gift Cards page. Redeem at checkout."]},
       fu=["Do gift cards expire?"],
       follow=["payment_methods", "non_returnable"])

intent("currency", "billing",
       ["What currency are your prices in?", "Can I pay in euros?", "Will I be charged in dollars?",
        "do you charge in my local currency"],
       {"friendly": ["All our prices are in US dollars! If your card is from outside the US, your bank may add a conversion fee."],
        "formal": ["All prices are in US dollars. Cards issued outside the US may incur a conversion fee from the bank."],
        "concise": ["US dollars only. Non-US banks may add a conversion fee."]},
       fu=["What currency is that in?", "are prices in dollars?"],
       follow=["customs", "payment_methods"])

intent("sales_tax", "billing",
       ["Do you charge sales tax?", "Why was I charged tax?", "is tax included in the price"],
       {"friendly": ["Sales tax is added at checkout for US orders, based on the shipping address. International orders don't pay US tax, but the carrier may collect duties and import taxes."],
        "formal": ["Sales tax is added at checkout for US orders according to the shipping address. International orders are not charged US tax; the carrier may collect duties and import taxes."],
        "concise": ["US orders: sales tax by shipping address, added at checkout. International: no US tax; the carrier may collect duties."]},
       fu=["Is tax included?"],
       follow=["invoice", "customs"])

# ---- account --------------------------------------------------------------

intent("reset_password", "account",
       ["I forgot my password.", "How do I reset my password?", "can't log in, forgot password",
        "The password reset link doesn't work.", "I need to change my password."],
       {"friendly": ["No problem! Click \"Forgot password?\" on the sign-in page and we'll email you a reset link. It's valid for {reset_minutes}, so use it soon or request a new one."],
        "formal": ["Please select \"Forgot password?\" on the sign-in page, and a reset link will be emailed to you. The link remains valid for {reset_minutes}; after that, you may request a new one."],
        "concise": ["Sign-in page > \"Forgot password?\". The emailed link is valid for {reset_minutes}."]},
       fu=["How do I reset my password?"],
       follow=["locked_account", "two_step", "change_email"])

intent("locked_account", "account",
       ["My account is locked.", "It says too many sign-in attempts.", "i'm locked out of my account",
        "Why can't I sign in anymore?"],
       {"friendly": ["That happens after {lock_tries} failed sign-in attempts, to keep your account safe. Wait {lock_minutes} and try again, or reset your password with \"Forgot password?\"."],
        "formal": ["Accounts are locked for {lock_minutes} after {lock_tries} failed sign-in attempts for security. Please wait and try again, or reset your password using \"Forgot password?\"."],
        "concise": ["{lock_tries} failed attempts lock it for {lock_minutes}. Wait, or use \"Forgot password?\"."]},
       follow=["reset_password", "human_direct"])

intent("change_email", "account",
       ["How do I change my email address?", "I need to update the email on my account.", "can i change my login email",
        "I have a new email, how do I update it?"],
       {"friendly": ["Sure! Go to Account > Profile and enter the new address. We'll send a confirmation link there, and the change applies once you click it."],
        "formal": ["Please go to Account > Profile and enter the new address. A confirmation link will be sent to it, and the change takes effect once the link is clicked."],
        "concise": ["Account > Profile. Confirm via the link sent to the new address."]},
       fu=["How do I change my email?"],
       follow=["unsubscribe", "reset_password"])

intent("delete_account", "account",
       ["Please delete my account.", "How do I close my account?", "I want my data removed.",
        "delete my account and all my info", "Can I deactivate my account?"],
       {"friendly": ["Sorry to see you go! Use Account > Privacy > Delete account, or ask us here. It's done within {delete_days}; we keep order records only as long as tax law requires."],
        "formal": ["You may request this under Account > Privacy > Delete account, or through us. Deletion is completed within {delete_days}; order records are retained only as long as tax law requires."],
        "concise": ["Account > Privacy > Delete account, or ask us. Done within {delete_days}; order records kept only as tax law requires."]},
       follow=["unsubscribe", "human_direct"])

intent("unsubscribe", "account",
       ["How do I unsubscribe from your emails?", "Stop sending me newsletters.", "too many marketing emails",
        "I want to opt out of promotions."],
       {"friendly": ["Sure thing! Click Unsubscribe at the bottom of any newsletter, or switch it off in Account > Preferences. It takes up to {unsub_days} to kick in; order emails keep coming."],
        "formal": ["Please use the Unsubscribe link at the bottom of any newsletter, or update Account > Preferences. The change takes up to {unsub_days}; order emails will continue."],
        "concise": ["Unsubscribe link in any newsletter, or Account > Preferences. Up to {unsub_days}. Order emails continue."]},
       follow=["delete_account", "change_email"])

intent("guest_orders", "account",
       ["Do I need an account to order?", "I checked out as a guest, can I add the order to my account?",
        "can i order without signing up", "How do I see my old guest orders?"],
       {"friendly": ["You don't need an account, guest checkout works fine! If you later sign up with the same email, your past guest orders show up in your account automatically."],
        "formal": ["An account is not required; guest checkout is available. If you later create an account with the same email, past guest orders appear in it automatically."],
        "concise": ["No account needed: guest checkout is available. Sign up with the same email later and guest orders appear automatically."]},
       follow=["rewards", "order_status"])

intent("rewards", "account",
       ["How does your rewards program work?", "Do I earn points?", "when do my reward points expire",
        "How many points do I need for a discount?", "what is northwind rewards"],
       {"friendly": ["Northwind Rewards is free to join! You earn {points_rule}, and {points_reward}. Points expire after {points_expiry} without a purchase."],
        "formal": ["Northwind Rewards is free to join. Members earn {points_rule}, and {points_reward}. Points expire after {points_expiry} without a purchase."],
        "concise": ["Free to join. {points_rule}; {points_reward}. Points expire after {points_expiry} without a purchase."]},
       fu=["Do I get points for that?"],
       follow=["guest_orders", "promo_code"])

intent("two_step", "account",
       ["Do you have two-factor authentication?", "How do I make my account more secure?", "can i turn on 2fa",
        "Is there two-step verification?"],
       {"friendly": ["Yes! Turn on two-step verification under Account > Security, and we'll ask for a code each time you sign in on a new device."],
        "formal": ["Yes. Two-step verification can be enabled under Account > Security; a code is then requested when signing in on a new device."],
        "concise": ["Yes: Account > Security. You'll enter a code on new devices."]},
       follow=["reset_password", "change_email"])

intent("update_address", "account",
       ["How do I change my saved address?", "I moved, how do I update my address?", "update my default shipping address",
        "Can I save more than one address?"],
       {"friendly": ["You can add or edit saved addresses under Account > Addresses! Just note this won't change orders you've already placed."],
        "formal": ["Saved addresses can be added or edited under Account > Addresses. Please note that this does not change orders already placed."],
        "concise": ["Account > Addresses. Doesn't change orders already placed."]},
       follow=["change_order", "po_box"])

# ---- products -------------------------------------------------------------

intent("product_price", "products",
       ["How much is the {alias}?", "What does the {alias} cost?", "price of the {alias}?",
        "how much r the {alias_l}", "Is the {alias} expensive?"],
       {"friendly": ["The {product} is {price}! It's {summary}."],
        "formal": ["The {product} is priced at {price}. It is {summary}."],
        "concise": ["{product}: {price}."]},
       fu=["How much is it?", "what does it cost?"],
       follow=["product_weight", "product_water", "product_care", "warranty"], slots="product")

intent("product_about", "products",
       ["Tell me about the {alias}.", "What is the {alias}?", "Can you describe the {alias}?",
        "what's special about the {alias_l}", "I'm looking at the {alias}, what is it like?"],
       {"friendly": ["Love that one! The {product} is {summary}, and it's {price}."],
        "formal": ["The {product} is {summary}. It is priced at {price}."],
        "concise": ["{product}: {summary}. {price}."]},
       fu=["What is it exactly?"],
       follow=["product_weight", "product_water", "product_care", "product_price"], slots="product")

intent("product_weight", "products",
       ["How much does the {alias} weigh?", "What's the weight of the {alias}?", "is the {alias_l} heavy",
        "weight of {alias}?"],
       {"friendly": ["The {product} weighs {weight}!"],
        "formal": ["The {product} weighs {weight}."],
        "concise": ["{weight}."]},
       fu=["How much does it weigh?", "and how heavy is it?"],
       follow=["product_price", "product_water", "product_care"], slots="product")

intent("product_water", "products",
       ["Is the {alias} waterproof?", "Can the {alias} get wet?", "is the {alias_l} water resistant",
        "Will the {alias} hold up in rain?"],
       {"friendly": ["Good question! {water}"],
        "formal": ["Thank you for your question about the {product}. {water}"],
        "concise": ["{water}"]},
       fu=["Is it waterproof?", "and can it get wet?"],
       follow=["product_care", "product_weight", "product_price"], slots="product")

intent("product_care", "products",
       ["How do I clean the {alias}?", "Can I wash the {alias}?", "care instructions for the {alias}?",
        "how should i wash my {alias_l}", "How do I look after the {alias}?"],
       {"friendly": ["Great question! {care}"],
        "formal": ["Thank you for your question about the {product}. {care}"],
        "concise": ["{care}"]},
       fu=["How do I clean it?", "how should I wash it?"],
       follow=["warranty", "product_water"], slots="product")

intent("sizing", "products",
       ["What size should I get in the {alias}?", "Does the {alias} run small?", "How does the {alias} fit?",
        "im between sizes for the {alias_l}, which one?", "Is there a size chart for the {alias}?"],
       {"friendly": ["Our boots and apparel, the {product} included, fit true to size, and there's a size chart on every product page. If you're between sizes, go one size up. Size exchanges are free within {return_days} of delivery!"],
        "formal": ["Our boots and apparel, including the {product}, fit true to size, and every product page has a size chart. If you are between sizes, we recommend the larger size. Size exchanges are free within {return_days} of delivery."],
        "concise": ["True to size; chart on the product page. Between sizes: size up. Free size exchanges within {return_days} of delivery."]},
       fu=["Does it run small?", "what size should I get?"],
       follow=["exchange", "product_price"], slots="wearable")

intent("warranty", "products",
       ["Is there a warranty?", "What warranty does the {alias} have?", "my {alias_l} broke after a few months",
        "Does your gear come with a guarantee?", "The zipper failed, is that covered?"],
       {"friendly": ["Yes! All Northwind gear has a {warranty} warranty against defects in materials and workmanship. Send us a photo and your order number, and we'll repair or replace it. Normal wear and tear and misuse aren't covered."],
        "formal": ["Yes. All Northwind products carry a {warranty} warranty against defects in materials and workmanship. Please send a photo and your order number, and we will repair or replace the item. Normal wear and tear and damage from misuse are not covered."],
        "concise": ["{warranty} warranty on defects in materials and workmanship. Send a photo and order number for a repair or replacement. Wear and tear and misuse not covered."]},
       fu=["Is it under warranty?", "and what's the warranty?"],
       follow=["used_item", "human_direct"], slots="product")

intent("restock", "products",
       ["When will the {alias} be back in stock?", "The {alias} is sold out, will you restock?",
        "is the {alias_l} coming back", "Can you tell me when the {alias} is available again?"],
       {"friendly": ["We can't promise a date, sorry! Tap \"Notify me\" on the {product} page and we'll email you the moment it's back."],
        "formal": ["We are unable to promise a restock date. Please select \"Notify me\" on the {product} page to receive an email as soon as it is available."],
        "concise": ["No date yet. Use \"Notify me\" on the {product} page for an email when it's back."]},
       fu=["When will it be back in stock?"],
       follow=["product_about", "price_match"], slots="product")

intent("price_match", "products",
       ["Do you price match?", "Another store sells the {alias} for less, will you match it?",
        "can you match a competitor's price", "I found the {alias} cheaper elsewhere."],
       {"friendly": ["We don't match other stores' prices, sorry! But if our own price drops within {adjust_days} of your purchase, we'll refund the difference once."],
        "formal": ["We do not match competitors' prices. However, if our own price drops within {adjust_days} of your purchase, we will refund the difference once."],
        "concise": ["No competitor price matching. Our own price drops within {adjust_days} of purchase: difference refunded once."]},
       follow=["promo_code", "price_adjustment"], slots="product")

# ---- handoff --------------------------------------------------------------

HUMAN = {
    "friendly": ["Of course! I'm connecting you with a member of our support team now. Agents are around {hours}; outside those hours they reply by email within {email_reply}."],
    "formal": ["Certainly. I am transferring you to a member of our support team. Agents are available {hours}; outside those hours, they reply by email within {email_reply}."],
    "concise": ["Transferring you to an agent. Hours: {hours}. Outside them, email reply within {email_reply}."],
}

intent("human_direct", "handoff",
       ["Can I talk to a real person?", "I want to speak to a human.", "agent please", "Connect me to customer service.",
        "is there a human i can talk to", "I'd rather talk to someone from your team.", "Let me speak with a representative.",
        "transfer me to a person"],
       HUMAN,
       fu=["Can I talk to a real person?", "can I just talk to someone?", "I'd like a human, please."],
       follow=["contact"])

intent("human_reason", "handoff",
       ["I need to speak with an agent about a problem.", "I want a human to help with my order.",
        "Can someone from your team call me?", "I have a complicated issue, can I talk to a person?"],
       None, follow=["contact"])

intent("complaint", "handoff",
       ["This is ridiculous, I want a manager.", "I'm really unhappy with your service. Get me a person.",
        "Third time asking! Let me talk to someone.", "your bot is useless, human please"],
       {"friendly": ["I'm really sorry for the frustration! Let me get a member of our support team for you right away. Agents are around {hours}; otherwise they reply by email within {email_reply}."],
        "formal": ["I sincerely apologize for the frustration. I am transferring you to a member of our support team now. Agents are available {hours}; otherwise they reply by email within {email_reply}."],
        "concise": ["Sorry about that. Transferring you to an agent now. Hours: {hours}; otherwise email reply within {email_reply}."]},
       follow=["contact"])

intent("contact", "handoff",
       ["What's your phone number?", "How can I email you?", "What are your customer service hours?",
        "how do i contact support", "When is your support team available?", "Can I call you?"],
       {"friendly": ["You can call us at {phone} or email {email}! Agents are around {hours}, and emails get a reply within {email_reply}."],
        "formal": ["You may call us at {phone} or email {email}. Agents are available {hours}, and emails are answered within {email_reply}."],
        "concise": ["Phone {phone}, email {email}. Hours: {hours}. Email reply within {email_reply}."]},
       fu=["What's your phone number?", "and what are your hours?"],
       follow=["human_direct"])

ISSUES = ["My {product} arrived with a broken part.", "I was charged for an order I canceled.",
          "My package says delivered but it isn't here.", "I need to change a big order for my club.",
          "The wrong item came and I need it by Friday.", "My refund seems to be missing."]
HANDOFF_ASK = {
    "friendly": ["Sure, I'll get a teammate for you! So they can jump right in, could you tell me briefly what it's about, plus your order number if you have one?"],
    "formal": ["Certainly. So that our team can assist you promptly, could you please describe the issue briefly and share your order number, if you have one?"],
    "concise": ["Sure. Briefly, what's the issue? Include your order number if you have one."],
}
HANDOFF_DONE = {
    "friendly": ["Thanks! I'm transferring you to a member of our support team with your note about order {order}. Agents are around {hours}; outside those hours they reply by email within {email_reply}."],
    "formal": ["Thank you. I am transferring you to a member of our support team with your note regarding order {order}. Agents are available {hours}; outside those hours, they reply by email within {email_reply}."],
    "concise": ["Thanks. Transferring you to an agent with your note on order {order}. Hours: {hours}; outside them, email reply within {email_reply}."],
}
ESCALATE = ["That doesn't really help. Can I talk to someone?", "I'd still like to speak to a person.",
            "ok but can i talk to a human about this", "Can a real agent look at this?"]

# --------------------------------------------------------------------------
# Branching answers
# --------------------------------------------------------------------------

INTL_YES = {
    "friendly": ["Yes, we ship to {country}! It takes {intl_days} and costs {intl_price}, free over {free_intl}. Duties and import taxes are collected by the carrier at delivery."],
    "formal": ["Yes, we ship to {country}. Delivery takes {intl_days} and costs {intl_price}, or is free on orders over {free_intl}. Duties and import taxes are collected by the carrier upon delivery."],
    "concise": ["Yes. {country}: {intl_days}, {intl_price} (free over {free_intl}). Duties collected at delivery."],
}
INTL_NO = {
    "friendly": ["Sorry, we don't ship to {country} yet! Right now we deliver to {intl_list}."],
    "formal": ["I regret that we do not currently ship to {country}. We deliver to {intl_list}."],
    "concise": ["Not to {country}, sorry. We ship to {intl_list}."],
}
WINDOW_YES = {
    "friendly": ["Yes! At {days} days you're still inside our {return_win} window. Just make sure it's unused and in its original condition, and start the return under Account > Orders."],
    "formal": ["Yes. At {days} days you are within our {return_win} return window. The item must be unused and in its original condition; you may start the return under Account > Orders."],
    "concise": ["Yes, {days} days is within the {return_win} window. Must be unused. Start it under Account > Orders."],
}
WINDOW_NO = {
    "friendly": ["Sorry, at {days} days it's past our {return_win} return window. If it's faulty, though, our {warranty} warranty covers defects!"],
    "formal": ["I regret that at {days} days the item is outside our {return_win} return window. If it is faulty, our {warranty} warranty covers defects."],
    "concise": ["No, {days} days is past the {return_win} window. Defects are covered by the {warranty} warranty."],
}

# --------------------------------------------------------------------------
# The FAQ passages each reply rests on. One entry per template set above:
# an intent's name (its `ans`), a branch of a branching answer, or a shared
# reply. Titles are faq.md title paths without the H1 document title, as
# chatforge's knowledge base names passages (a heading path, then the bold
# entry, table row or bullet label; components joined by " › "); slots such
# as {product} and every key of F are filled in. An empty list: the reply
# rests on no passage (it asks for an order number, or says goodbye).
# Dialogs carry these as "passages", one list per assistant message.
# --------------------------------------------------------------------------

SEP = " › "
CONTACT = "Contact and support hours"
HUMAN_PASSAGES = ["Talking to a person", CONTACT + SEP + "Agents"]
US_OPTIONS = "Shipping › Which shipping options do you offer in the US?"
MORE_THAN_WINDOW = "Returns and exchanges › It has been more than {return_days} since delivery. Can I still return it?"

PASSAGES = {
    # shared replies
    "ask_order": [],
    "find_order": [CONTACT],
    "thanks": [],
    # orders
    "order_status": ["Orders › Where is my order?", "Shipping › When will my order ship?",
                     US_OPTIONS + SEP + "Standard"],
    "cancel_order": ["Orders › Can I cancel my order?"],
    "change_order": ["Orders › Can I change my order or the shipping address?"],
    "missing_item": ["Orders › An item is missing from my package."],
    "damaged_item": ["Orders › My item arrived damaged, or I received the wrong item."],
    "no_confirmation": ["Orders › How do I know my order went through?"],
    "gift_order": ["Orders › Can I send an order as a gift?"],
    # shipping
    "shipping_options": [US_OPTIONS],
    "express": [US_OPTIONS + SEP + "Express", US_OPTIONS + SEP + "Overnight",
                "Shipping › When will my order ship?", "Shipping › Do you ship to PO boxes?"],
    "free_shipping": ["Shipping › Do you offer free shipping?", US_OPTIONS + SEP + "Standard"],
    "intl_yes": ["Shipping › Do you ship internationally?"],
    "intl_no": ["Shipping › Do you ship internationally?"],
    "customs": ["Shipping › Do you ship internationally?"],
    "cutoff": ["Shipping › When will my order ship?"],
    "tracking": ["Shipping › How do I track my package?"],
    "late_package": ["Shipping › My package is late, or tracking says delivered but it is not here."],
    "po_box": ["Shipping › Do you ship to PO boxes?"],
    # returns
    "return_policy": ["Returns and exchanges › What is your return policy?"],
    "start_return": ["Returns and exchanges › How do I start a return?"],
    "window_yes": ["Returns and exchanges › What is your return policy?",
                   "Returns and exchanges › How do I start a return?"],
    "window_no": [MORE_THAN_WINDOW],
    "non_returnable": ["Returns and exchanges › What cannot be returned?",
                       "Returns and exchanges › What is your return policy?"],
    "exchange": ["Returns and exchanges › Can I exchange an item for another size or color?"],
    "return_cost": ["Returns and exchanges › What is your return policy?"],
    "used_item": ["Returns and exchanges › What cannot be returned?", "Products › Warranty"],
    "gift_return": ["Returns and exchanges › Can I return a gift?"],
    # refunds
    "refund_timing": ["Refunds › When will I get my refund?"],
    "refund_status": ["Refunds › My refund has not arrived.", "Refunds › When will I get my refund?"],
    "refund_method": ["Refunds › Where does the refund go?"],
    "shipping_refund": ["Refunds › Is shipping refunded?"],
    "cancel_refund": ["Refunds › I canceled my order. When do I get my money back?"],
    "partial_refund": ["Refunds › I returned only part of my order.", "Refunds › Is shipping refunded?"],
    # billing
    "payment_methods": ["Billing and payment › Which payment methods do you accept?"],
    "double_charge": ["Billing and payment › I see two charges for one order."],
    "charge_timing": ["Billing and payment › When is my card charged?"],
    "invoice": ["Billing and payment › Can I get an invoice?"],
    "promo_code": ["Billing and payment › How do promo codes work?"],
    "price_adjustment": ["Billing and payment › The price dropped after I bought something."],
    "declined_card": ["Billing and payment › My card was declined."],
    "gift_card": ["Billing and payment › Gift cards"],
    "currency": ["Billing and payment › Which currency do you charge in?"],
    "sales_tax": ["Billing and payment › Do you charge sales tax?"],
    # account
    "reset_password": ["Your account › I forgot my password."],
    "locked_account": ["Your account › My account is locked.", "Your account › I forgot my password."],
    "change_email": ["Your account › How do I change my email address?"],
    "delete_account": ["Your account › How do I delete my account?"],
    "unsubscribe": ["Your account › How do I unsubscribe from newsletters?"],
    "guest_orders": ["Your account › Do I need an account to order?"],
    "rewards": ["Your account › What is Northwind Rewards?"],
    "two_step": ["Your account › Can I turn on two-step verification?"],
    "update_address": ["Your account › How do I change my saved addresses?"],
    # products
    "product_price": ["Products › {product}"],
    "product_about": ["Products › {product}"],
    "product_weight": ["Products › {product}"],
    "product_water": ["Products › Water resistance and care › {product}"],
    "product_care": ["Products › Water resistance and care › {product}"],
    "sizing": ["Products › Sizing"],
    "warranty": ["Products › Warranty"],
    "restock": ["Products › When will a sold-out item be back?"],
    "price_match": ["Products › Do you price match?"],
    # handoff
    "human_direct": HUMAN_PASSAGES,
    "complaint": HUMAN_PASSAGES,
    "handoff_ask": [],
    "handoff_done": HUMAN_PASSAGES,
    "contact": [CONTACT + SEP + "Phone", CONTACT + SEP + "Email", CONTACT + SEP + "Agents"],
}

# Every reply template set, under the key PASSAGES uses.
REPLIES = {n: x["ans"] for n, x in I.items() if x["ans"] is not None}
REPLIES.update(ask_order=ASK_ORDER, find_order=FIND_ORDER, thanks=THANKS_REPLY,
               handoff_ask=HANDOFF_ASK, handoff_done=HANDOFF_DONE, intl_yes=INTL_YES, intl_no=INTL_NO,
               window_yes=WINDOW_YES, window_no=WINDOW_NO)
assert set(PASSAGES) == set(REPLIES), "PASSAGES and the reply templates differ: %s" % sorted(
    set(PASSAGES) ^ set(REPLIES))

# Key facts a reply may state that the fact patterns (numbers, prices,
# durations, menu paths, quoted labels, e-mail, phone) do not find in the
# passage. The checker makes sure each is in the passage's text.
KEY_FACTS = {
    "Shipping › Do you ship to PO boxes?": ["street address"],
    "Shipping › Do you ship internationally?": ["Canada", "EU countries", "duties"],
    "Returns and exchanges › What is your return policy?": ["prepaid", "unused"],
    "Returns and exchanges › What cannot be returned?": ["final-sale", "personalized", "unused"],
    "Refunds › Is shipping refunded?": ["original shipping"],
    "Refunds › I returned only part of my order.": ["sales tax"],
    "Refunds › Where does the refund go?": ["original payment method", "store credit"],
    "Billing and payment › Which payment methods do you accept?": ["PayPal", "Visa"],
    "Billing and payment › When is my card charged?": ["authorization hold"],
    "Billing and payment › How do promo codes work?": ["minimum spend", "combined"],
    "Billing and payment › My card was declined.": ["billing address"],
    "Billing and payment › Gift cards": ["never expire"],
    "Billing and payment › Which currency do you charge in?": ["US dollars"],
    "Billing and payment › Do you charge sales tax?": ["shipping address"],
    "Your account › Do I need an account to order?": ["guest checkout"],
    "Products › Sizing": ["true to size"],
}

# --------------------------------------------------------------------------
# User text noise
# --------------------------------------------------------------------------

SUBS = [("please", "pls"), ("you", "u"), ("thanks", "thx"), ("receive", "recieve"), ("address", "adress"),
        ("received", "recieved"), ("shipping", "shiping"), ("because", "cuz"), ("definitely", "definately"),
        ("are", "r"), ("what is", "whats"), ("I'm", "im"), ("don't", "dont"), ("can't", "cant")]


def add_typos(rng, text, protect):
    if rng.random() < 0.10:
        for a, b in SUBS:
            pat = r"\b%s\b" % re.escape(a)
            if re.search(pat, text, flags=re.I) and rng.random() < 0.7:
                text = re.sub(pat, b, text, count=1, flags=re.I)
                break
    if rng.random() < 0.12:
        words = text.split(" ")
        idx = [i for i, w in enumerate(words)
               if re.fullmatch(r"[a-z]{5,}[.,?!]?", w) and w.strip(".,?!") not in protect]
        if idx:
            i = rng.choice(idx)
            w = words[i]
            core, tail = re.match(r"([a-z]+)(.*)", w).groups()
            k = rng.randrange(1, len(core) - 2)
            op = rng.randrange(3)
            if op == 0:
                core = core[:k] + core[k + 1] + core[k] + core[k + 2:]
            elif op == 1:
                core = core[:k] + core[k + 1:]
            else:
                core = core[:k] + core[k] + core[k:]
            words[i] = core + tail
            text = " ".join(words)
    if rng.random() < 0.15:
        text = text.lower()
    if rng.random() < 0.10:
        text = text.rstrip(".?!")
    return text


def lower_first(s):
    if re.match(r"^(I\b|I'|NW-)", s):
        return s
    if re.match(r"^[A-Z][a-z]", s):
        return s[0].lower() + s[1:]
    return s


# --------------------------------------------------------------------------
# Dialog assembly
# --------------------------------------------------------------------------

def fmt(template, slots):
    vals = dict(F)
    vals.update(slots)
    return template.format(**vals)


class Gen:
    def __init__(self, seed, forbid_orders=(), forbid_users=(), forbid_first=()):
        self.rng = random.Random(seed)
        self.used_orders = set()
        self.seen = set()
        self.forbid_orders = set(forbid_orders)
        self.forbid_users = set(forbid_users)
        self.forbid_first = set(forbid_first)

    # ---- slots -------------------------------------------------------------
    def new_order(self):
        while True:
            n = "NW-%06d" % self.rng.randrange(100000, 1000000)
            if n not in self.used_orders and n not in self.forbid_orders and n != "NW-123456":
                self.used_orders.add(n)
                return n

    def set_order(self, s):
        if "order" not in s:
            o = self.new_order()
            s.update(order=o, order_l=o.lower(), digits=o[3:])

    def set_product(self, s, names):
        p = PRODUCT[self.rng.choice(names)]
        alias = self.rng.choice([p[0]] + p[1])
        s.update(product=p[0], alias=alias, alias_l=alias.lower(), price=p[2],
                 summary=p[3], weight=p[4], water=p[5], care=p[6])

    def fill_slots(self, s, kind):
        """Draw the slot `kind` anew; give every other missing slot a value."""
        rng = self.rng
        if kind == "wearable":
            self.set_product(s, WEARABLES)
        elif kind == "product" or "product" not in s:
            self.set_product(s, [p[0] for p in PRODUCTS])
        if kind == "country":
            s["country"] = rng.choice(NO_SHIP) if rng.random() < 0.3 else rng.choice(SHIP_TO)
        elif kind == "country_any" or "country" not in s:
            s["country"] = rng.choice(SHIP_TO)
        if kind == "days" or "days" not in s:
            s["days"] = str(rng.randrange(3, 30) if rng.random() < 0.5 else rng.randrange(31, 91))
        if kind == "amount" or "amount" not in s:
            s["amount"] = "$%d.%s" % (rng.randrange(12, 420), rng.choice(["00", "95", "99", "50", "90"]))
        if "date" not in s:
            s["date"] = "%s %d" % (rng.choice(MONTHS), rng.randrange(1, 29))

    # ---- pieces ------------------------------------------------------------
    def answer(self, it, style, s):
        """The intent's reply and the passages it rests on."""
        name = it["name"]
        if name == "international":
            key = "intl_no" if s["country"] in NO_SHIP else "intl_yes"
        elif name == "return_window":
            key = "window_yes" if int(s["days"]) <= 30 else "window_no"
        else:
            key = name
        return self.say(key, style, s)

    def say(self, key, style, s):
        """A reply from the template set `key` (see REPLIES) and its passages."""
        return self.reply(REPLIES[key][style], s), [fmt(t, s) for t in PASSAGES[key]]

    def reply(self, templates, s):
        text = fmt(self.rng.choice(templates), s)
        # "Country" at the start of a sentence: "the UK: ..." -> "The UK: ..."
        return re.sub(r"(^|[.!?] )the ", lambda m: m.group(1) + "The ", text)

    def user_text(self, templates, s, first):
        rng = self.rng
        t = fmt(rng.choice(templates), s)
        protect = {w.lower() for w in (s.get("alias", "") + " " + s.get("product", "")).split()}
        t = add_typos(rng, t, protect)
        if first and rng.random() < 0.22:
            t = rng.choice(USER_GREETING) + lower_first(t)
        return t

    def noisy(self, text):
        return add_typos(self.rng, text, set())

    # ---- one dialog --------------------------------------------------------
    def dialog(self, topic, style):
        for _ in range(500):
            d = self._try(topic, style)
            users = tuple(m["content"] for m in d["messages"] if m["role"] == "user")
            line = dumps(d)
            if line in self.seen or users in self.forbid_users or users[0] in self.forbid_first:
                continue
            if sum(len(m["content"]) for m in d["messages"]) > MAX_CHARS:
                continue
            self.seen.add(line)
            return d
        raise SystemExit("could not generate a fresh dialog for %s/%s" % (topic, style))

    def _try(self, topic, style):
        rng = self.rng
        s = {}
        names = [n for n, x in I.items() if x["topic"] == topic]
        it = I[rng.choice(names)]
        self.fill_slots(s, it["slots"])
        # product-ness of the context: may a follow-up say "it"?
        ctx = {"product": it["slots"] in ("product", "wearable")}
        turns = []   # [user, assistant, passages, intent name]

        if it["name"] == "human_reason":
            self.set_order(s)
            turns.append([self.user_text(it["user"], s, True), *self.say("handoff_ask", style, s), it["name"]])
            issue = fmt(rng.choice(ISSUES), s)
            tail = rng.choice([" Order {order}.", " My order is {order}.", " ({order})", " order number {order_l}"])
            turns.append([self.noisy(issue) + fmt(tail, s), *self.say("handoff_done", style, s), it["name"]])
        elif it["name"] == "human_direct" and rng.random() < 0.45:
            # a question from another topic first, then the escalation
            other = I[rng.choice([n for n, x in I.items() if x["topic"] != "handoff" and not x["order"]])]
            self.fill_slots(s, other["slots"])
            turns.append([self.user_text(other["user"], s, True), *self.answer(other, style, s), other["name"]])
            turns.append([self.noisy(rng.choice(ESCALATE)), *self.say("human_direct", style, s), it["name"]])
        elif it["order"]:
            if rng.random() < 0.5 or not it["user_o"]:
                turns.append([self.user_text(it["user"], s, True), *self.say("ask_order", style, s), it["name"]])
                if rng.random() < 0.18:
                    turns.append([self.noisy(rng.choice(DONT_HAVE)), *self.say("find_order", style, s), it["name"]])
                self.set_order(s)
                turns.append([fmt(rng.choice(GIVE_ORDER), s), *self.answer(it, style, s), it["name"]])
            else:
                self.set_order(s)
                turns.append([self.user_text(it["user_o"], s, True), *self.answer(it, style, s), it["name"]])
        else:
            turns.append([self.user_text(it["user"], s, True), *self.answer(it, style, s), it["name"]])

        # optional follow-up questions
        if len(turns) == 1 and rng.random() < 0.45:
            self._follow(it, style, s, ctx, turns)
            last = I[turns[-1][3]]
            if len(turns) < 3 and rng.random() < 0.3 and last["follow"]:
                self._follow(last, style, s, ctx, turns)
        # a closing thank-you, or a closer on the last reply
        if len(turns) < 4 and rng.random() < 0.2:
            turns.append([self.noisy(rng.choice(THANKS_USER)), *self.say("thanks", style, s), "thanks"])
        elif I.get(turns[-1][3], {}).get("topic") != "handoff" and not turns[-1][1].endswith("?"):
            turns[-1][1] += rng.choice(CLOSERS[style])
        turns[0][1] = self.opener(style, turns[0][1])

        msgs = [{"role": "system", "content": rng.choice(SYSTEMS)}]
        for u, a, _, _ in turns:
            msgs.append({"role": "user", "content": u})
            msgs.append({"role": "assistant", "content": a})
        return {"messages": msgs, "topic": topic, "style": style, "passages": [c for _, _, c, _ in turns]}

    def opener(self, style, a):
        rng = self.rng
        starts_warm = re.match(INTERJECTION, a) is not None
        if style == "friendly":
            if starts_warm or rng.random() < 0.6:
                return rng.choice(GREETINGS_FRIENDLY) + a
            return rng.choice(OPENERS["friendly"]) + a
        if style == "formal":
            if rng.random() < 0.3:
                return a
            if a.startswith("Thank"):
                return "Good day. " + a
            if a.startswith(("I apologize", "I sincerely", "I regret")):
                return rng.choice(["Thank you for contacting Northwind Outfitters. ",
                                   "Thank you for your message. "]) + a
            return rng.choice(OPENERS["formal"]) + a
        return a

    def _follow(self, prev, style, s, ctx, turns):
        rng = self.rng
        it = I[rng.choice(prev["follow"])]
        prefix = rng.choice(FOLLOW_PREFIX)

        def ask(text):
            return prefix + lower_first(text) if prefix else text

        if it["name"] == "human_direct":
            turns.append([self.noisy(rng.choice(it["fu"])), *self.say("human_direct", style, s), it["name"]])
            return
        kind = it["slots"]
        use_fu = bool(it["fu"]) and rng.random() < 0.6
        if kind in ("product", "wearable"):
            if not ctx["product"] or (kind == "wearable" and s["product"] not in WEARABLES):
                self.fill_slots(s, kind)     # a new product: name it
                use_fu = False
            ctx["product"] = True
        elif kind:
            self.fill_slots(s, kind)
        if kind in ("country", "country_any", "days", "amount") and not any("{" in x for x in it["fu"]):
            use_fu = False       # the new value must be stated
        pool = it["fu"] if use_fu else it["user"]
        if it["order"] and "order" not in s:
            turns.append([ask(self.user_text(pool, s, False)), *self.say("ask_order", style, s), it["name"]])
            self.set_order(s)
            turns.append([fmt(rng.choice(GIVE_ORDER), s), *self.answer(it, style, s), it["name"]])
            return
        turns.append([ask(self.user_text(pool, s, False)), *self.answer(it, style, s), it["name"]])


def build(gen, n, rotate):
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        style = STYLES[(i // len(TOPICS) + (i % len(TOPICS) if rotate else 0)) % len(STYLES)]
        out.append(gen.dialog(topic, style))
    gen.rng.shuffle(out)
    return out


def dumps(d):
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def write(path, text):
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except OSError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def stats(dialogs):
    n = len(dialogs)
    multi = sum(1 for d in dialogs if sum(m["role"] == "user" for m in d["messages"]) >= 2)
    turns = {}
    for d in dialogs:
        k = sum(m["role"] == "user" for m in d["messages"])
        turns[k] = turns.get(k, 0) + 1
    by_topic = {t: sum(d["topic"] == t for d in dialogs) for t in TOPICS}
    by_style = {s: sum(d["style"] == s for d in dialogs) for s in STYLES}
    chars = [sum(len(m["content"]) for m in d["messages"]) for d in dialogs]
    cites = [c for d in dialogs for c in d["passages"]]
    return dict(n=n, multi=multi, turns=turns, by_topic=by_topic, by_style=by_style,
                max_chars=max(chars), mean_chars=sum(chars) / n,
                cited=sum(1 for c in cites if c), uncited=sum(1 for c in cites if not c),
                distinct=len({t for c in cites for t in c}))


def stats_block(tr, ho, sizes, n_passages):
    lines = ["| | train.jsonl | heldout.jsonl |", "|---|---:|---:|",
             "| dialogs | %d | %d |" % (tr["n"], ho["n"]),
             "| multi-turn (2-4 user turns) | %d (%.0f%%) | %d (%.0f%%) |"
             % (tr["multi"], 100.0 * tr["multi"] / tr["n"], ho["multi"], 100.0 * ho["multi"] / ho["n"])]
    for k in sorted(set(tr["turns"]) | set(ho["turns"])):
        lines.append("| %d user turn%s | %d | %d |" % (k, "" if k == 1 else "s", tr["turns"].get(k, 0), ho["turns"].get(k, 0)))
    for t in TOPICS:
        lines.append("| topic `%s` | %d | %d |" % (t, tr["by_topic"][t], ho["by_topic"][t]))
    for s in STYLES:
        lines.append("| style `%s` | %d | %d |" % (s, tr["by_style"][s], ho["by_style"][s]))
    lines.append("| assistant turns with passages / without | %d / %d | %d / %d |"
                 % (tr["cited"], tr["uncited"], ho["cited"], ho["uncited"]))
    lines.append("| distinct passages cited (of %d in faq.md) | %d | %d |"
                 % (n_passages, tr["distinct"], ho["distinct"]))
    lines.append("| characters per dialog, mean / max | %.0f / %d | %.0f / %d |"
                 % (tr["mean_chars"], tr["max_chars"], ho["mean_chars"], ho["max_chars"]))
    lines.append("| file size (bytes) | %d | %d |" % (sizes[0], sizes[1]))
    return "\n".join(lines)


def update_readme(block):
    path = os.path.join(HERE, "README.md")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    begin, end = "<!-- stats:begin -->", "<!-- stats:end -->"
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write(path, head + begin + "\n" + block + "\n" + end + tail)
    return True


# --------------------------------------------------------------------------
# faq.md
# --------------------------------------------------------------------------

def faq_text():
    f = dict(F)
    ship_to = ", ".join(SHIP_TO)
    no_ship = ", ".join(NO_SHIP)
    rows = "\n".join("| %s | %s | %s | %s |" % (p[0], p[2], p[4], p[3][0].upper() + p[3][1:])
                     for p in PRODUCTS)
    care = "\n".join("- **%s**: %s %s" % (p[0], p[5], p[6]) for p in PRODUCTS)
    f.update(ship_to=ship_to, no_ship=no_ship, rows=rows, care=care)
    return rewrap(FAQ.format(**f))


def rewrap(text, width=79):
    """Re-fill prose paragraphs and list items after the slots went in."""
    out = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.split("\n")
        if lines[0].startswith(("#", "|")):
            out.append(block)
            continue
        head = []
        if lines[0].startswith("**") and lines[0].endswith("**"):
            head, lines = [lines[0]], lines[1:]
        items = []
        for line in lines:
            if line.startswith("- ") or not items:
                items.append(line.strip())
            else:
                items[-1] += " " + line.strip()
        body = [textwrap.fill(i, width, subsequent_indent="  " if i.startswith("- ") else "",
                              break_on_hyphens=False) for i in items]
        out.append("\n".join(head + body))
    return "\n\n".join(out) + "\n"


FAQ = """# {shop} - Customer FAQ

{shop} is an online shop for outdoor gear and home goods, from tents and rain
jackets to wool throws and cast iron skillets. This page answers the questions
our customers ask most. Everything here also applies when you chat with our
support assistant.

{shop} is a fictional shop: this FAQ is synthetic example data written for the
chatforge project.

## Contact and support hours

- Chat: the support assistant answers any time. Ask for a human and it hands
  you to a member of our support team.
- Agents: available {hours}.
- Email: {email}. We reply within {email_reply}, including to messages left
  outside support hours.
- Phone: {phone}, during agent hours.
- Website: {site}.

When you contact us about an order, please have your order number ready. It
starts with NW- followed by six digits (for example NW-123456) and appears in
your order confirmation email and under Account > Orders.

## Orders

**How do I know my order went through?**
We send an order confirmation email within {confirm_minutes} of checkout. If it
has not arrived, check your spam folder. Account holders can also see every
order under Account > Orders; guests can use Order lookup on our website with
their email address and order number.

**Where is my order?**
The current status of every order is shown under Account > Orders and in the
tracking link in your shipping confirmation email. An order moves through
Processing, Packed, Shipped and Delivered.

**Can I cancel my order?**
Yes, within {cancel_window} of placing it: go to Account > Orders and choose
Cancel order, or ask us in chat. After {cancel_window} the order is already
being packed and can no longer be canceled; you can return it free of charge
within {return_days} of delivery instead.

**Can I change my order or the shipping address?**
Within {cancel_window} of ordering you can edit the items and the shipping
address under Account > Orders > Edit order. Once packing has started the order
cannot be changed; unwanted items can then be returned or exchanged within
{return_days} of delivery.

**An item is missing from my package.**
Larger orders sometimes ship in more than one box, each with its own tracking
link, so check your shipping emails first. If an item is still missing, report
it within {report_days} of delivery and we reship it free of charge.

**My item arrived damaged, or I received the wrong item.**
Sorry about that. Send us a photo within {report_days} of delivery, by replying
in chat or emailing {email} with your order number. We send a free
replacement or refund you; in most cases you do not need to send the item back.

**Can I send an order as a gift?**
Yes. Tick "This is a gift" at checkout to add a free gift message (up to
{gift_msg_chars} characters) and a gift receipt without prices. The recipient
can return the gift within {return_days} of delivery for store credit.

## Shipping

**Which shipping options do you offer in the US?**

| Option | Delivery time | Price |
|---|---|---|
| Standard | {std_days} | {std_price}, free on orders over {free_us} |
| Express | {exp_days} | {exp_price} |
| Overnight | next business day | {ovn_price} |

Delivery times count from the day the order ships. We ship with UPS and USPS.

**When will my order ship?**
Orders placed before {cutoff} on a business day ship the same day. Orders
placed later ship on the next business day, and weekend orders ship on Monday.
Overnight orders must be placed before {cutoff} to arrive the next business day.

**Do you offer free shipping?**
Standard shipping is free on US orders over {free_us}. International shipping
is free on orders over {free_intl}.

**Do you ship to PO boxes?**
Standard shipping can be delivered to PO boxes. Express and Overnight need a
street address.

**Do you ship internationally?**
We ship to {intl_list}. Outside the US we currently deliver to: {ship_to}, and
the other EU countries. We do not ship to other countries yet (for example:
{no_ship}).

International delivery takes {intl_days} and costs a flat {intl_price}, free on
orders over {free_intl}. Duties and import taxes are not included in our prices;
the carrier collects them at delivery. Prices are in US dollars.

**How do I track my package?**
We email a tracking link as soon as your order ships; it is also shown under
Account > Orders. A new tracking number can take up to {track_update} to show
movement.

**My package is late, or tracking says delivered but it is not here.**
Check the tracking link first. If your order shipped more than {trace_days} ago
and still has not arrived, contact us: we open a trace with the carrier and
either reship the order or refund it.

## Returns and exchanges

**What is your return policy?**
You can return unused items in their original condition within {return_days} of
delivery. Returns within the US are free: we provide a prepaid UPS label. For
international orders, the customer pays the return shipping.

**How do I start a return?**
Go to Account > Orders and choose Return items. Guests use the Returns page with
their order number and email address. Print the prepaid label and drop the
parcel at any UPS location.

**It has been more than {return_days} since delivery. Can I still return it?**
No, returns are accepted only within {return_days} of delivery. If the item is
faulty, our {warranty} warranty covers defects in materials and workmanship.

**What cannot be returned?**
Final-sale items, gift cards and personalized items cannot be returned. Used
items cannot be returned either; returns must be unused and in their original
condition. Defective items are covered by the warranty.

**Can I exchange an item for another size or color?**
Yes, size and color exchanges are free within {return_days} of delivery. Choose
Return items under Account > Orders and select Exchange. We ship the
replacement as soon as the carrier scans your return.

**Can I return a gift?**
Yes, within {return_days} of delivery, using the order number on the gift
receipt. The refund is issued to you as store credit and the purchaser is not
notified.

## Refunds

**When will I get my refund?**
We process refunds within {refund_proc} after the return arrives at our
warehouse and email you when it is done. Your bank then takes {bank_days} to
show the money in your account.

**Where does the refund go?**
To the original payment method. Purchases paid with a gift card are refunded to
a gift card. If you prefer store credit, choose it when you start the return;
store credit is issued within {credit_days} of the return arriving.

**Is shipping refunded?**
The original shipping fee is not refunded, unless the item was defective or we
made a mistake. Return labels within the US are free.

**I returned only part of my order.**
You get back the price of each returned item plus its sales tax.

**I canceled my order. When do I get my money back?**
We charge your card only when an order ships, so a canceled order leaves just an
authorization hold. Your bank releases it within {hold_days}.

**My refund has not arrived.**
If more than {bank_days} have passed since our refund email, contact us with
your order number and a teammate will investigate.

## Billing and payment

**Which payment methods do you accept?**
Visa, Mastercard, American Express, Discover, PayPal, Apple Pay and Northwind
gift cards. We do not accept cash on delivery or checks.

**When is my card charged?**
When your order ships. At checkout we place only an authorization hold for the
order amount.

**I see two charges for one order.**
Usually one is the authorization hold from checkout, which your bank releases
within {hold_days}. If both charges are still there after that, send us your
order number and we will correct it.

**My card was declined.**
Make sure the billing address matches the one on file with your card exactly,
or try another card or PayPal. We cannot see or override card declines; your
bank can tell you why a payment was declined.

**Can I get an invoice?**
Yes. Download a PDF invoice under Account > Orders > Download invoice. Guests
can email {email} with their order number.

**Do you charge sales tax?**
Sales tax is added at checkout for US orders, based on the shipping address.
International orders are not charged US tax, but the carrier may collect duties
and import taxes.

**Which currency do you charge in?**
All prices are in US dollars. Banks outside the US may add a conversion fee.

**How do promo codes work?**
One code per order, entered at checkout. Codes cannot be combined and cannot be
added after the order is placed. Check the code's expiry date and minimum spend.

**The price dropped after I bought something.**
If our price drops within {adjust_days} of your purchase, we refund the
difference once; send us your order number. We do not match other stores'
prices.

**Gift cards**
Northwind gift cards never expire. Check the balance on our Gift Cards page and
enter the card number at checkout to use it. Gift cards cannot be returned.

## Your account

**Do I need an account to order?**
No, guest checkout is available. If you later create an account with the same
email address, your past guest orders appear in it automatically.

**I forgot my password.**
Click "Forgot password?" on the sign-in page and we email you a reset link. The
link is valid for {reset_minutes}; after that, request a new one.

**My account is locked.**
After {lock_tries} failed sign-in attempts an account is locked for
{lock_minutes} to keep it safe. Wait and try again, or reset your password.

**How do I change my email address?**
Go to Account > Profile and enter the new address. We send a confirmation link
to it; the change applies once you click the link.

**How do I change my saved addresses?**
Add or edit them under Account > Addresses. This does not change orders you
have already placed.

**Can I turn on two-step verification?**
Yes, under Account > Security. We then ask for a code whenever you sign in on a
new device.

**How do I unsubscribe from newsletters?**
Use the Unsubscribe link at the bottom of any newsletter, or switch newsletters
off under Account > Preferences. It takes up to {unsub_days}. Order and
shipping emails continue.

**How do I delete my account?**
Use Account > Privacy > Delete account, or ask us. Deletion is completed within
{delete_days}. We keep order records only as long as tax law requires.

**What is Northwind Rewards?**
Our free rewards program: members earn {points_rule}, and
{points_reward}. Points expire after {points_expiry} without a purchase.

## Products

Everything in our catalog is designed by {shop}.

| Product | Price | Weight | Description |
|---|---|---|---|
{rows}

**Water resistance and care**

{care}

**Sizing**
Our boots and apparel fit true to size. Every product page has a size chart.
If you are between sizes, we recommend sizing up. Size exchanges are free within
{return_days} of delivery.

**Warranty**
All Northwind gear has a {warranty} warranty against defects in materials and
workmanship. Send us a photo and your order number and we repair or replace the
item. Normal wear and tear and damage from misuse are not covered.

**When will a sold-out item be back?**
We cannot promise restock dates. Choose "Notify me" on the product page and we
email you as soon as the item is available again.

**Do you price match?**
We do not match other stores' prices. If our own price drops within
{adjust_days} of your purchase, we refund the difference once.

## Talking to a person

Ask the chat assistant for a human at any time and it transfers you to a member
of our support team. Agents are available {hours}. Outside those hours, leave
a message and we reply by email within {email_reply}. To help us pick up your
case quickly, include a short description of the issue and your order number.
"""


# --------------------------------------------------------------------------
# Checking "passages": titles must name passages of faq.md, and a reply must
# state at least one key fact of every passage it names.
# --------------------------------------------------------------------------

def faq_passages(md):
    """Title path (without the H1 title, joined by SEP) -> (text, kind).

    Splits Markdown the way chatforge's knowledge base does (see
    src/kb/ingest.rs): `#` headings form the path; a paragraph that starts
    with a bold question, or a bold line of its own, opens an entry that runs
    to the next entry or heading; each table row is a passage titled by its
    first cell, its text naming the columns; each labelled bullet
    (`- **Label**: ...` or `- Label: ...`) is a passage titled by its label;
    other prose is titled by its heading path. The H1 is dropped from titles.
    """
    out = {}
    heads = []          # [(depth, title)]
    entry = None        # [title, [text]]
    prose = []

    def path():
        return [t for d, t in heads if d > 1]

    def add(title, text, kind):
        if title and text.strip():
            key = SEP.join(title)
            old = out.get(key, ("", kind))[0]
            out[key] = ((old + "\n" if old else "") + text.strip(), kind)

    def flush():
        nonlocal entry, prose
        if entry is not None:
            add(path() + [entry[0]], "\n".join([entry[0]] + entry[1]), "entry")
            entry = None
        if prose:
            add(path(), "\n".join(prose), "prose")
            prose = []

    def text_of(t):
        (entry[1] if entry is not None else prose).append(t)

    for block in md.strip("\n").split("\n\n"):
        lines = block.split("\n")
        first = lines[0]
        m = re.match(r"(#+) (.*)", first)
        if m:
            flush()
            depth = len(m.group(1))
            heads = [h for h in heads if h[0] < depth] + [(depth, m.group(2).strip())]
            if m.group(2).strip().endswith("?"):
                heads.pop()
                entry = [m.group(2).strip(), []]
            continue
        if first.startswith("|"):
            rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines]
            header, body = rows[0], [r for r in rows[2:] if r and r[0]]
            rendered = []
            for r in body:
                text = "; ".join("%s: %s" % (h, v) if h else v for h, v in zip(header, r) if v)
                add(path() + ([entry[0]] if entry else []) + [r[0]], text, "row")
                rendered.append(text)
            text_of("\n".join(rendered))
            continue
        if first.startswith("- "):
            items = []
            for l in lines:
                if l.startswith("- "):
                    items.append(l[2:].strip())
                else:
                    items[-1] += " " + l.strip()
            for item in items:
                if item.startswith("**"):
                    m = re.match(r"\*\*(.+?)\*\*\s*:(.*)", item) or re.match(r"\*\*(.+?):\*\*(.*)", item)
                    label, body = (m.group(1).rstrip(":").strip(), m.group(2).strip()) if m else ("", "")
                else:
                    label, _, body = item.partition(":")
                    label, body = label.strip(), body.strip()
                    if not (1 <= len(label.split()) <= 4) or re.search(r"[.?!,()]", label) or "http" in label:
                        label = ""
                if label and body:
                    add(path() + ([entry[0]] if entry else []) + [label], "%s: %s" % (label, body), "bullet")
                text_of("- " + item.replace("**", ""))
            continue
        m = re.match(r"\*\*(.+?)\*\*(.*)", block, flags=re.S)
        if m and (m.group(1).strip().endswith("?") or m.group(2).strip() == "" or m.group(2).startswith("\n")):
            flush()
            entry = [m.group(1).strip(), []]
            if m.group(2).strip():
                entry[1].append(m.group(2).strip())
            continue
        text_of(block.replace("**", ""))
    flush()
    return out


def norm(text):
    """Lowercase, one space between words, "30-day" -> "30 day", "30 days" -> "30 day"."""
    text = re.sub(r"\s+", " ", text).lower()
    return re.sub(r"\b(\d+)[ -](business day|day|hour|minute|month|year)s?\b", r"\1 \2", text)


FACT_PATTERNS = [
    r"[\w.]+@[\w.]+\w",                                    # e-mail
    r"\b\d-\d{3}-\d{3}-\d{4}\b",                           # phone
    r"\$\d+(?:\.\d\d)?",                                   # price
    r"\baccount(?: > [a-z]+)+",                            # menu path
    r"\bnw-\d{6}\b",                                       # order number format
    r"\b[a-z]{2,}\d+\b",                                   # ratings like IPX4
    r"\"[^\"]+\"",                                         # quoted labels: "Notify me"
    r"\bnext business day\b",                              # durations without digits
    # numbers with their unit: 5-7 business days, 2 pm, 2.1 kg, 200 characters
    r"(?<![\w$.\-])\d+(?:\.\d+)?(?:-\d+)?(?: business day| day| hour| minute| month| year| [a-z]+|-[a-z]+)?",
]


def key_facts(title, passage):
    """The facts a reply resting on this passage may state (normalized)."""
    text, kind = passage
    last = title.split(SEP)[-1]
    lines = text.split("\n")
    if lines[0] == last:               # an entry opens with its question
        lines = lines[1:]
    body = norm(" ".join(lines))
    if body.startswith(norm(last) + ": "):     # "Label: ..." of a bullet or row
        body = body[len(norm(last)) + 2:]
    facts = set()
    for p in FACT_PATTERNS:
        facts.update(m.strip() for m in re.findall(p, body))
    for extra in KEY_FACTS.get(title, []):
        if norm(extra) not in norm(text):
            raise SystemExit("KEY_FACTS: %r is not in passage %r" % (extra, title))
        facts.add(norm(extra))
    if kind != "row":
        # a whole sentence of the passage, quoted verbatim
        facts.update(x for x in re.split(r"(?<=[.!?]) ", body) if len(x.split()) >= 4)
    return {f for f in facts if f}


def check_passages(dialogs, faq):
    """Problems with the dialogs' "passages", and what was checked.

    Problems are (kind, message) pairs: kind "title" for a title that names
    no passage of faq.md, "fact" for an assistant reply that names a passage
    but states none of its key facts, "shape" for a list per reply missing.
    Also returns the number of replies naming passages, how many of them
    have a problem, and faq.md's passages.
    """
    passages = faq_passages(faq)
    facts = {t: key_facts(t, x) for t, x in passages.items()}
    problems = []
    cited = failed = 0
    for d in dialogs:
        replies = [m["content"] for m in d["messages"] if m["role"] == "assistant"]
        if len(d["passages"]) != len(replies):
            problems.append(("shape", "%d passage lists for %d replies" % (len(d["passages"]), len(replies))))
            failed += 1
            continue
        for reply, titles in zip(replies, d["passages"]):
            r = norm(reply)
            bad = []
            for title in titles:
                if title not in passages:
                    bad.append(("title", "no passage %r in faq.md" % title))
                elif not any(f in r for f in facts[title]):
                    bad.append(("fact", "%s\n    reply: %s\n    facts: %s"
                                % (title, reply, "; ".join(sorted(facts[title]))[:300])))
            cited += bool(titles)
            failed += bool(bad)
            problems += bad
    return problems, cited, failed, passages


# --------------------------------------------------------------------------

def main():
    train = build(Gen(TRAIN_SEED), N_TRAIN, rotate=False)
    train_users = set()
    train_first = set()
    train_orders = set()
    for d in train:
        users = tuple(m["content"] for m in d["messages"] if m["role"] == "user")
        train_users.add(users)
        train_first.update(users)
        for m in d["messages"]:
            train_orders.update(re.findall(r"NW-\d{6}", m["content"], flags=re.I))
    train_orders = {o.upper() for o in train_orders}
    held = build(Gen(HELDOUT_SEED, forbid_orders=train_orders, forbid_users=train_users,
                     forbid_first=train_first), N_HELDOUT, rotate=True)

    train_lines = [dumps(d) for d in train]
    held_lines = [dumps(d) for d in held]
    assert len(set(train_lines)) == len(train_lines), "duplicate train dialog"
    assert not set(held_lines) & set(train_lines), "heldout dialog copied from train"
    for d in train + held:
        assert d["topic"] in TOPICS and d["style"] in STYLES
        assert all("{" not in m["content"] and "}" not in m["content"] for m in d["messages"])
    faq = faq_text()
    problems, cited, failed, passages = check_passages(train + held, faq)
    if problems:
        for kind, msg in problems[:20]:
            print("%s: %s" % (kind, msg), file=sys.stderr)
        kinds = {}
        for kind, _ in problems:
            kinds[kind] = kinds.get(kind, 0) + 1
        raise SystemExit("passage check failed: %d of %d replies that name passages (%s)"
                         % (failed, cited, ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))

    train_text = "\n".join(train_lines) + "\n"
    held_text = "\n".join(held_lines) + "\n"
    write(os.path.join(HERE, "train.jsonl"), train_text)
    write(os.path.join(HERE, "heldout.jsonl"), held_text)
    write(os.path.join(HERE, "faq.md"), faq)

    tr, ho = stats(train), stats(held)
    block = stats_block(tr, ho, (len(train_text.encode()), len(held_text.encode())), len(passages))
    update_readme(block)
    print(block)
    print("passage check: %d replies name passages, each states a key fact of every passage it names"
          % cited)
    return 0


if __name__ == "__main__":
    sys.exit(main())
