# ruff: noqa: E501  (one topic per line reads better than wrapped tuples)
"""What the synthetic users ask about: everyday topics, the ways to ask, and what helps.

Each topic carries the prompts that ask about it, a noun phrase the answers use
to refer back to it (so an answer is about the prompt in every style that
allows it), and three or four short tips. ``mode`` says whether the tips are
things to do ("put the egg in boiling water") or facts ("sunlight scatters off
air"): a few answer templates only read well with one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Topic:
    prompts: tuple[str, ...]  # complete user messages asking about the topic
    subject: str  # noun phrase the answers use ("boiling an egg")
    tips: tuple[str, ...]  # 3-4 lower-case clauses without a final period
    mode: Literal["do", "fact"] = "do"  # tips are actions ("do") or explanations ("fact")


# "how do I ..." questions: (task, subject, tips); prompts come from HOWTO_PROMPTS.
HOWTO_PROMPTS = (
    "how do I {task}?",
    "what is the best way to {task}?",
    "can you tell me how to {task}?",
    "I want to {task}. any tips?",
    "help me {task}, please.",
    "any advice on how to {task}?",
    "how can I {task}?",
    "what's the easiest way to {task}?",
)
HOWTO = (
    ("boil an egg", "boiling an egg", ("put the egg in boiling water", "wait about nine minutes", "cool it in cold water", "peel it under the tap")),
    ("make a cup of tea", "making tea", ("boil fresh water", "let the tea steep for three minutes", "add milk or lemon if you like")),
    ("fall asleep faster", "falling asleep", ("keep the bedroom dark and cool", "put your phone away an hour before bed", "go to bed at the same time every night")),
    ("save money on groceries", "saving on groceries", ("plan your meals for the week", "make a shopping list and stick to it", "buy store brands", "never shop when you are hungry")),
    ("learn to play guitar", "learning guitar", ("practice fifteen minutes every day", "start with a few basic chords", "play songs you love")),
    ("start running", "starting to run", ("begin with short easy runs", "mix running and walking", "get comfortable shoes", "rest between runs")),
    ("clean a cast iron pan", "cleaning a cast iron pan", ("rinse it with hot water", "scrub it with salt", "dry it right away", "rub in a little oil")),
    ("write a cover letter", "writing a cover letter", ("address the hiring manager by name", "explain why you want this job", "keep it to one page")),
    ("water my plants", "watering plants", ("check the soil with your finger", "water when the top inch is dry", "use a pot with drainage holes")),
    ("get rid of hiccups", "stopping hiccups", ("hold your breath for ten seconds", "drink a glass of cold water slowly", "breathe into a paper bag")),
    ("make friends in a new city", "making friends in a new city", ("join a club or a class", "say yes to invitations", "talk to your neighbours")),
    ("study for an exam", "studying for an exam", ("start a week early", "test yourself instead of rereading", "sleep well the night before")),
    ("bake bread", "baking bread", ("mix flour, water, salt and yeast", "let the dough rise for two hours", "bake it in a hot oven")),
    ("fix a flat bike tire", "fixing a flat tire", ("take the wheel off", "find the hole in the tube", "patch it or fit a new tube", "pump it up")),
    ("tie a tie", "tying a tie", ("drape the tie around your neck", "cross the wide end over the narrow end", "pull it through the loop and tighten")),
    ("keep my cat off the table", "keeping a cat off the table", ("give it a tall cat tree instead", "keep the table clear of food", "reward it when it stays down")),
    ("make pancakes", "making pancakes", ("whisk flour, eggs and milk", "heat a pan with a little butter", "flip them when bubbles appear")),
    ("stop procrastinating", "beating procrastination", ("break the task into tiny steps", "work for twenty five minutes then rest", "turn off notifications")),
    ("pack for a trip", "packing for a trip", ("make a list first", "roll your clothes", "bring one pair of comfortable shoes")),
    ("learn a new language", "learning a language", ("practice a little every day", "talk with native speakers", "watch shows with subtitles")),
    ("remove a coffee stain", "removing a coffee stain", ("blot it with cold water", "rub in a little dish soap", "wash it before it dries")),
    ("cook rice", "cooking rice", ("rinse the rice", "use two cups of water per cup of rice", "simmer with the lid on for fifteen minutes")),
    ("ask for a raise", "asking for a raise", ("list what you achieved this year", "check what others earn", "pick a calm moment to ask")),
    ("meditate", "meditating", ("sit somewhere quiet", "focus on your breathing", "start with five minutes a day")),
    ("paint a room", "painting a room", ("move the furniture out", "tape the edges", "use two thin coats")),
    ("back up my photos", "backing up photos", ("copy them to an external drive", "turn on a cloud backup", "keep two copies in different places")),
    ("make a budget", "making a budget", ("write down your income", "track what you spend for a month", "set a limit for each category")),
    ("grow tomatoes", "growing tomatoes", ("plant them in full sun", "water them deeply twice a week", "tie the stems to a stake")),
    ("write a birthday card", "writing a birthday card", ("start with a warm greeting", "share a favourite memory", "end with a wish for the year")),
    ("iron a shirt", "ironing a shirt", ("start with the collar", "iron the sleeves next", "finish with the front and back")),
)

# "my X is Y" problems: (problem, subject, tips); prompts come from PROBLEM_PROMPTS.
PROBLEM_PROMPTS = (
    "{problem}. what should I do?",
    "help, {problem}!",
    "{problem}, any ideas?",
    "{problem}. can you help?",
    "ugh, {problem}. how do I fix it?",
    "what can I do? {problem}.",
)
PROBLEMS = (
    ("my house is too hot", "a house that is too hot", ("close the blinds during the day", "open the windows at night", "run a fan near a window")),
    ("my coffee tastes bitter", "bitter coffee", ("use a coarser grind", "lower the water temperature", "brew it for less time")),
    ("my phone battery dies too fast", "a phone battery that dies fast", ("lower the screen brightness", "close apps you do not use", "turn off background refresh")),
    ("my dog barks at night", "a dog that barks at night", ("take it for a long walk in the evening", "keep the curtains closed", "give it a chew toy at bedtime")),
    ("my laptop is very slow", "a slow laptop", ("restart it", "remove programs you do not use", "free up disk space")),
    ("my bread is too dense", "dense bread", ("let the dough rise longer", "knead it a bit more", "check that the yeast is fresh")),
    ("my wifi keeps dropping", "wifi that keeps dropping", ("restart the router", "move the router higher up", "update its firmware")),
    ("my neighbours are too loud", "loud neighbours", ("talk to them politely", "use earplugs at night", "write them a friendly note")),
    ("my plants have yellow leaves", "yellow leaves", ("water them less often", "give them more light", "add some plant food")),
    ("my shoes smell bad", "smelly shoes", ("sprinkle baking soda inside", "let them dry in the sun", "wear socks every time")),
    ("my room is always messy", "a messy room", ("tidy for ten minutes every evening", "give everything a fixed place", "get rid of things you never use")),
    ("my back hurts from sitting", "back pain from sitting", ("stand up every half hour", "raise your screen to eye level", "stretch in the morning")),
    ("my soup is too salty", "salty soup", ("add more water or stock", "add a peeled potato", "squeeze in some lemon juice")),
    ("my car will not start", "a car that will not start", ("check the battery", "make sure there is fuel", "call a mechanic if it still fails")),
    ("my kids will not eat vegetables", "kids who skip vegetables", ("let them help you cook", "hide vegetables in sauces", "serve small portions first")),
    ("my sink is clogged", "a clogged sink", ("pour boiling water down the drain", "use a plunger", "try baking soda and vinegar")),
    ("my hands are always cold", "cold hands", ("wear gloves outside", "move around more", "drink something warm")),
    ("my eyes are tired after work", "tired eyes", ("look away from the screen every twenty minutes", "blink more often", "lower the screen brightness")),
    ("my cat scratches the sofa", "a cat that scratches the sofa", ("get a scratching post", "put tape on the sofa corners", "trim its claws")),
    ("my inbox is overflowing", "an overflowing inbox", ("unsubscribe from newsletters", "archive old emails", "answer short emails right away")),
    ("my rice is always sticky", "sticky rice", ("rinse the rice first", "use a little less water", "let it rest before serving")),
    ("my headphones keep tangling", "tangled headphones", ("wrap them around two fingers", "keep them in a small case", "use a clip")),
    ("my garden is full of weeds", "a garden full of weeds", ("pull them after it rains", "cover the soil with mulch", "weed a little every week")),
    ("my bike chain squeaks", "a squeaky bike chain", ("clean the chain", "add a few drops of oil", "wipe off the extra oil")),
    ("I cannot focus at work", "focus at work", ("put your phone in a drawer", "work in short blocks", "take a real lunch break")),
)

# Pet names: every naming prompt draws three of these as its tips.
NAME_PROMPTS = (
    "give me a name for my {pet}.",
    "what should I name my new {pet}?",
    "I need a name for my {pet}.",
    "suggest a good name for my {pet}.",
    "name ideas for my {pet}?",
)
PETS = ("cat", "dog", "goldfish", "parrot", "hamster", "rabbit", "turtle", "puppy", "kitten", "horse")
PET_NAMES = (
    "Luna", "Milo", "Pepper", "Biscuit", "Nova", "Ziggy", "Maple", "Pickles", "Shadow", "Coco",
    "Bubbles", "Captain", "Mochi", "Pixel", "Olive", "Rocky", "Sunny", "Waffles", "Tofu", "Ginger",
)
NAME_TIPS = ("call it {name}", "go with {name}", "try {name}")

# Recommendations: (prompts, subject, tips).
RECOMMENDATIONS = (
    (("what should I cook for dinner tonight?", "any dinner ideas for tonight?", "I don't know what to make for dinner."), "dinner tonight", ("make a quick vegetable stir fry", "try pasta with tomato sauce", "bake salmon with potatoes")),
    (("what book should I read next?", "can you recommend a good book?", "I need something new to read."), "your next book", ("read a classic mystery novel", "try a short story collection", "pick a popular science book")),
    (("what should I do this weekend?", "any ideas for the weekend?", "I'm bored, what can I do this weekend?"), "the weekend", ("go for a hike", "visit a local museum", "invite friends for a board game night")),
    (("what gift should I buy my mom?", "gift ideas for my mom?", "help me pick a present for my mom."), "a gift for your mom", ("give her a nice plant", "book a dinner together", "make a photo album")),
    (("what movie should I watch tonight?", "recommend a movie for tonight.", "any good movie ideas?"), "a movie tonight", ("watch a classic comedy", "try an animated film", "pick a documentary about nature")),
    (("what should I eat for breakfast?", "healthy breakfast ideas?", "what is a good breakfast?"), "breakfast", ("have oatmeal with fruit", "make eggs on toast", "try yogurt with nuts")),
    (("where should I go on vacation?", "vacation ideas?", "recommend a place for a holiday."), "your vacation", ("visit a quiet beach town", "explore a city you have never seen", "rent a cabin in the mountains")),
    (("what hobby should I start?", "suggest a new hobby for me.", "I want a new hobby, any ideas?"), "a new hobby", ("try drawing", "learn to cook new dishes", "start a small garden")),
    (("what should I bring to a picnic?", "picnic ideas?", "help me plan a picnic."), "a picnic", ("pack sandwiches and fruit", "bring a big blanket", "take a frisbee")),
    (("what game should I play with my kids?", "fun games for kids?", "my kids are bored, what can we play?"), "games with your kids", ("play hide and seek", "build a blanket fort", "try a simple card game")),
    (("what podcast should I listen to?", "recommend a podcast.", "any good podcasts?"), "podcasts", ("try a history podcast", "listen to a comedy show", "pick a science podcast")),
    (("what plant is easy to keep indoors?", "recommend an easy house plant.", "which plant is hard to kill?"), "an easy house plant", ("get a snake plant", "try a pothos", "choose a small cactus")),
    (("what should I make for a party?", "party food ideas?", "snacks for a party?"), "party food", ("make a big bowl of popcorn", "serve mini sandwiches", "set out chips and salsa")),
    (("how should I spend a rainy day?", "rainy day ideas?", "it's raining, what can I do?"), "a rainy day", ("bake some cookies", "start a puzzle", "watch a film series")),
    (("what exercise should I do at home?", "home workout ideas?", "how can I exercise without a gym?"), "exercise at home", ("do push ups and squats", "follow a yoga video", "jump rope for ten minutes")),
)

# "why ..." questions: (prompts, subject, facts).
EXPLANATIONS = (
    (("why is the sky blue?", "can you explain why the sky is blue?", "why does the sky look blue?"), "the blue sky", ("sunlight scatters off tiny air molecules", "blue light scatters more than red light", "so we see blue from every direction")),
    (("why do cats purr?", "what makes a cat purr?", "why does my cat purr?"), "cats purring", ("cats purr when they feel safe", "purring can also calm them when hurt", "the sound comes from muscles in the throat")),
    (("why do leaves change colour in autumn?", "why do leaves turn red and yellow?", "what makes autumn leaves change colour?"), "autumn leaves", ("trees stop making green chlorophyll", "yellow and red colours then show through", "the shorter days trigger the change")),
    (("how does a rainbow form?", "why do we see rainbows?", "what makes a rainbow?"), "rainbows", ("sunlight enters raindrops", "the drops bend the light into colours", "you see it with the sun behind you")),
    (("why do we need sleep?", "what is sleep for?", "why is sleep important?"), "sleep", ("sleep lets the brain store memories", "the body repairs itself at night", "too little sleep weakens your mood")),
    (("why is the ocean salty?", "what makes sea water salty?", "where does the salt in the sea come from?"), "salty oceans", ("rivers carry salt from rocks into the sea", "the water evaporates but the salt stays", "this has gone on for millions of years")),
    (("how do airplanes fly?", "what keeps a plane in the air?", "why can planes fly?"), "flight", ("the wings push air downward", "that creates lift", "the engines keep the plane moving forward")),
    (("why does bread go stale?", "what makes bread stale?", "why does bread get hard?"), "stale bread", ("the starch in bread loses water", "the crumb gets firm and dry", "keeping it in a bag slows this down")),
    (("why do we yawn?", "what makes people yawn?", "why is yawning contagious?"), "yawning", ("yawning may cool the brain", "it often happens when we are tired", "seeing others yawn makes us copy them")),
    (("how do vaccines work?", "what does a vaccine do?", "why do vaccines protect us?"), "vaccines", ("a vaccine shows the body a harmless piece of a germ", "the immune system learns to recognise it", "it can then fight the real germ faster")),
    (("why does ice float?", "why doesn't ice sink?", "how can ice float on water?"), "floating ice", ("water expands when it freezes", "so ice is lighter than the same amount of water", "that is why it floats")),
    (("why can I see the moon during the day?", "why is the moon out in the daytime?", "how is the moon visible during the day?"), "the daytime moon", ("the moon is bright enough to see in daylight", "it is above the horizon for about half the day", "its orbit does not follow the sun")),
    (("why do onions make you cry?", "what makes onions sting my eyes?", "why do I cry when I cut onions?"), "onions and tears", ("cutting an onion releases a gas", "the gas irritates your eyes", "your eyes make tears to wash it away")),
    (("how does a fridge keep food cold?", "how does a refrigerator work?", "what makes a fridge cold?"), "fridges", ("a liquid inside absorbs heat as it evaporates", "a pump moves that heat outside", "the cold air keeps food fresh")),
    (("why do stars twinkle?", "what makes stars twinkle?", "why do stars flicker at night?"), "twinkling stars", ("starlight passes through moving air", "the air bends the light a little", "so the star seems to flicker")),
)


def _build_topics() -> tuple[Topic, ...]:
    topics: list[Topic] = []
    for task, subject, tips in HOWTO:
        prompts = tuple(template.format(task=task) for template in HOWTO_PROMPTS)
        topics.append(Topic(prompts, subject, tips))
    for problem, subject, tips in PROBLEMS:
        prompts = tuple(template.format(problem=problem) for template in PROBLEM_PROMPTS)
        topics.append(Topic(prompts, subject, tips))
    for prompts, subject, tips in RECOMMENDATIONS:
        topics.append(Topic(prompts, subject, tips))
    for prompts, subject, facts in EXPLANATIONS:
        topics.append(Topic(prompts, subject, facts, mode="fact"))
    return tuple(topics)


# Every topic except the pets, whose tips are drawn per prompt (see corpus.sample_case).
TOPICS: tuple[Topic, ...] = _build_topics()
