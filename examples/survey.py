"""SURVEYOR/RESPONDENT: ask every respondent, collect answers until the deadline.

Run: python examples/survey.py
"""
import threading

import scaproust as sp

with sp.Session() as session:
    surveyor = session.socket(sp.Surveyor, survey_deadline=0.5)  # seconds
    url = surveyor.bind("tcp://127.0.0.1:0").url
    respondents = [session.socket(sp.Respondent, recv_timeout=2.0) for _ in range(3)]
    for r in respondents:
        r.connect(url)
    while surveyor.stats.get("pipes_opened", 0) < 3:  # all three connected (bounded wait)
        sp.poll({surveyor: sp.POLLOUT}, timeout=0.01)

    def answer(respondent: sp.Socket, name: str) -> None:
        question = respondent.recv()
        respondent.send(f"{name} heard {question.decode()!r}".encode())

    threads = [threading.Thread(target=answer, args=(r, f"respondent {n}"))
               for n, r in enumerate(respondents)]
    for t in threads:
        t.start()
    surveyor.send(b"who is there?")
    answers = []
    try:
        while True:
            answers.append(surveyor.recv().decode())  # until the deadline passes
    except sp.Timeout:
        pass
    for t in threads:
        t.join()
    for line in sorted(answers):
        print(line)
    print(len(answers), "answers")
