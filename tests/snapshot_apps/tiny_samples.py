"""Real live samples of the `tiny` preset (seed 42, max_steps 300, eval_interval 50), copied
from its metrics.jsonl, so the replayed dashboard shows what the panel really shows."""

PROMPTS = ["ROMEO:", "To be, or not to be", "First Citizen:"]

# step -> (greedy, sampled): one continuation of each prompt
TEXTS = {
    50: (
        [
            "\n" * 48,
            "," + "\n" * 37 + "," * 10,
            "\n" * 48,
        ],
        [
            "\n name: this\n having:\n your I;\n do, iness, her than\n gracean to "
            "in I that it,'s\n\n,st, anAside my boyal you a the he good I\n both:",
            "er awayies:.o such you\n a\n a thus\n., bei, that,\n I never.ud:\n\n I\n"
            "\n my\n the, we, in, for ye SCENE here on,\n on",
            " not.And\n what\n have I\n\n nor\n a\n\n\n\n an\n will, notent, thou I, to, "
            "the\n noable\nAndmsif all\n\n,, the in,\n thee in",
        ],
    ),
    100: (
        [
            "<|im_start|> lord,\nAnd the lord, I I I I I I I I I I I I I I I I "
            "I I I I I I I I I I I I I I I I I I I\nAnd the lord,",
            ",\nAnd the lord,\nAnd the lord, I I I I I I I\nAnd the lord, I I I "
            "I I I I\nAnd, I I I I I I I I I I I I I I I",
            "<|im_start|> lord,\nAnd the lord,\nAnd,\nAnd, I I I I I I I I I I I "
            "I I I I I I I I I I I I I I I I I I I I I I I",
        ],
        [
            "VIOLA:KING native:Br:To yourmorrow;\n do, I much, her than\nAnd your "
            "drink in thycon: Go's good it,\nBut anvel, boyal:Exitary he good "
            "I\ntwas:",
            " atisies: comeo is you the very soul'd thus\n[<|im_start|>Thisi, "
            "that deed. I never.\nThe state upon I take doubt bound, theis we, "
            "would I will ye\nOfbrance? and",
            "An:And more what\nIf I [ trumpet't, a as\nSIRiedart: That people not "
            "if all thou I why to not the IV of am\nAnd theifness?\nThat's beat "
            "in,\nWith here",
        ],
    ),
    150: (
        [
            "\nAnd, I'll not the lord,\nAnd, I'll not the lord, and the lord,\nAnd, "
            "I'll not the lord, and the lord,\nAnd, I'll not the lord, I the lord,",
            ",\nAnd, the lord, the lord, the lord,\nAnd, I the lord, I the lord,\n"
            "And, I the lord, I the lord,\nAnd, I'll not the lord, I the lord,",
            "\nAnd, I'll not,\nAnd, I'll, I the lord,\nAnd, I'll, I the lord,\nAnd, "
            "I'll, I the lord,\nAnd, I'll not the lord, I the",
        ],
        [
            " ' name: this the both:\nThat this bestow! do, I is a her\nI grace, "
            "I'll fares that it thine's good back,\nBut anAside]\nThe you a wife "
            "he good IEnter both me",
            " kings,\nACHILLES: Why is you the very soul a place\n[Exit: When are "
            "the deed. I never.\n[Exeunt upon I be doubt my train:\nwould, sir, "
            "for ye to here;\nGar",
            "<|im_end|>",
        ],
    ),
    200: (
        [
            " I am I am I am I have,\n[Enter the lord, I am you, I am\n[Enter the "
            "lord, I am you,\n[Enter the lord, I am you,\n[Enter the lord, I",
            " the lord,\n[Enter the lord, I am you,\n[Enter the lord, I am you,\n"
            "[Enter the lord, I am you,\n[Enter the lord, I am you,\n[Enter the "
            "lord",
            " I am I am I am I have,\n[Enter the lord, I am you,\n[Enter the lord, "
            "I am you,\n[Enter the lord, I am you,\n[Enter the lord, I am you",
        ],
        [
            " C name, this have both the honey your sword;\nPOMPEY: No is a her "
            "than let; and thy head.\nThat thee's good back, O, anAside]\nUSometay, "
            "he good you to both't",
            " kings of his slaughter.\nThou you the very soul'd my Lancaster.\n"
            "This best, that be they I never.\n[Exeunt upon our princess, my train:\n"
            "would my way, for ye SCENE here;\nIn left",
            " What have tell you what, I am have, nor go,\nShould seek by an cright, "
            "my brother, thou I am to not thePaable,\nYet have all your vil of "
            "the impFEU\nCan in",
        ],
    ),
}
