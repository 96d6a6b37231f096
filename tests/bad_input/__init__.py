"""The bad-input corpus: malformed and hostile messages, and what must become of each.

``tests.bad_input.corpus.build_corpus()`` is the hand-written corpus; ``strategies`` holds
hypothesis strategies around the contract; ``publish`` puts a case on a real broker with
pika. The fault-injection suite (``make chaos``) imports the corpus and the publisher; the
tests beside them feed it through real workers and a real broker.
"""
