"""IFEval checkers against the official examples (google-research instruction_following_eval,
instructions_test.py: the responses, arguments and expected verdicts are transcribed here), plus
the strict/loose protocol and the subset aggregate on hand-computed cases."""

from __future__ import annotations

import pytest

from lsl_core.errors import MetricInputError
from lsl_core.scoring.evaluator import ScoreItem
from lsl_core.scoring.ifeval import aggregate_ifeval, follow_instructions, loose_variants, score_ifeval
from lsl_core.scoring.ifeval.checkers import INSTRUCTIONS, check_instruction
from lsl_core.scoring.ifeval.text import count_sentences, count_words


def ok(iid: str, response: str, **kwargs) -> bool:
    return check_instruction(iid, response, kwargs)


# ------------------------------------------------------------------ the official examples
def test_response_language():
    assert ok("language:response_language", "The response is English", language="en")
    assert ok("language:response_language", "Desayunamos en McDonald's hoy", language="es")
    assert ok("language:response_language", "Today we visit the Louvre", language="en")
    assert not ok("language:response_language", "The response is English", language="es")


@pytest.mark.parametrize("response, relation, n, expected", [
    ("xx,x. xx,x! xx/x. x{x}x?", "less than", 4, False),
    ("xxxx. xx,x! xxxx. x(x)x?", "less than", 5, True),
    ("xxxx. xx,x! xx|x. x&x x?", "at least", 4, True),
    ("xx-x. xx,x! xx}x. x,xx?", "at least", 5, False),
])
def test_number_sentences(response, relation, n, expected):
    assert ok("length_constraints:number_sentences", response, num_sentences=n, relation=relation) is expected


def test_number_placeholders():
    t1 = ("Sure, here is a short template with 5 placeholders:\n[Name]\n[Email]\n[Phone]\n[Address]\n[Website]\n"
          "This template can be used for a variety of purposes, such ascreating a contact list, sending out "
          "surveys, or creating a sign-up form.")
    assert ok("detectable_content:number_placeholders", t1, num_placeholders=5)
    assert not ok("detectable_content:number_placeholders", "My [adjective] [noun] is [adjective] [noun]. I [verb] "
                  "and [verb].", num_placeholders=7)


BULLETS = [
    ("""
  A Markdown bullet point is a way of formatting text to create a list. To
  create a bullet point, start each line with an asterisk (*). For example:
  * This is a bullet point.
  *(no space required)Another bullet point.
  * (no newline ending required)Another bullet point.
  markdown bullet points are often used to create to-do lists or to list items
  in a step-by-step guide.""", 3),
    ("""
  Check that inline asterisk (*), *, will not be counted. Only * that starts a
  bullet list will be counted:
    * This is a bullet point.
    * Another bullet point.
    . dot is not counted""", 2),
    ("""
  Here are three bullets starting with asterisk:
  * I am a large language model, also known as a conversational AI.
  * I am trained on a massive amount of text data, and I am able to communicate.
  * I am still under development, but I am learning new things every day.""", 3),
    ("""
  Here are three markdown bullets:
  - I am a large language model, also known as a conversational AI.
  - I am trained on a massive amount of text data, and I am able to communicate.
  -I am still under development, but I am learning new things every day.""", 3),
    ("""
  Paragraph 1
  ***
  Paragraph 2
  ***
  Paragraph 3
  * only one bullet point
  """, 1),
]


@pytest.mark.parametrize("response, n", BULLETS)
def test_number_bullet_lists(response, n):
    assert ok("detectable_format:number_bullet_lists", response, num_bullets=n)
    assert not ok("detectable_format:number_bullet_lists", response, num_bullets=n + 1)


def test_constrained_response():
    for r in ("\n My answer is no.\n", "My answer is no.   ",
              "\n  My answer is no. I am still under development and I am always learning and\n  improving."):
        assert ok("detectable_format:constrained_response", r)
    assert not ok("detectable_format:constrained_response", "My answer is probably no.")


def test_number_highlights():
    m1 = """
  To highlight text with Markdown, you can use the * character before and after
  the text you want to highlight. For example, if you want to highlight the
  word `hello`, you would type:*hello*, You can also use the ** character to
  create bold text. For example, if you want to bold the word `hello`, you
  would type: **hello** """
    m2 = """
  Sure, here are the numerical methods for solving partial differential
  equations highlighted with Markdown:
  *Finite difference methods
  *Finite element methods*
  *Boundary element methods
  *Monte Carlo methods
  I hope this helps!"""
    m3 = """
  There is allowed to be *two different* highlighted *sections in the same*
  line. **This is also true** for **double markdown highlights.**
  """
    assert ok("detectable_format:number_highlighted_sections", m1, num_highlights=2)
    assert not ok("detectable_format:number_highlighted_sections", m2, num_highlights=2)
    assert ok("detectable_format:number_highlighted_sections", m3, num_highlights=4)


def test_sections():
    m1 = """
  Your response must have multiple sections. Mark the beginning of each section
  with "Section X", such as:
  Section 1
  [content of section 1]
  Section 2
  [content of section 2]"""
    m2 = """SECTION 1
  [content of section 1]
  SECTION 2
  [content of section 2]"""
    assert not ok("detectable_format:multiple_sections", m1, section_spliter="Section", num_sections=3)
    assert ok("detectable_format:multiple_sections", m2, section_spliter="SECTION", num_sections=2)


def test_paragraphs():
    p1 = "\n  paragraph 1\n  ***\n  paragraph 2\n  ***\n  paragraph 3"
    p2 = "\n          ***\n  paragraph 1\n          ***\n      paragraph 2\n          ***\n      paragraph 3"
    p3 = "\n  paragraph 1\n          ***\n      paragraph 2\n          ***\n      paragraph 3\n          ***"
    p4 = "\n  paragraph 1\n          ***\n      paragraph 2\n          ***\n          ***"
    for p in (p1, p2, p3):
        assert ok("length_constraints:number_paragraphs", p, num_paragraphs=3)
    assert not ok("length_constraints:number_paragraphs", p4, num_paragraphs=2)


def test_postscript():
    m1 = """
  I will do my best to follow your instructions and always start my responses
  with "My response is:". I will try to be as consistent as possible, but
  please be patient with me if I make a mistake. I am still under development,
  and I am always learning new things.

  P.S. I hope this is what you were looking for."""
    m2 = """
  Sure, here is my response with a postscript starting with P.P.S.:

  My response is: I hope this answers your question.

  P.P.S. I am always happy to answer any other questions you may have.

  Do you have any other questions for me?"""
    m3 = """
  The radius of a unit circle is 1. However, I can give you a funny and wrong
  answer: the radius of a unit circle is 0. This is because a unit circle is a
  circle with a radius of 1, and if the radius is 0, then the circle has no
  size and is just a point. (not starting a new line) P.S. I hope you enjoyed
  my joke!"""
    m4 = """
  If the length of a square is one, the area of the square will also be one.
  p.p.s what if the entire response was lower case letters?
  """
    m5 = """
  The mysteries of space and time are mysterious.
  P. S. Sometimes there are even spaces between P. and S..
  """
    pid = "detectable_content:postscript"
    assert ok(pid, m1, postscript_marker="P.S.")
    assert not ok(pid, m1, postscript_marker="PS:")
    assert ok(pid, m2, postscript_marker="P.P.S")
    assert ok(pid, m3, postscript_marker="P.S.")
    assert ok(pid, m4, postscript_marker="P.P.S")
    assert ok(pid, m5, postscript_marker="P.S.")


def test_keywords_existence_and_frequency():
    m1 = """
  Paris is a city of beauty and romance. The romantic river Seine winds its way
  through the city, past iconic landmarks like the Eiffel Tower and the Louvre
  Museum, where the Mona Lisa resides. Whether you're taking a boat cruise down
  the river or simply strolling along the banks, you're sure to be captivated
  by the city's charm."""
    m2 = """
  Paris is a city of beauty, romance, and history. It is home to some of the
  most iconic landmarks in the world, including the Eiffel Tower, the Louvre
  Museum, and the Notre Dame Cathedral. The city is also known for its romantic
  river cruises, its delicious food, and its stylish people.
  """
    kw = ["romantic", "river", "Mona Lisa"]
    assert ok("keywords:existence", m1, keywords=kw) and not ok("keywords:existence", m2, keywords=kw)
    f1, f2 = "\n  keyword, Keyword, KEYWORD\n  ", "\n    *keyword\n    *Keyword\n    *KEYWORD\n  "
    assert ok("keywords:frequency", f1, keyword="  keyword ", frequency=4, relation="less than")
    assert ok("keywords:frequency", f1, keyword="  keyword ", frequency=3, relation="at least")
    assert not ok("keywords:frequency", f2, keyword="KEYWORD", frequency=4, relation="at least")


def test_number_words():
    m1 = "\n  d3sCRi7 lArge lAnguagE M0del w1tH 20 w0RdS."
    m2 = ("\n  L4RGE L4NGU4GE M0DEL: AI syst3m th4t und3rstands, g3n3r4tes, or tr4nsforms\n  l4ngu4g3 b4s3d on "
          "pr3vious l3arning & d4t4.")
    assert count_words(m1) == 7 and count_words(m2) == 16  # counted by hand
    assert ok("length_constraints:number_words", m1, num_words=8, relation="less than")
    assert not ok("length_constraints:number_words", m2, num_words=16, relation="less than")
    assert ok("length_constraints:number_words", m2, num_words=16, relation="at least")


FIRST_WORD = [
    ("\n  paragraph 1\n\n  I paragraph 2\n\n  paragraph 3", 3, 2, "I", True),
    ("\n  paragraph 1\n\n  I paragraph 2", 3, 2, "I", False),
    ("\n  paragraph 1\n\n  fail paragraph 2\n\n  paragraph 3", 3, 2, "I", False),
    ("\n  Wow this is a very long response.\n\n  I can't believe there is more than three paragraphs.\n\n"
     "  Really more than three? No way!\n\n  I can't believe it but I guess I am living proof.\n\n"
     "  Haha, you go that right.", 5, 5, "haha", True),
    ("\n  Wow this is a very long response.\n\n  I can't believe there is more than three paragraphs.\n\n"
     "  \"Really?! more than three? No way!\"\n\n  I can't believe it but I guess I am living proof.\n\n"
     "  Haha, you go that right.", 5, 3, "Really", True),
    ("\n  Wow this is a very long response.\n\n  I can't believe there is more than three paragraphs.\n\n"
     "  Rea!lly more than three? No way!\n\n  I can't believe it but I guess I am living proof.\n\n"
     "  Haha, you go that right.", 5, 3, "Really", False),
]


@pytest.mark.parametrize("response, n, nth, word, expected", FIRST_WORD)
def test_nth_paragraph_first_word(response, n, nth, word, expected):
    assert ok("length_constraints:nth_paragraph_first_word", response, num_paragraphs=n, nth_paragraph=nth,
              first_word=word) is expected


def test_forbidden_words():
    m1 = """
  The Nazis came to power in 1933 through a combination of legal and illegal
  means. Hitler was appointed chancellor by President Paul von Hindenburg, and
  the Nazis quickly consolidated their power by passing a series of laws that
  restricted the rights of opposition parties and individuals. By 1934, Hitler
  had become dictator of Germany.
  """
    m2 = """
  Dinosaurs were a diverse group of reptiles that dominated the Earth for over
  160 million years. They came in all shapes and sizes, from the tiny
  Compsognathus to the massive Argentinosaurus. Dinosaurs were the most
  successful land animals on Earth until they went extinct about 66 million
  years ago. The exact cause of their extinction is still unknown, but it
  is thought to have been a combination of factors, including an asteroid
  impact and climate change.
  """
    m3 = """
  GPT, or Generative Pre-trained Transformer, is a family of neural network
  models that uses the transformer architecture. GPT models are trained on a
  massive dataset of text and code, and can be used for a variety of tasks,
  including text generation, translation, and question answering. GPT models
  have been shown to be very effective at these tasks, and are being used by
  a variety of companies and organizations like Google.
  """
    fw = "keywords:forbidden_words"
    w1, w2, w3 = ["HOUSE", "POWER", "BECOME"], ["GOOGLE", "TEXT"], ["GENE", "TRANSFORM"]
    assert (ok(fw, m1, forbidden_words=w1), ok(fw, m2, forbidden_words=w1), ok(fw, m3, forbidden_words=w1)) == \
        (False, True, True)
    assert (ok(fw, m1, forbidden_words=w2), ok(fw, m2, forbidden_words=w2), ok(fw, m3, forbidden_words=w2)) == \
        (True, True, False)
    assert ok(fw, m3, forbidden_words=w3)  # whole words only: "generation", "transformer" are fine


def test_two_responses():
    cases = [("\n  This is response 1.\n  ******\n  This is response 2.\n  ", True),
             ("\n  This is response 1.\n  ******\n  This is response 1.\n  ", False),
             ("\n  This is response 1.\n  ******\n  This is response 2.\n  ******\n  This is response 3.\n  ", False),
             ("\n  ******\n  Response 1.\n  ******\n  ******\n  Response 2.\n  ******\n  ", False),
             ("\n  ******\n  Response 1\n  ******\n  Response 2\n  ******\n  ", True)]
    for r, expected in cases:
        assert ok("combination:two_responses", r) is expected


def test_repeat_prompt_end_title_letters_case_comma_capitals_quotes():
    rp = "combination:repeat_prompt"
    assert ok(rp, "Write a CL description. Hi, Le and TJ, please\n  check this out. Thanks.\n  ",
              prompt_to_repeat="Write a CL description.")
    assert not ok(rp, "Hi, Le and TJ. Write a CL description. Thanks.\n  ", prompt_to_repeat="Write a CL description.")
    end = "startend:end_checker"
    assert ok(end, "\n  The answer is 7. Any more questions?\n  ", end_phrase="\n  Any more questions?\n  ")
    assert ok(end, "\n  At the end of this prompt I am required to say that this is the end.\n  ",
              end_phrase="\n  This is the end.\n  ")
    assert not ok(end, "\n  This will fail. Paris is cool.\n  ", end_phrase="\n  This will fail.\n  ")
    title = "detectable_format:title"
    assert ok(title, "\n  <<Song of Joy>>\n  La la la. Happy song.\n  ")
    assert ok(title, "\n  Is it fine for title to be at the end?\n  <<This is the title>>\n  ")
    assert not ok(title, "\n  << >>\n  There is no title.\n  ")
    assert not ok(title, "\n  <<This is not a title.\n  This is a paragraph.>>\n  ")
    lf = "keywords:letter_frequency"
    assert ok(lf, "\n  There is the T. Four T's.\n  ", letter="T", let_frequency=4, let_relation="at least")
    assert ok(lf, "\n  asdfghjkl!!aA\n  ", letter="a", let_frequency=4, let_relation="less than")
    assert not ok(lf, "\n  asdfghjkl!!aA\n  ", letter="p", let_frequency=4, let_relation="at least")
    assert ok("change_case:english_capital",
              "\n  THIS IS AN ENGLISH SENTENCE. EVERY LETTER IS CAPITALIZED!!! AMAZING.\n  ")
    assert not ok("change_case:english_capital", "\n  Every Word Is Capitalized.\n  ")
    assert ok("change_case:english_lowercase", "\n  every letter is lowercase.\n  ")
    assert not ok("change_case:english_lowercase", "\n  Almost every letter is lowercase.\n  ")
    assert ok("punctuation:no_comma", "\n  Every sentence is short. There is no need for a comma.\n  ")
    assert not ok("punctuation:no_comma", "\n  Since the start of time, people have always found a way to punctuate.\n  ")
    cw = "change_case:capital_word_frequency"
    assert ok(cw, "\n  HERE there are THREE FUlly CAPITAL words.\n  ", capital_frequency=3, capital_relation="at least")
    m2 = "\n  THERE are Four FULLY CAPITAL WORDS. Many Others Are Only Partially So.\n  "
    assert ok(cw, m2, capital_frequency=5, capital_relation="less than")
    assert not ok(cw, m2, capital_frequency=4, capital_relation="less than")
    q = "startend:quotation"
    assert ok(q, '\n  "This entire message is wrapped in double quotation marks."\n  ')
    assert not ok(q, '\n  "This message is wrapped in double quotation marks." But not everything.\n  ')


def test_json_format():
    assert ok("detectable_format:json_format", '```json\n{"a": 1}\n```')
    assert ok("detectable_format:json_format", ' {"answer": [1, 2]} ')
    assert not ok("detectable_format:json_format", 'Here it is: {"a": 1}')


def test_registry_covers_voicebench_instruction_ids():
    # the 25 instruction ids the official registry enables
    assert len(INSTRUCTIONS) == 25
    assert {i.split(":")[0] for i in INSTRUCTIONS} == {"keywords", "language", "length_constraints",
                                                      "detectable_content", "detectable_format", "combination",
                                                      "startend", "change_case", "punctuation"}


def test_bad_arguments_name_the_instruction():
    with pytest.raises(MetricInputError, match="number_words.*needs kwargs num_words"):
        ok("length_constraints:number_words", "a b c", relation="at least")
    with pytest.raises(MetricInputError, match="relation must be one of"):
        ok("length_constraints:number_words", "a b c", num_words=2, relation="at most")
    with pytest.raises(MetricInputError, match="Unknown IFEval instruction id 'nope'"):
        ok("nope", "x")


@pytest.mark.parametrize("meta, message", [
    ({"instruction_id_list": ["punctuation:no_comma"], "kwargs": ["{}"]}, "kwargs entry 1 is not an object"),
    ({"instruction_id_list": ["length_constraints:number_words"],
      "kwargs": [{"num_words": "many", "relation": "at least"}]}, "num_words must be a whole number"),
    ({"instruction_id_list": ["length_constraints:number_words"],
      "kwargs": [{"num_words": 2.5, "relation": "at least"}]}, "num_words must be a whole number"),
    ({"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": "rain"}]},
     "keywords must be a list of strings"),
    ({"instruction_id_list": "punctuation:no_comma", "kwargs": [{}]}, "instruction_id_list must be a list"),
    ({"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 3, "relation": "most"}]},
     "relation must be one of"),
])
def test_malformed_kwargs_are_one_clear_error(meta, message):
    """Malformed rows raise MetricInputError (the run reports the row and scores the rest), never a
    ValueError from deep inside a checker, and never for some answers only (an empty one included)."""
    for answer in ("hello there my friend", ""):
        with pytest.raises(MetricInputError, match=message):
            score_ifeval(answer, ScoreItem(prompt="p", meta=meta))


def test_whole_number_kwargs_may_be_floats_or_digit_strings():
    # parquet/pandas round trips turn ints into 3.0; JSON exports may hold "3"
    for n in (3, 3.0, "3"):
        item = ScoreItem(prompt="p", meta={"instruction_id_list": ["length_constraints:number_words"],
                                           "kwargs": [{"num_words": n, "relation": "at least"}]})
        assert score_ifeval("one two three", item)["strict_prompt"] == 1.0


# ------------------------------------------------------------------ strict vs loose, per answer and per subset
def test_empty_response_follows_nothing():
    assert not ok("punctuation:no_comma", "   ")


def test_loose_variants_forgive_a_preamble_and_markdown():
    r = "Sure, here it is:\nrain falls softly\n*Hope this helps, friend!*"
    assert loose_variants(r)[3] == "rain falls softly"
    pairs = [("punctuation:no_comma", {})]
    assert follow_instructions(r, pairs) == [False]  # strict: the commas of the first and last line count
    assert follow_instructions(r, pairs, loose=True) == [True]  # loose: without first and last line
    # quotation marks wrapped in "*": only the loose variant without "*" is quoted
    q = [("startend:quotation", {})]
    assert follow_instructions('*"All of it."*', q) == [False]
    assert follow_instructions('*"All of it."*', q, loose=True) == [True]


def test_score_and_aggregate_by_hand():
    item = ScoreItem(prompt="p", meta={"instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
                                       "kwargs": [{"num_words": None}, {"end_phrase": "Bye."}]})
    a = score_ifeval("Hello there. Bye.", item)  # both followed
    b = score_ifeval("Hello, there. Bye.", item)  # comma: 1 of 2 strictly
    c = score_ifeval("Hi, all\nok\n*Bye.*", item)  # strict 0 of 2; loose: without first line and "*" -> 2 of 2
    assert (a["strict_prompt"], a["strict_followed"], a["loose_prompt"], a["loose_followed"]) == (1.0, 2, 1.0, 2)
    assert (b["strict_prompt"], b["strict_followed"], b["loose_prompt"], b["loose_followed"]) == (0.0, 1, 0.0, 1)
    assert (c["strict_prompt"], c["strict_followed"], c["loose_prompt"], c["loose_followed"]) == (0.0, 0, 1.0, 2)
    assert b["strict_failed"] == "punctuation:no_comma"
    agg = aggregate_ifeval([a, b, c])
    # strict prompt 1/3, strict instruction 3/6, loose prompt 2/3, loose instruction 5/6; final = their mean
    assert agg["strict_prompt"] == pytest.approx(100 / 3) and agg["strict_instruction"] == pytest.approx(50.0)
    assert agg["loose_prompt"] == pytest.approx(200 / 3) and agg["loose_instruction"] == pytest.approx(500 / 6)
    assert agg["final"] == pytest.approx((100 / 3 + 50 + 200 / 3 + 500 / 6) / 4)


def test_sentence_counter_on_prose():
    assert count_sentences("Mr. Smith went to Washington. He said \"hi.\" Then he left!") == 3
    assert count_sentences("Pi is 3.14 roughly. The U.S. is big. Visit example.com today.") == 3
    assert count_sentences("John F. Kennedy spoke. Really?! Yes...") == 3
