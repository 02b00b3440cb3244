r"""SPARK's prompt bank: the judge and reflection prompts that recycled rollouts are turned into.

SPARK (Liu et al., "SPARK: Synergistic Policy And Reward Co-Evolving Framework", arXiv 2509.22624)
turns each RL step's rollouts and their 0/1 verifier scores into new, verifiable prompts for the same
model. The bank keeps the structure and label semantics of the authors' released templates
(InternLM/Spark ``prompt_templates.py``, ``prompt_templates_double.py``; docs/methods.md, "SPARK"); the
wording is our own.

    family                  count  fields                          label
    POINTWISE_YESNO           12   question, answer                "Yes" / "No"
    POINTWISE_AB              12   question, answer                "A" (correct) / "B" (incorrect)
    PAIRWISE                  20   question, answer_a, answer_b    "A" / "B": where the correct one is
    REFLECT_COT_NEUTRAL       20   question, cot                   (the original ground truth)
    REFLECT_COT_WRONG         10   question, cot                   (the original ground truth)
    REFLECT_ANS_NEUTRAL       20   question, answer                (the original ground truth)
    REFLECT_ANS_WRONG         10   question, answer                (the original ground truth)

Every template is a :meth:`str.format` string (literal braces doubled). The layouts:

    pointwise:  <instruction>\n\n<Question>:\n{question}\n\n<Answer>:\n{answer}\n\n<Judgement>:
    pairwise:   <instruction>\n\n<Question>:\n{question}\n\n(A) {answer_a}\n(B) {answer_b}\n\n<Judgement>:
    reflection: <instruction>\n\nQuestion:\n{question}\n\n<label>:\n{cot or answer}\n\n<SOLVE_SUFFIX>

Judge templates ask for the verdict inside ``\boxed{}``. The reference asks for ``\box{}`` while its
verifier parses only ``\boxed{`` (spec section 1.5); we ask for what we parse. The ``spark_judge``
reward (:mod:`rewards.spark`) scores the answers.

The builders (:func:`pointwise`, :func:`pairwise`, :func:`reflection`) are pure: the template and, for
pairwise prompts, the order of the two answers come from the ``random.Random`` passed in, so a
seeded generator gives the same prompts on every process.

    >>> import random
    >>> text, label = pointwise("What is 2 + 2?", "4", correct=True, rng=random.Random(0))
    >>> label in ("Yes", "A"), text.endswith("<Answer>:\n4\n\n<Judgement>:")
    (True, True)
"""

from __future__ import annotations

import random

SOLVE_SUFFIX = (
    r"Reason through the problem step by step first, then give your final answer and repeat it "
    r"inside \boxed{}."
)
"""Our wording of SPARK's answer-format instruction (plain text, not a format string)."""

_POINTWISE_TAIL = "\n\n<Question>:\n{question}\n\n<Answer>:\n{answer}\n\n<Judgement>:"
_PAIRWISE_TAIL = "\n\n<Question>:\n{question}\n\n(A) {answer_a}\n(B) {answer_b}\n\n<Judgement>:"


def _escape(text: str) -> str:
    """Double the braces of plain text so that it survives :meth:`str.format` unchanged."""
    return text.replace("{", "{{").replace("}", "}}")


def _judge(instructions: list[str], tail: str) -> tuple[str, ...]:
    return tuple(_escape(instruction) + tail for instruction in instructions)


def _reflect(pairs: list[tuple[str, str]], field: str) -> tuple[str, ...]:
    """``(instruction, label)`` pairs -> templates showing ``{field}`` under ``label``."""
    return tuple(
        f"{_escape(instruction)}\n\nQuestion:\n{{question}}\n\n{_escape(label)}:\n{{{field}}}\n\n"
        + _escape(SOLVE_SUFFIX)
        for instruction, label in pairs
    )


# --------------------------------------------------------------------------------------------------
# Pointwise judges: is this one answer correct?
# --------------------------------------------------------------------------------------------------

POINTWISE_YESNO: tuple[str, ...] = _judge(
    [
        # [0] is the canonical judge, also used at test time (JUDGE_TEMPLATE).
        r"You are an expert at assessing answers. Given a question and a proposed answer, think carefully "
        r"about whether the answer is correct, then reply 'Yes' if it is correct or 'No' if it is not. "
        r"Repeat your verdict inside \boxed{}, that is \boxed{Yes} or \boxed{No}.",
        r"Check the answer below against the question. Work out whether it is right, and finish with "
        r"\boxed{Yes} if it is correct or \boxed{No} if it is wrong.",
        r"Act as a careful grader. Solve the question yourself if you need to, compare your result with "
        r"the given answer, and state whether the given answer is correct. Write your final verdict as "
        r"\boxed{Yes} (correct) or \boxed{No} (incorrect).",
        r"Is the following answer to the question correct? Explain your reasoning briefly, then put Yes "
        r"or No inside \boxed{}.",
        r"Your task is verification. Read the question, examine the proposed answer and decide whether it "
        r"is the correct one. Answer Yes or No, and give that word again in \boxed{}, e.g. \boxed{No}.",
        r"You are reviewing a student's final answer. Determine whether the student got the question "
        r"right. End your response with \boxed{Yes} if the answer is correct, otherwise \boxed{No}.",
        r"Below are a question and a candidate answer. Think step by step about whether the candidate "
        r"answer is correct. Conclude with a single word, Yes or No, written inside \boxed{}.",
        r"As a meticulous fact-checker, verify the answer given for this question. Respond Yes if it is "
        r"correct and No if it is incorrect, and place your response in \boxed{}.",
        r"Decide whether the answer provided solves the question correctly. Reason about it first, then "
        r"output your decision as \boxed{Yes} or \boxed{No}.",
        r"Evaluate the correctness of the answer to the question below. Your verdict must be either Yes "
        r"(the answer is correct) or No (the answer is incorrect), and it must appear inside \boxed{} at "
        r"the end.",
        r"You are a strict examiner. Does the given answer correctly answer the question? Justify your "
        r"decision, then state it in \boxed{} as Yes or No.",
        r"Here is a question followed by someone's answer. Determine the right result independently and "
        r"say whether their answer matches it. Finish with \boxed{Yes} for a correct answer or "
        r"\boxed{No} for an incorrect one.",
    ],
    _POINTWISE_TAIL,
)

POINTWISE_AB: tuple[str, ...] = _judge(
    [
        r"You are grading an answer to the question below. Choose one grade: A: Correct, B: Incorrect. "
        r"Reason about the answer first, then give the letter of your grade inside \boxed{}, e.g. "
        r"\boxed{A}.",
        r"Assess the answer below and classify it as (A) correct or (B) incorrect. Show your reasoning, "
        r"then write \boxed{A} or \boxed{B}.",
        "As an impartial evaluator, judge the proposed answer to this question. Options:\n"
        "A: the answer is correct\nB: the answer is incorrect\n"
        r"Put the letter of the option you choose in \boxed{}.",
        r"Determine whether the answer provided for the question is right. Reply A if it is right and B "
        r"if it is wrong, and repeat that letter inside \boxed{}.",
        r"You are an experienced teacher marking homework. Mark the answer below as A (correct) or B "
        r"(incorrect). Explain briefly, and end with your mark in \boxed{}.",
        r"Grade the following answer. Grades: A = Correct, B = Incorrect. After analysing the question "
        r"and the answer, output the grade as \boxed{A} or \boxed{B}.",
        r"Read the question and the given answer, then pick the option that describes the answer. "
        r"(A) It is correct. (B) It is incorrect. Write only the letter of your choice inside \boxed{}.",
        r"Verify the answer to the question below step by step. If you find it correct your verdict is "
        r"A; if you find it incorrect your verdict is B. State the verdict in \boxed{}.",
        r"Classify the answer: A means it correctly answers the question, B means it does not. Think it "
        r"through, and conclude with \boxed{A} or \boxed{B}.",
        r"You are a quality checker for solutions. Compare the answer with what the question asks and "
        r"label it A (correct) or B (incorrect). Give the label as \boxed{A} or \boxed{B}.",
        r"Which statement holds for the answer below? A: it is a correct answer to the question. B: it is "
        r"an incorrect answer to the question. Reason first, then box the letter, e.g. \boxed{B}.",
        r"Please rate the correctness of the answer given for the question, using A for correct and B "
        r"for incorrect. Write your reasoning, then the single letter inside \boxed{}.",
    ],
    _POINTWISE_TAIL,
)

# --------------------------------------------------------------------------------------------------
# Pairwise judges: which of two answers, one right and one wrong, is correct?
# --------------------------------------------------------------------------------------------------

PAIRWISE: tuple[str, ...] = _judge(
    [
        r"Below are a question and two answers, (A) and (B), which may differ in correctness. Analyse "
        r"both answers, decide which one is correct, and give its letter inside \boxed{}, i.e. "
        r"\boxed{A} or \boxed{B}.",
        r"Two candidate answers are given for the question that follows. Exactly one of them is correct. "
        r"Work out which, and finish with \boxed{A} or \boxed{B}.",
        r"You are a judge comparing two responses to the same question. Examine answer (A) and answer "
        r"(B), determine which one is right, and put your choice in \boxed{}.",
        r"Which of the two answers below, (A) or (B), correctly answers the question? Reason step by step, "
        r"then write the letter of the correct answer in \boxed{}.",
        r"Compare the answers (A) and (B) to the question. One of them is correct and the other is not. "
        r"Identify the correct one and state it as \boxed{A} or \boxed{B}.",
        r"As an expert evaluator, read the question and both proposed answers. Decide which answer is "
        r"correct and report its letter, A or B, inside \boxed{}.",
        r"Solve the question yourself, then check which of the two answers, (A) or (B), agrees with the "
        r"correct result. Give that letter in \boxed{}.",
        r"Here are a question and two different answers. Select the correct answer: justify your choice "
        r"briefly, then output \boxed{A} or \boxed{B}.",
        r"Pick the better answer to the question: one of the two answers is correct and one is wrong. "
        r"Conclude with the letter of the correct answer, \boxed{A} or \boxed{B}.",
        r"You must choose between two answers to the question below. Analyse each one for correctness "
        r"and select the correct answer. Your final output should be \boxed{A} or \boxed{B}.",
        r"Two students answered the question below. Determine which student, (A) or (B), gave the correct "
        r"answer, and write that letter in \boxed{}.",
        r"Evaluate both answers to the question. Which one is correct? Think it through and put A or B "
        r"inside \boxed{}.",
        r"Given the question, judge answers (A) and (B). They need not be equally correct: decide which "
        r"is correct and write your decision as \boxed{A} or \boxed{B}.",
        r"You are a careful reviewer. Check answer (A) and answer (B) against the question, and identify "
        r"the correct one. End your response with its letter inside \boxed{}.",
        r"Read the question and the two options, A and B. Decide which option is the correct answer. Give "
        r"your reasoning first, then the letter in \boxed{}, for example \boxed{A}.",
        r"The question below has two candidate answers. Find the correct candidate by reasoning about "
        r"the problem, and give its label, A or B, inside \boxed{}.",
        r"Acting as a referee, decide which of the two submitted answers to the question is correct. "
        r"Announce the winner as \boxed{A} or \boxed{B}.",
        r"Consider the question and the answers labelled (A) and (B). Only one of them is correct. Find "
        r"it and put the corresponding letter inside \boxed{}.",
        r"Determine which answer, (A) or (B), correctly solves the question. Explain your comparison, and "
        r"write the final choice inside \boxed{}.",
        r"Judge two answers to one question: analyse whether each is correct, choose the one that is, and "
        r"box its letter as \boxed{A} or \boxed{B}.",
    ],
    _PAIRWISE_TAIL,
)

# --------------------------------------------------------------------------------------------------
# Reflection: re-solve after seeing a (wrong) attempt; scored against the original ground truth
# --------------------------------------------------------------------------------------------------

REFLECT_COT_NEUTRAL: tuple[str, ...] = _reflect(
    [
        (
            "Below are a question and a line of reasoning that attempts to solve it. Check whether the "
            "reasoning and its final answer are correct. If they are, summarise the reasoning and restate "
            "the answer; if not, write out the correct reasoning and answer.",
            "Provided reasoning",
        ),
        (
            "Review the following solution attempt. Decide whether its steps and final answer are right. "
            "If it is correct, keep it and restate the answer; otherwise fix the mistakes and solve the "
            "question properly.",
            "Previous attempt",
        ),
        (
            "You are given a question and a candidate chain of reasoning. Verify each step. When "
            "everything holds, give a short summary and repeat the final answer; when something is "
            "wrong, produce a corrected solution.",
            "Candidate reasoning",
        ),
        (
            "Someone has tried to solve the question below. Examine their work: if both the reasoning and "
            "the answer are correct, confirm them and repeat the answer; if there is an error, explain it "
            "and give the correct solution.",
            "Their work",
        ),
        (
            "Read the question and the reasoning that follows it. Judge whether the reasoning reaches the "
            "correct answer. If it does, condense it and state the answer again. If it does not, solve "
            "the problem correctly.",
            "Reasoning",
        ),
        (
            "As a careful reviewer, assess the solution below. A correct solution should be summarised "
            "with its answer repeated; an incorrect one should be replaced by a correct derivation and "
            "answer.",
            "Solution to review",
        ),
        (
            "Check the following worked solution. Is the logic sound and the final answer right? If so, "
            "recap the key steps and repeat the answer. If not, point out where it goes wrong and give "
            "the right answer.",
            "Worked solution",
        ),
        (
            "Here is a question together with an earlier attempt at it, which may or may not be correct. "
            "Decide which. Confirm a correct attempt by summarising it and restating its answer; correct "
            "a wrong one by solving the question again.",
            "Earlier attempt",
        ),
        (
            "Evaluate the reasoning below and determine whether it solves the question correctly. If it "
            "does, give a brief summary and repeat the final answer; if it contains mistakes, provide the "
            "correct reasoning and final answer.",
            "Reasoning to evaluate",
        ),
        (
            "A draft solution to the question is shown below. Verify the draft: if it is right, restate "
            "its conclusion; if it is wrong, write a corrected solution that reaches the right answer.",
            "Draft solution",
        ),
        (
            "You are a tutor going over a student's reasoning. Decide whether the student's steps and "
            "answer are correct. Summarise correct work and repeat its answer; otherwise show the correct "
            "method and answer.",
            "Student's reasoning",
        ),
        (
            "Inspect the proposed reasoning for the question below. If every step is valid and the answer "
            "is right, summarise it and give the same answer. If any step is flawed, redo the solution "
            "correctly.",
            "Proposed reasoning",
        ),
        (
            "Given the question and a possible solution path, determine whether the path leads to the "
            "correct answer. After a short summary, repeat the answer if it is correct; otherwise work "
            "out the correct answer yourself.",
            "Solution path",
        ),
        (
            "Double-check the reasoning below. If you agree with it, briefly restate the argument and its "
            "final answer. If you disagree, explain why and provide the correct reasoning and answer.",
            "Reasoning to check",
        ),
        (
            "Look at the question and the attempted solution. First decide whether the attempt is "
            "correct. Then either summarise it and restate its answer (correct) or give a new, correct "
            "solution (incorrect).",
            "Attempted solution",
        ),
        (
            "Below is a chain of thought written for the question. Assess whether it is correct. A correct "
            "chain of thought should be summarised and its answer repeated; an incorrect one should be "
            "corrected, ending with the right answer.",
            "Chain of thought",
        ),
        (
            "Critically examine the given solution. Decide whether its reasoning and answer are correct. "
            "If so, restate the answer with a brief justification; if not, solve the question correctly, "
            "from the faulty step or from the start.",
            "Given solution",
        ),
        (
            "Your job is to audit a solution. Read the question and the solution, then judge whether the "
            "solution is correct. Summarise it and repeat the answer if it is; provide the correct "
            "reasoning and answer if it is not.",
            "Solution under audit",
        ),
        (
            "The reasoning below may or may not hold up. Verify it against the question. Keep its answer, "
            "summarising why, if the reasoning is sound; otherwise produce correct reasoning and the "
            "correct answer.",
            "Reasoning supplied",
        ),
        (
            "Reflect on the following attempt at the question. Is it correct? If it is, summarise the "
            "steps and state the answer again; if it is not, identify the error and solve the question "
            "correctly.",
            "Attempt",
        ),
    ],
    "cot",
)

REFLECT_COT_WRONG: tuple[str, ...] = _reflect(
    [
        (
            "Below are a question and an incorrect line of reasoning. Do not rely on the incorrect "
            "reasoning: disregard it and solve the question again from scratch.",
            "Incorrect reasoning",
        ),
        (
            "The reasoning shown below for this question is wrong. Set it aside entirely and work out the "
            "correct solution on your own.",
            "Wrong reasoning",
        ),
        (
            "Here is a flawed attempt at the question. Ignore the flawed attempt and solve the problem "
            "afresh, starting from the beginning.",
            "Flawed reasoning",
        ),
        (
            "The following solution contains errors and reaches a wrong result. Do not build on it: solve "
            "the question independently from first principles.",
            "Erroneous solution",
        ),
        (
            "You are shown a question and a mistaken solution. Discard the mistaken solution and write a "
            "new, correct solution to the question.",
            "Mistaken solution",
        ),
        (
            "This reasoning for the question below is known to be incorrect. Ignore it and produce a "
            "fresh, correct solution.",
            "Incorrect solution",
        ),
        (
            "A previous attempt at the question went wrong. Without following any of its steps, solve the "
            "question again from scratch.",
            "Failed attempt",
        ),
        (
            "The chain of thought below leads to a wrong answer. Do not copy or continue it; solve the "
            "question anew and reach the correct answer.",
            "Wrong chain of thought",
        ),
        (
            "Below is an incorrect solution to the question. Treat it as unreliable, ignore it, and solve "
            "the question yourself from the start.",
            "Unreliable solution",
        ),
        (
            "The reasoning provided is wrong. Start over: ignore what it says and solve the question "
            "correctly.",
            "Rejected reasoning",
        ),
    ],
    "cot",
)

REFLECT_ANS_NEUTRAL: tuple[str, ...] = _reflect(
    [
        (
            "Below are a question and an answer to it. Decide whether the answer is correct. If it is, "
            "explain why and repeat it; if it is not, solve the question and give the correct answer.",
            "Answer",
        ),
        (
            "Check the proposed answer to the question. Confirm it with supporting reasoning if it is "
            "right; otherwise work out the correct answer.",
            "Proposed answer",
        ),
        (
            "You are given a question and a candidate answer that may be right or wrong. Verify it. Keep "
            "a correct answer and restate it; replace a wrong answer with the correct one, showing your "
            "reasoning.",
            "Candidate answer",
        ),
        (
            "Someone answered the question below. Determine whether their answer is correct. If so, "
            "justify it and repeat it; if not, solve the problem and give the right answer.",
            "Their answer",
        ),
        (
            "Examine the answer given for this question. Solve the question to check it, then either "
            "confirm the given answer or provide the correct one.",
            "Given answer",
        ),
        (
            "As a reviewer, assess whether the final answer below is correct. Restate it with a short "
            "justification if it is; otherwise derive and give the correct answer.",
            "Final answer to review",
        ),
        (
            "Here are a question and a previously submitted answer. Decide whether the answer holds up. "
            "Confirm it if it does; correct it with full reasoning if it does not.",
            "Submitted answer",
        ),
        (
            "Verify the answer to the question below. If your own solution agrees with it, state the "
            "answer again; if it disagrees, present your solution and the correct answer.",
            "Answer to verify",
        ),
        (
            "Read the question and the suggested answer. Is the suggested answer correct? Support it and "
            "repeat it if so; otherwise solve the question and state the correct answer.",
            "Suggested answer",
        ),
        (
            "A student gave the answer below. As their tutor, decide whether it is correct. Repeat a "
            "correct answer with an explanation; for an incorrect answer, show the correct solution.",
            "Student's answer",
        ),
        (
            "Assess the following answer. Reason about the question, then either endorse the answer and "
            "repeat it, or reject it and give the correct answer.",
            "Answer under assessment",
        ),
        (
            "Given a question and an answer whose correctness is unknown, check the answer. If it is "
            "correct, restate it; if it is incorrect, solve the question properly and give the right "
            "answer.",
            "Unverified answer",
        ),
        (
            "Double-check the answer provided for the question. Keep it and explain why if it is right; "
            "otherwise find the correct answer.",
            "Provided answer",
        ),
        (
            "The question below comes with an answer from an earlier attempt. Decide whether that answer "
            "is correct, and either confirm it or replace it with the correct answer.",
            "Earlier answer",
        ),
        (
            "Evaluate whether the answer below correctly answers the question, giving your reasoning. If "
            "the answer is correct, repeat it; if not, provide the correct answer.",
            "Answer to evaluate",
        ),
        (
            "Look at the question and the answer offered for it. First judge whether the answer is right; "
            "then either restate it (right) or solve the question afresh (wrong).",
            "Offered answer",
        ),
        (
            "Audit the answer given for this question. If it survives your check, repeat it with a brief "
            "justification. If it fails, explain the problem and give the correct answer.",
            "Answer under audit",
        ),
        (
            "Below is a question with a tentative answer. Confirm the tentative answer if it is correct, "
            "or work out the correct answer if it is not.",
            "Tentative answer",
        ),
        (
            "Decide whether the reported answer to the question is correct. Explain your check, and finish "
            "with the reported answer if it is correct or with the correct answer otherwise.",
            "Reported answer",
        ),
        (
            "Reflect on the answer shown below. Is it the correct answer to the question? Confirm and "
            "repeat it, or solve the question and give the right one.",
            "Answer shown",
        ),
    ],
    "answer",
)

REFLECT_ANS_WRONG: tuple[str, ...] = _reflect(
    [
        # [0] is the test-time reflection prompt (REFLECT_TEMPLATE).
        (
            "Below are a question and an incorrect answer to it. Do not follow the incorrect answer; "
            "solve the question again on your own.",
            "Incorrect answer",
        ),
        (
            "The answer shown below for this question is wrong. Ignore it and find the correct answer "
            "from scratch.",
            "Wrong answer",
        ),
        (
            "Here are a question and a mistaken answer. Disregard the mistaken answer and solve the "
            "question anew.",
            "Mistaken answer",
        ),
        (
            "The following answer to the question is known to be incorrect. Do not build on it; work out "
            "the correct answer independently.",
            "Known incorrect answer",
        ),
        (
            "A previous attempt gave the answer below, which is wrong. Without relying on it, solve the "
            "question from the start.",
            "Wrong previous answer",
        ),
        (
            "This answer to the question is incorrect. Set it aside and produce your own correct solution.",
            "Incorrect answer given",
        ),
        (
            "You are shown an erroneous answer to the question. Ignore it entirely and solve the question "
            "yourself.",
            "Erroneous answer",
        ),
        (
            "The answer below does not solve the question correctly. Start over from scratch and find the "
            "right answer.",
            "Flawed answer",
        ),
        (
            "Below is a wrong answer to the question. Treat it as unreliable, disregard it, and solve the "
            "question properly.",
            "Unreliable answer",
        ),
        (
            "The answer provided is incorrect. Forget it and solve the question again, reaching the "
            "correct answer.",
            "Rejected answer",
        ),
    ],
    "answer",
)

JUDGE_TEMPLATE = POINTWISE_YESNO[0]
"""The pointwise Yes/No judge used at test time (solve -> judge -> reflect, spec section 1.8)."""

REFLECT_TEMPLATE = REFLECT_ANS_WRONG[0]
"""The reflection prompt used at test time after a "No" verdict: the answer only, flagged as wrong."""

REFLECT_MODES = ("cot", "answer")

# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


POSITIVE_VERDICTS = ("Yes", "A")
"""Pointwise verdicts that call an answer correct (Yes/No templates and A: correct / B: incorrect)."""


def pointwise(question: str, answer: str, correct: bool, rng: random.Random) -> tuple[str, str]:
    """A pointwise judge prompt on ``answer`` and its label, the template drawn uniformly from all 24.

    The label depends on the template's family: Yes/No templates want "Yes" for a correct answer and
    "No" otherwise; A/B templates want "A" (correct) or "B" (incorrect).

    >>> text, label = pointwise("1 + 1?", "3", correct=False, rng=random.Random(1))
    >>> label in ("No", "B")
    True
    """
    index = rng.randrange(len(POINTWISE_YESNO) + len(POINTWISE_AB))
    if index < len(POINTWISE_YESNO):
        template, label = POINTWISE_YESNO[index], "Yes" if correct else "No"
    else:
        template, label = POINTWISE_AB[index - len(POINTWISE_YESNO)], "A" if correct else "B"
    return template.format(question=question, answer=answer), label


def pairwise(question: str, correct_answer: str, wrong_answer: str, rng: random.Random) -> tuple[str, str]:
    """A pairwise judge prompt and its label: the position ("A" or "B") of the correct answer.

    The correct answer goes to (A) or (B) with probability 0.5 each, so the label is balanced.

    >>> text, label = pairwise("1 + 1?", "2", "3", rng=random.Random(0))
    >>> (f"({label}) 2" in text, label in ("A", "B"))
    (True, True)
    """
    template = rng.choice(PAIRWISE)
    if rng.random() < 0.5:
        return template.format(question=question, answer_a=correct_answer, answer_b=wrong_answer), "A"
    return template.format(question=question, answer_a=wrong_answer, answer_b=correct_answer), "B"


def reflection(question: str, wrong_text: str, mode: str, rng: random.Random) -> str:
    """A reflection prompt showing a wrong attempt, the template drawn uniformly from ``mode``'s 30.

    ``mode`` "cot" shows ``wrong_text`` as a full reasoning trace, "answer" as a final answer. The
    prompt has no judge label: its rollouts are scored against the original question's ground truth.

    >>> reflection("1 + 1?", "3", mode="answer", rng=random.Random(0)).count("\\\\boxed{}")
    1
    """
    if mode == "cot":
        template = rng.choice(REFLECT_COT_NEUTRAL + REFLECT_COT_WRONG)
        return template.format(question=question, cot=wrong_text)
    if mode == "answer":
        template = rng.choice(REFLECT_ANS_NEUTRAL + REFLECT_ANS_WRONG)
        return template.format(question=question, answer=wrong_text)
    raise ValueError(f"reflection: `mode` must be one of {list(REFLECT_MODES)}, got {mode!r}.")


def chat(text: str, row: dict, reply_prefix: str | None = None) -> list[dict[str, str]]:
    """A judge or reflection prompt as the policy sees it, in training and at inference alike: the source
    row's system message(s), if any, then ``text`` as one user turn (SPARK's auxiliary prompts are single
    user turns under the same system prompt as the task's own). ``reply_prefix`` (``spark.verdict_prefix``,
    judge prompts only) begins the model's reply as an assistant message it continues (posttrain/chat.py).

    >>> chat("Is 4 right?", {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]})
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Is 4 right?'}]
    """
    prompt = row.get("prompt")
    system = [m for m in prompt if m.get("role") == "system"] if isinstance(prompt, list) else []
    reply = [{"role": "assistant", "content": reply_prefix}] if reply_prefix else []
    return [*system, {"role": "user", "content": text}, *reply]
