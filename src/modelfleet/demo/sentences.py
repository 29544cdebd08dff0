"""The hand-written sentences the demo sentiment head is fitted on: class 0 negative, class 1 positive.

Short, plain and unambiguous, so that a linear head on mean-pooled MiniLM embeddings separates them.
"""

from __future__ import annotations

NEGATIVE: tuple[str, ...] = (
    "This is terrible.",
    "I hate it.",
    "What an awful experience.",
    "The food was cold and tasteless.",
    "I am very disappointed with this product.",
    "It broke after one day.",
    "The service was rude and slow.",
    "Worst movie I have ever seen.",
    "This was a complete waste of money.",
    "I regret buying this.",
    "The room was dirty and smelled bad.",
    "Nothing works as promised.",
    "I feel sad and angry about it.",
    "The support team never answered my emails.",
    "Boring, long and painful to watch.",
    "The battery dies within an hour.",
    "I would never recommend this to anyone.",
    "The instructions were confusing and useless.",
    "Everything about this was a disaster.",
    "The delivery was late and the box was damaged.",
    "It is ugly and cheaply made.",
    "That was a horrible mistake.",
    "The app keeps crashing, so frustrating.",
    "I am unhappy with the result.",
    "A dreadful, miserable day.",
)

POSITIVE: tuple[str, ...] = (
    "This is great.",
    "I love it.",
    "What a wonderful experience.",
    "The food was delicious and fresh.",
    "I am very happy with this product.",
    "It works perfectly every day.",
    "The service was friendly and fast.",
    "Best movie I have ever seen.",
    "This was worth every penny.",
    "I am glad I bought this.",
    "The room was clean and comfortable.",
    "Everything works exactly as promised.",
    "I feel happy and grateful.",
    "The support team solved my problem quickly.",
    "Exciting, funny and beautifully made.",
    "The battery lasts for days.",
    "I would recommend this to everyone.",
    "The instructions were clear and helpful.",
    "Everything about this was a success.",
    "The delivery was early and well packed.",
    "It is elegant and well built.",
    "That was an excellent decision.",
    "The app is smooth and a joy to use.",
    "I am delighted with the result.",
    "A lovely, cheerful day.",
)
