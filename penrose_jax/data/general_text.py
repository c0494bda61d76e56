"""A small general-English text shipped with the package, used for replay when the configured
general text (e.g. ../shared/data/general_eval/lambada_openai.jsonl) is missing. Written for
this package; everyday topics, unrelated to the materials corpus."""

FALLBACK_GENERAL_TEXT = (
    "The market opened early on Saturday. Farmers set out crates of apples, pears and late "
    "tomatoes, and the baker at the corner stall sold out of bread before nine o'clock.",
    "She folded the letter twice, slipped it into the envelope and walked to the post office. "
    "The clerk weighed it, asked whether it should go by air, and handed her the receipt.",
    "Rain had fallen all night, so the path through the woods was soft and dark. The children "
    "jumped over the puddles while their grandfather pointed out the tracks of a fox.",
    "To make a simple soup, soften an onion in butter, add chopped carrots and potatoes, cover "
    "them with stock and let everything simmer until the vegetables are tender.",
    "The train was late again, and the platform filled with people checking their phones. When "
    "it finally arrived, everyone squeezed in and the doors closed with a sigh.",
    "Libraries lend more than books. Many of them offer quiet rooms for study, free internet "
    "access, language classes and story hours for young children on weekday mornings.",
    "He had never learned to swim, so the summer he turned thirty he signed up for lessons. By "
    "August he could cross the pool twice without stopping, and he was proud of it.",
    "A good map shows what matters and leaves out the rest. A hiking map marks paths, streams "
    "and steep slopes, while a city map marks streets, stations and public buildings.",
    "The team practised every evening for a month. On the day of the final they were nervous, "
    "but they played calmly, scored early and held on to win by a single goal.",
    "Old houses creak as the wood expands and contracts with the temperature. The noise can be "
    "unsettling at night, but it is usually nothing more than the building settling.",
    "When the power went out, the neighbours gathered on the steps with candles and a radio. "
    "Someone brought lemonade, and the evening turned into an unplanned street party.",
    "Bees visit thousands of flowers to collect nectar. Back in the hive the nectar is passed "
    "from bee to bee and slowly thickened into honey, which feeds the colony in winter.",
)
